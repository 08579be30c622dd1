"""RunRecord: the typed, versioned record of one finished run.

The runner writes one, importers produce them, and every reader loads stored records
through :func:`load_record`, which upgrades older versions and refuses newer ones. The
store keeps the record as JSON (``RunRecord.to_dict``); figures whose layout belongs to
another module (the memory summary of :mod:`memgap.memory`, the engine report's
``extra``) stay open mappings, everything else is a typed field.

Version history (bump ``RECORD_VERSION`` and list the change here; ``_UPGRADES`` reads
every older version):
  1 -- the dict that runner.build_record wrote, with engine_report, memory, host,
       cgroup_final, percentiles per latency (2026-11).
  2 -- ``spec``: the whole RunSpec that produced the run (memgap.spec), so a stored run
       can be run again (``memgap rerun``); the engine report says which of its memory
       lines it found (``found_any``, ``missing``, ``log_variant``, ``refusal``)
       (2026-12).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memgap.errors import StoreError
from memgap.nested import value_at

RECORD_VERSION = 2


def utc_timestamp() -> str:
    """Now, as every timestamp memgap stores is written: ISO 8601 in UTC, milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class _Open(BaseModel):
    """A section whose keys other modules may extend: unknown keys are kept."""

    model_config = ConfigDict(extra="allow")


class Percentiles(BaseModel):
    model_config = ConfigDict(extra="ignore")

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    n: int | None = None


class EngineFigures(_Open):
    """What the engine said about its own memory (memgap.engines.report.EngineReport)."""

    engine: str | None = None
    model_bytes: int | None = None
    peak_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_blocks: int | None = None
    kv_fraction: float | None = None
    device_total_bytes: int | None = None
    compute_bytes: int | None = None
    kv_caches: list[dict[str, Any]] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    evidence: list[str] = Field(default_factory=list)
    log_variant: str | None = None
    found_any: bool | None = None  # None: a record from before version 2
    missing: list[str] = Field(default_factory=list)
    refusal: str | None = None


class MemoryFigures(_Open):
    """The memory summary of the run's series (memgap.memory.memory_summary)."""

    samples: int | None = None
    rate_hz: float | None = None
    duration_s: float | None = None
    host_total_bytes: int | None = None
    host_used_peak_bytes: int | None = None
    host_cached_peak_bytes: int | None = None
    cgroup_usage_peak_bytes: int | None = None
    process_rss_peak_bytes: int | None = None


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    record_version: int = RECORD_VERSION
    run_id: str
    study_id: str | None = None
    label: str | None = None
    created_at: str
    finished_at: str | None = None
    environment: str
    environment_info: dict[str, Any] = Field(default_factory=dict)
    engine: str
    engine_version: str | None = None
    engine_options: dict[str, Any] = Field(default_factory=dict)
    engine_command: list[str] | None = None
    model: str | None = None
    model_sha256: str | None = None
    model_size_bytes: int | None = None
    status: str
    failure: str | None = None
    failure_log_tail: str | None = None
    ready_s: float | None = None
    engine_exit_status: int | None = None
    workload: dict[str, Any] | None = None
    sampler: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None  # RunSpec.to_dict(); None: imported, or version 1
    requests_ok: int | None = None
    requests_errored: int | None = None
    errors_by_kind: dict[str, int] = Field(default_factory=dict)
    output_tokens: int | None = None
    output_tokens_per_s: float | None = None
    request_throughput_per_s: float | None = None
    workload_duration_s: float | None = None
    token_count_mismatches: int | None = None
    prefix_cache: str | None = None
    prompt_cache_hits: int | None = None
    ttft_s: Percentiles = Percentiles()
    itl_s: Percentiles = Percentiles()
    e2e_s: Percentiles = Percentiles()
    queue_delay_s: Percentiles = Percentiles()
    engine_report: EngineFigures = EngineFigures()
    memory: MemoryFigures = MemoryFigures()
    cgroup_final: dict[str, Any] | None = None
    host: dict[str, Any] = Field(default_factory=dict)
    # imported records: which tool, and its own fields that have no place above
    source: str | None = None
    source_info: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        if self.source is None:  # a run of memgap's own: no importer fields
            d.pop("source")
            d.pop("source_info")
        return d


def _v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d.setdefault("spec", None)
    d["record_version"] = 2
    return d


# version N -> version N + 1
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}
assert sorted(_UPGRADES) == list(range(1, RECORD_VERSION))


def upgrade(d: Mapping[str, Any], *, where: str = "record") -> dict[str, Any]:
    """The record in the current version's layout (still a dict). Raises StoreError for
    a version this memgap does not know."""
    version = d.get("record_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{where}: record_version {version!r} is not a version memgap wrote")
    if version > RECORD_VERSION:
        raise StoreError(f"{where}: record version {version} is newer than this memgap reads "
                         f"({RECORD_VERSION}); upgrade memgap to read it")
    out = dict(d)
    while version < RECORD_VERSION:
        out = _UPGRADES[version](out)
        version += 1
    return out


def load_record(d: Mapping[str, Any], *, where: str = "record") -> RunRecord:
    """A stored or imported record, upgraded and validated."""
    data = upgrade(d, where=where)
    try:
        return RunRecord.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise StoreError(f"{where}: not a valid run record: {loc}: {err['msg']}") from None


def field_reader(path: str) -> Callable[[Mapping[str, Any] | RunRecord], float | None]:
    """A reader of one numeric field by its dotted path in the model. The path is checked
    against RunRecord's fields now, so a misspelt path fails at import, not as None."""
    keys = path.split(".")
    model: type[BaseModel] | None = RunRecord
    for k in keys:
        if model is None or k not in model.model_fields:
            raise AttributeError(f"RunRecord has no field {path!r} (at {k!r})")
        ann = model.model_fields[k].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None

    def read(record: Mapping[str, Any] | RunRecord) -> float | None:
        cur = value_at(record, keys)
        if isinstance(cur, bool) or not isinstance(cur, int | float):
            return None
        return float(cur)

    read.__name__ = f"read_{path.replace('.', '_')}"
    return read
