"""What an engine says about its own memory, read from its log.

One immutable record per engine start. Every figure is ``None`` when the log did not
say it (STYLE.md, convention 2); ``evidence`` keeps the lines the figures came from,
verbatim but for ANSI colour codes, so any number can be traced back and re-derived.

A report also says how complete it is: ``missing`` names the figures the engine's log
format carries (for the variant seen: vLLM on GPU or CPU, TensorRT-LLM's PyTorch or C++
runtime) that this log did not give, and ``found_any`` is False when not one of the
engine's memory lines was there (a wrong engine, a log cut before start-up, or a new
format nobody taught the parser): such a report is a visible miss, never a quiet
success. ``refusal`` keeps the engine's own words when it refused to start because
the memory it wanted was not free."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any


def _no_extra() -> Mapping[str, float | int | str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class KvCacheLine:
    """One llama.cpp ``llama_kv_cache: size = ...`` line.

    ``cells`` is the size of one stream; with ``kv_unified = false`` llama.cpp keeps one
    stream per sequence, so the tokens the cache holds are ``cells * streams``."""

    size_bytes: int
    cells: int
    layers: int
    seqs: int
    streams: int
    k_type: str
    v_type: str
    k_bytes: int
    v_bytes: int

    @property
    def tokens(self) -> int:
        return self.cells * self.streams


@dataclass(frozen=True)
class EngineReport:
    engine: str
    model_bytes: int | None = None
    peak_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_blocks: int | None = None
    kv_fraction: float | None = None
    device_total_bytes: int | None = None
    compute_bytes: int | None = None
    kv_caches: tuple[KvCacheLine, ...] = ()
    extra: Mapping[str, float | int | str] = field(default_factory=_no_extra)
    evidence: tuple[str, ...] = ()
    # Which family of lines the log showed ("gpu", "cpu", "gpu-v0", "pytorch", "cpp");
    # None when none of the engine's memory lines was found.
    log_variant: str | None = None
    found_any: bool = False
    missing: tuple[str, ...] = ()
    refusal: str | None = None

    def is_empty(self) -> bool:
        """True when the log said nothing memgap could read."""
        return not self.evidence

    def figure(self, name: str) -> float | int | str | None:
        """A figure by name: a field of the report, else a key of ``extra``."""
        if name in _FIGURE_FIELDS:
            value: float | int | str | None = getattr(self, name)
            return value
        return self.extra.get(name)

    def with_coverage(
        self, expected: tuple[str, ...], *, variant: str | None = None, found_any: bool | None = None
    ) -> EngineReport:
        """This report with ``missing`` = the ``expected`` figures it lacks.

        ``found_any`` defaults to "the log gave any evidence at all"; parsers whose
        evidence can include non-memory lines (a benchmark's summary) pass their own."""
        return replace(
            self,
            log_variant=variant,
            found_any=bool(self.evidence) if found_any is None else found_any,
            missing=tuple(n for n in expected if self.figure(n) is None),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("kv_caches", "extra", "evidence", "missing")
        }
        d["kv_caches"] = [asdict(k) for k in self.kv_caches]
        d["extra"] = dict(self.extra)
        d["evidence"] = list(self.evidence)
        d["missing"] = list(self.missing)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineReport:
        """Inverse of :meth:`to_dict` (for records read back from the store)."""
        kv = tuple(KvCacheLine(**k) for k in d.get("kv_caches", ()))
        return cls(
            engine=str(d["engine"]),
            model_bytes=d.get("model_bytes"),
            peak_bytes=d.get("peak_bytes"),
            kv_cache_bytes=d.get("kv_cache_bytes"),
            kv_cache_tokens=d.get("kv_cache_tokens"),
            kv_cache_blocks=d.get("kv_cache_blocks"),
            kv_fraction=d.get("kv_fraction"),
            device_total_bytes=d.get("device_total_bytes"),
            compute_bytes=d.get("compute_bytes"),
            kv_caches=kv,
            extra=MappingProxyType(dict(d.get("extra", {}))),
            evidence=tuple(d.get("evidence", ())),
            log_variant=d.get("log_variant"),
            # Records written before these keys existed: evidence was the only sign.
            found_any=bool(d.get("found_any", bool(d.get("evidence")))),
            missing=tuple(d.get("missing", ())),
            refusal=d.get("refusal"),
        )


# The numeric figures that are fields of the report (the rest live in ``extra``).
_FIGURE_FIELDS = frozenset({
    "model_bytes", "peak_bytes", "kv_cache_bytes", "kv_cache_tokens", "kv_cache_blocks",
    "kv_fraction", "device_total_bytes", "compute_bytes",
})
