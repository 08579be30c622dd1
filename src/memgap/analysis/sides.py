"""The two sides of a comparison (pure): each side's runs, their ledgers per mark, the
rows that set one side's median against the other's, category by category, and the
shape of a hypothesis weighed on them.

``explain`` (the hypotheses and the answer) reads only what is here. A difference counts
as material when it is at least ``max(32 MiB, 5 %)`` of the larger side's run total (or
of the engine's KV cache for engine-level-only runs)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memgap.analysis.ledger import CATEGORIES, Ledger, ledger_at, rows_at
from memgap.units import format_bytes

SUPPORTED, CONTRADICTED, NOT_MEASURED = "supported", "contradicted", "not measured"
MIB, GIB = 1024**2, 1024**3
MATERIAL_FLOOR_BYTES = 32 * MIB
MATERIAL_FRACTION = 0.05

ENGINE_FIGURES: tuple[tuple[str, str], ...] = (
    ("kv_cache_bytes", "KV cache"),
    ("peak_bytes", "peak (as the engine reports it)"),
    ("model_bytes", "model weights"),
    ("compute_bytes", "compute/activation buffers"),
    ("device_total_bytes", "device total"),
)


@dataclass(frozen=True)
class RunInput:
    """One stored run as explain needs it: the record and, when stored, its raw series."""

    record: Mapping[str, Any]
    series: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Side:
    label: str  # the selector as the user wrote it
    runs: tuple[RunInput, ...]
    ledgers: Mapping[str, tuple[Ledger, ...]]  # mark -> one ledger per run
    # mark -> one sample row per run (None where the run has none), as the ledgers read them
    samples: Mapping[str, tuple[Mapping[str, Any] | None, ...]] = field(default_factory=dict)

    @property
    def records(self) -> list[Mapping[str, Any]]:
        return [r.record for r in self.runs]

    def describe(self) -> dict[str, Any]:
        recs = self.records
        return {
            "selector": self.label,
            "runs": len(recs),
            "run_ids": [r.get("run_id") for r in recs],
            **{k: sorted({str(r.get(k)) for r in recs}) for k in ("environment", "engine", "model", "source")},
        }


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    kind: str  # "ledger" or "engine"
    a_bytes: int | None
    b_bytes: int | None
    source: str

    @property
    def delta_bytes(self) -> int | None:
        return None if self.a_bytes is None or self.b_bytes is None else self.b_bytes - self.a_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "kind": self.kind, "a_bytes": self.a_bytes,
                "b_bytes": self.b_bytes, "delta_bytes": self.delta_bytes, "source": self.source}


@dataclass(frozen=True)
class Hypothesis:
    """One explanation, weighed. ``differs``: does its quantity differ materially?
    ``explains_kv``: does that explain the KV difference through the engine's sizing
    rule? None: the data cannot say. ``verdict`` is the older single answer, kept."""

    name: str
    claim: str
    verdict: str
    evidence: str
    numbers: Mapping[str, Any] = field(default_factory=dict)
    differs: bool | None = None
    explains_kv: bool | None = None
    kv_evidence: str = ""  # why explains_kv is what it is

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "claim": self.claim, "verdict": self.verdict, "differs": self.differs,
                "explains_kv": self.explains_kv, "evidence": self.evidence, "kv_evidence": self.kv_evidence,
                "numbers": dict(self.numbers)}


def median(values: Iterable[int | float | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return int(round(statistics.median(vals))) if vals else None


def make_side(label: str, runs: Sequence[RunInput]) -> Side:
    marks = ("start", "ready", "peak")
    per_mark: dict[str, list[Ledger]] = {m: [] for m in marks}
    samples: dict[str, list[Mapping[str, Any] | None]] = {m: [] for m in marks}
    for r in runs:
        rows = rows_at(r.record, r.series)  # recomputed from the series once per run
        for mark in marks:
            per_mark[mark].append(ledger_at(r.record, rows.get(mark), at=mark))
            samples[mark].append(rows.get(mark))
    return Side(label, tuple(runs), {k: tuple(v) for k, v in per_mark.items()},
                {k: tuple(v) for k, v in samples.items()})


def ledger_rows(a: Side, b: Side, mark: str) -> list[Row]:
    rows = []
    for key, title in CATEGORIES:
        cats = [led.get(key) for led in (*a.ledgers[mark], *b.ledgers[mark])]
        sources = sorted({c.source for c in cats if c.bytes is not None}) or sorted({c.source for c in cats})
        rows.append(Row(key, title, "ledger", median([led.bytes(key) for led in a.ledgers[mark]]),
                        median([led.bytes(key) for led in b.ledgers[mark]]), "; ".join(sources)))
    totals = [("total", "total (MemTotal - MemFree)", lambda led: led.total_bytes),
              ("run_total", "the run's own memory", lambda led: led.run_total_bytes)]
    for key, title, get in totals:
        rows.append(Row(key, title, "ledger", median([get(x) for x in a.ledgers[mark]]),
                        median([get(x) for x in b.ledgers[mark]]),
                        "; ".join(sorted({(x.total_source if key == "total" else x.run_total_source)
                                          for x in (*a.ledgers[mark], *b.ledgers[mark])}))))
    return rows


def engine_rows(a: Side, b: Side) -> list[Row]:
    rows = []
    for key, title in ENGINE_FIGURES:
        av = median([(r.get("engine_report") or {}).get(key) for r in a.records])
        bv = median([(r.get("engine_report") or {}).get(key) for r in b.records])
        srcs = sorted({str(r.get("source") or "memgap") for r in (*a.records, *b.records)})
        src = "engine log" + (f" (as imported from {', '.join(s for s in srcs if s != 'memgap')})"
                              if any(s != "memgap" for s in srcs) else "")
        rows.append(Row(f"engine.{key}", title, "engine", av, bv, src))
    return rows


def gib(n: int | float | None) -> str:
    return format_bytes(n, precision=2)


def row(rows: Sequence[Row], key: str) -> Row:
    return next(r for r in rows if r.key == key)


def engines(a: Side, b: Side) -> set[str]:
    return {str(r.get("engine")) for r in (*a.records, *b.records)}


def material_bytes(scale: int | None) -> int:
    return max(MATERIAL_FLOOR_BYTES, int(MATERIAL_FRACTION * (scale or 0)))


def material(delta: int | float | None, scale: int | None) -> bool:
    if delta is None:
        return False
    return abs(delta) >= material_bytes(scale)


def scale(rows: Sequence[Row]) -> int | None:
    rt = row(rows, "run_total")
    kv = row(rows, "engine.kv_cache_bytes")
    vals = [v for v in (rt.a_bytes, rt.b_bytes, kv.a_bytes, kv.b_bytes) if v is not None]
    return max(vals) if vals else None


def at(side: Side, mark: str, column: str | None) -> int | None:
    """The median of one sample column at a mark, over the side's runs: from the raw
    series when stored (as the ledgers are), else from the record's ``memory.at``."""
    if column is None:
        return None
    return median([(s or {}).get(column) for s in side.samples.get(mark, ())])


def delta(pair: tuple[int | None, int | None]) -> int | None:
    return None if pair[0] is None or pair[1] is None else pair[1] - pair[0]


def sum_opt(vals: Iterable[int | None]) -> int | None:
    vs = list(vals)
    return None if any(v is None for v in vs) else sum(v for v in vs if v is not None)


def unified(side: Side) -> bool | None:
    """Whether the side's runs had a GPU that shares host memory (GB10, GH200), from the
    records' host facts (memgap.hostinfo, NVML's view of each device); None: not recorded
    or mixed."""
    flags: set[bool | None] = set()
    for r in side.records:
        gpus = (r.get("host") or {}).get("gpus")
        if not isinstance(gpus, list) or not gpus:
            flags.add(None)
            continue
        vals = [g.get("unified_memory") for g in gpus if isinstance(g, dict)]
        flags.add(True if any(v is True for v in vals) else False if vals and all(v is False for v in vals) else None)
    return flags.pop() if len(flags) == 1 else None
