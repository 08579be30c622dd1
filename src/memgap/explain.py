"""``explain``: two runs, or two groups of runs, side by side, and which explanation of
their difference the numbers support (pure).

Each side is summarised by the median of its runs, per category of the ledger
(:mod:`memgap.ledger`) and per engine figure. Each hypothesis gets a verdict --
``supported``, ``contradicted`` or ``not measured`` -- and the numbers that decided it.
A difference counts as material when it is at least ``max(32 MiB, 5 %)`` of the larger
side's run total (or of the engine's KV cache for engine-level-only runs)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memgap.ledger import CATEGORIES, Ledger, run_ledgers
from memgap.units import format_bytes

# The --json layout's version; bump and list the change here.
#   1 -- a, b, categories, categories_at_peak, hypotheses, notes (2026-11).
EXPLAIN_VERSION = 1
SUPPORTED, CONTRADICTED, NOT_MEASURED = "supported", "contradicted", "not measured"
MIB, GIB = 1024**2, 1024**3
MATERIAL_FLOOR_BYTES = 32 * MIB
MATERIAL_FRACTION = 0.05

# The KV figure an engine's rule reads, from memgap.sizing's docstrings.
MEMORY_SOURCE = {
    "trtllm": "cudaMemGetInfo free (~MemFree on unified memory: page cache counts as used)",
    "sglang": "cudaMemGetInfo free (~MemFree on unified memory)",
    "vllm": "cudaMemGetInfo total; MemAvailable for the start-up check on integrated GPUs",
    "llamacpp": "n_ctx (-c): memory is not read (MemAvailable only with --fit)",
}
READS_FREE = {"trtllm", "sglang"}

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
    name: str
    claim: str
    verdict: str
    evidence: str
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "claim": self.claim, "verdict": self.verdict,
                "evidence": self.evidence, "numbers": dict(self.numbers)}


@dataclass(frozen=True)
class Explanation:
    a: Side
    b: Side
    categories: tuple[Row, ...]  # at engine-ready, then the engine's own figures
    categories_at_peak: tuple[Row, ...]
    hypotheses: tuple[Hypothesis, ...]
    notes: tuple[str, ...]

    def hypothesis(self, name: str) -> Hypothesis:
        return next(h for h in self.hypotheses if h.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "explain_version": EXPLAIN_VERSION,
            "a": self.a.describe(), "b": self.b.describe(),
            "categories": [r.to_dict() for r in self.categories],
            "categories_at_peak": [r.to_dict() for r in self.categories_at_peak],
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "notes": list(self.notes),
        }


def median(values: Sequence[int | float | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return int(round(statistics.median(vals))) if vals else None


def make_side(label: str, runs: Sequence[RunInput]) -> Side:
    per_mark: dict[str, list[Ledger]] = {"ready": [], "peak": [], "start": []}
    for r in runs:
        for mark, led in run_ledgers(r.record, r.series, marks=("start", "ready", "peak")).items():
            per_mark[mark].append(led)
    return Side(label, tuple(runs), {k: tuple(v) for k, v in per_mark.items()})


def _rows(a: Side, b: Side, mark: str) -> list[Row]:
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


def _engine_rows(a: Side, b: Side) -> list[Row]:
    rows = []
    for key, title in ENGINE_FIGURES:
        av = median([(r.get("engine_report") or {}).get(key) for r in a.records])
        bv = median([(r.get("engine_report") or {}).get(key) for r in b.records])
        srcs = sorted({str(r.get("source") or "memgap") for r in (*a.records, *b.records)})
        src = "engine log" + (f" (as imported from {', '.join(s for s in srcs if s != 'memgap')})"
                              if any(s != "memgap" for s in srcs) else "")
        rows.append(Row(f"engine.{key}", title, "engine", av, bv, src))
    return rows


def explain(a_label: str, a_runs: Sequence[RunInput], b_label: str, b_runs: Sequence[RunInput]) -> Explanation:
    if not a_runs or not b_runs:
        raise ValueError("explain needs at least one run on each side")
    a, b = make_side(a_label, a_runs), make_side(b_label, b_runs)
    rows = tuple(_rows(a, b, "ready") + _engine_rows(a, b))
    peak_rows = tuple(_rows(a, b, "peak"))
    return Explanation(a, b, rows, peak_rows, tuple(hypotheses(a, b, rows)), tuple(limits(a, b)))


def gib(n: int | float | None) -> str:
    return format_bytes(n, precision=2)


# -- hypotheses ----------------------------------------------------------------------------


def _row(rows: Sequence[Row], key: str) -> Row:
    return next(r for r in rows if r.key == key)


def _engines(a: Side, b: Side) -> set[str]:
    return {str(r.get("engine")) for r in (*a.records, *b.records)}


def _material(delta: int | None, scale: int | None) -> bool:
    if delta is None:
        return False
    return abs(delta) >= max(MATERIAL_FLOOR_BYTES, MATERIAL_FRACTION * (scale or 0))


def _scale(rows: Sequence[Row]) -> int | None:
    rt = _row(rows, "run_total")
    kv = _row(rows, "engine.kv_cache_bytes")
    vals = [v for v in (rt.a_bytes, rt.b_bytes, kv.a_bytes, kv.b_bytes) if v is not None]
    return max(vals) if vals else None


def _at(side: Side, mark: str, column: str) -> int | None:
    vals = []
    for r in side.runs:
        row = ((r.record.get("memory") or {}).get("at") or {}).get(mark) or {}
        vals.append(row.get(column))
    return median(vals)


def hypotheses(a: Side, b: Side, rows: Sequence[Row]) -> list[Hypothesis]:
    return [sizing_rule(a, b, rows), page_cache(a, b, rows), cgroup_accounting(a, b, rows),
            _category_hypothesis("shmem", "shmem/tmpfs differs between the two", a, b, rows,
                                 ("shmem",), "host_shmem_bytes"),
            _category_hypothesis("other_processes", "memory outside the run (other processes, the kernel, "
                                 "other page cache) differs", a, b, rows,
                                 ("outside_other", "outside_page_cache"), None),
            gpu_outside_cgroup(a, b, rows)]


@dataclass(frozen=True)
class TrtllmFit:
    fraction: float
    total_bytes: int
    max_residual_bytes: int
    n: int


def fit_trtllm(points: Sequence[tuple[int, int]]) -> TrtllmFit | None:
    """Least-squares fit of ``kv = fraction * (total - peak)`` over (peak, kv) pairs: a line
    of slope ``-fraction`` and intercept ``fraction * total``. None with under three runs or
    no spread in peak (the line is not determined)."""
    import numpy as np

    if len(points) < 3:
        return None
    p = np.array([x for x, _ in points], dtype=float) / GIB
    k = np.array([y for _, y in points], dtype=float) / GIB
    if float(np.ptp(p)) < 1e-6:
        return None
    slope, intercept = np.polyfit(p, k, 1)
    frac = -float(slope)
    if frac <= 0:
        return TrtllmFit(frac, 0, int(float(np.max(np.abs(k - k.mean()))) * GIB), len(points))
    total = float(intercept) / frac
    resid = k - frac * (total - p)
    return TrtllmFit(frac, int(total * GIB), int(float(np.max(np.abs(resid))) * GIB), len(points))


def sizing_rule(a: Side, b: Side, rows: Sequence[Row]) -> Hypothesis:
    name = "kv_sizing_rule"
    claim = "the engine's KV sizing rule explains the KV difference from the memory it read"
    engines = _engines(a, b)
    kv = _row(rows, "engine.kv_cache_bytes")
    if len(engines) != 1:
        return Hypothesis(name, claim, NOT_MEASURED, f"the two sides ran different engines ({', '.join(sorted(engines))})")
    engine = engines.pop()
    if kv.a_bytes is None or kv.b_bytes is None:
        return Hypothesis(name, claim, NOT_MEASURED, "the engine's KV cache size is missing on one side")
    if engine == "trtllm":
        return _trtllm_rule(name, claim, a, b, kv)
    if engine == "llamacpp":
        return _llamacpp_rule(name, claim, a, b, kv)
    return Hypothesis(name, claim, NOT_MEASURED, f"no fit of {engine}'s rule yet; its memory source: "
                      f"{MEMORY_SOURCE.get(engine, 'unknown')}")


def _trtllm_rule(name: str, claim: str, a: Side, b: Side, kv: Row) -> Hypothesis:
    from memgap import sizing

    pts = [(rep["peak_bytes"], rep["kv_cache_bytes"]) for rep in
           ((r.get("engine_report") or {}) for r in (*a.records, *b.records))
           if rep.get("peak_bytes") is not None and rep.get("kv_cache_bytes") is not None]
    fit = fit_trtllm(pts)
    if fit is None or fit.fraction <= 0:
        return _trtllm_default_fraction(name, claim, pts, kv)
    peak = _row_peak(a), _row_peak(b)
    tol = max(int(0.1 * GIB), int(0.01 * max(kv.a_bytes or 0, kv.b_bytes or 0)))
    predicted: list[int | None] = []
    for p in peak:  # the rule itself, with the fitted fraction and total
        if p is None:
            predicted.append(None)
            continue
        budget = sizing.trtllm_pytorch(sizing.MemoryReadings(total_bytes=fit.total_bytes, free_bytes=fit.total_bytes - p,
                                                             unified=True),
                                       sizing.EngineCosts(weights_bytes=0), fraction=min(fit.fraction, 1.0))
        predicted.append(budget.kv_budget_bytes)
    numbers = {"fraction": round(fit.fraction, 4), "total_bytes": fit.total_bytes, "runs": fit.n,
               "max_residual_bytes": fit.max_residual_bytes, "peak_a_bytes": peak[0], "peak_b_bytes": peak[1],
               "kv_a_bytes": kv.a_bytes, "kv_b_bytes": kv.b_bytes, "kv_a_predicted_bytes": predicted[0],
               "kv_b_predicted_bytes": predicted[1]}
    d_peak = None if None in peak else peak[1] - peak[0]  # type: ignore[operator]
    d_kv = kv.delta_bytes
    fits = fit.max_residual_bytes <= tol and 0 < fit.fraction <= 1
    text = (f"kv = {fit.fraction:.3f} x ({gib(fit.total_bytes)} - peak) fits all {fit.n} runs within "
            f"{gib(fit.max_residual_bytes)} (tolerance {gib(tol)}); "
            f"peak {gib(peak[0])} -> {gib(peak[1])} (delta {gib(d_peak)}) predicts KV delta "
            f"{gib(None if d_peak is None else -fit.fraction * d_peak)}, measured {gib(d_kv)}. "
            f"The rule reads {MEMORY_SOURCE['trtllm']}: the KV gap is {fit.fraction:.2f} x the gap in "
            "device-wide used memory at profiling")
    if not fits:
        text = (f"kv = fraction x (total - peak) does not fit: best fraction {fit.fraction:.3f}, total "
                f"{gib(fit.total_bytes)}, worst run off by {gib(fit.max_residual_bytes)} (tolerance {gib(tol)})")
    return Hypothesis(name, claim, SUPPORTED if fits else CONTRADICTED, text, numbers)


def _trtllm_default_fraction(name: str, claim: str, pts: Sequence[tuple[int, int]], kv: Row) -> Hypothesis:
    """Too few runs to fit two parameters: with the engine's default fraction every run
    implies a device total ``peak + kv / fraction``; the rule holds if they agree."""
    from memgap import sizing

    if len(pts) < 2:
        return Hypothesis(name, claim, NOT_MEASURED, f"needs at least 2 runs with the engine's peak and KV figures "
                          f"(have {len(pts)})")
    f = sizing.DEFAULT_FRACTIONS["trtllm-pytorch"]
    totals = [p + k / f for p, k in pts]
    spread = int(max(totals) - min(totals))
    tol = max(int(0.1 * GIB), int(0.01 * max(kv.a_bytes or 0, kv.b_bytes or 0)))
    total = int(statistics.median(totals))
    numbers = {"fraction": f, "fraction_source": "engine default (not fitted)", "total_bytes": total,
               "implied_total_spread_bytes": spread, "runs": len(pts)}
    if spread <= tol:
        return Hypothesis(name, claim, SUPPORTED,
                          f"too few runs to fit the fraction; with TensorRT-LLM's default {f} every run implies the "
                          f"same device total, peak + kv / {f} = {gib(total)} (spread {gib(spread)}, tolerance "
                          f"{gib(tol)}): the KV gap is {f} x the gap in device-wide used memory at profiling", numbers)
    return Hypothesis(name, claim, NOT_MEASURED,
                      f"too few runs to fit the fraction, and with the default {f} the runs imply device totals "
                      f"{gib(spread)} apart: fit at least 3 runs with different peaks", numbers)


def _row_peak(side: Side) -> int | None:
    return median([(r.get("engine_report") or {}).get("peak_bytes") for r in side.records])


def _llamacpp_rule(name: str, claim: str, a: Side, b: Side, kv: Row) -> Hypothesis:
    from memgap import sizing

    preds = []
    for side in (a, b):
        vals: list[Any] = []
        for r in side.records:
            rep = r.get("engine_report") or {}
            n_ctx = (rep.get("extra") or {}).get("n_ctx") or (r.get("engine_options") or {}).get("ctx_size")
            tokens, size = rep.get("kv_cache_tokens"), rep.get("kv_cache_bytes")
            if not n_ctx or not tokens or not size:
                vals.append(None)
                continue
            zero = sizing.MemoryReadings(total_bytes=0, free_bytes=0)
            vals.append(sizing.llamacpp(zero, sizing.EngineCosts(weights_bytes=0), n_ctx=int(n_ctx),
                                        bytes_per_token=size // tokens).kv_budget_bytes)
        preds.append(median(vals))
    if None in preds:
        return Hypothesis(name, claim, NOT_MEASURED, "n_ctx or the KV token count is missing from the engine log")
    d_pred = preds[1] - preds[0]  # type: ignore[operator]
    d_kv = kv.delta_bytes or 0
    ok = abs(d_pred - d_kv) <= max(MIB, 0.01 * max(kv.a_bytes or 0, kv.b_bytes or 0))
    text = (f"llama.cpp sizes its KV cache from n_ctx x bytes per token, not from memory: predicted "
            f"{gib(preds[0])} and {gib(preds[1])} (delta {gib(d_pred)}), measured {gib(kv.a_bytes)} and "
            f"{gib(kv.b_bytes)} (delta {gib(d_kv)})")
    return Hypothesis(name, claim, SUPPORTED if ok else CONTRADICTED, text,
                      {"kv_a_predicted_bytes": preds[0], "kv_b_predicted_bytes": preds[1],
                       "kv_a_bytes": kv.a_bytes, "kv_b_bytes": kv.b_bytes})


def page_cache(a: Side, b: Side, rows: Sequence[Row]) -> Hypothesis:
    name = "page_cache"
    claim = "page cache present at engine start (host Cached, the run's cgroup file) differs"
    start = (_at(a, "start", "host_cached_bytes"), _at(b, "start", "host_cached_bytes"))
    run_pc = [_sum_opt(_row(rows, k).a_bytes for k in ("page_cache_mapped", "page_cache_unmapped")),
              _sum_opt(_row(rows, k).b_bytes for k in ("page_cache_mapped", "page_cache_unmapped"))]
    free = (_at(a, "start", "host_free_bytes"), _at(b, "start", "host_free_bytes"))
    if None in start and None in run_pc:
        return Hypothesis(name, claim, NOT_MEASURED, "no memory samples: host Cached and the cgroup's page cache "
                          "were not read at engine start")
    scale = _scale(rows)
    d_start = None if None in start else start[1] - start[0]  # type: ignore[operator]
    d_run = None if None in run_pc else run_pc[1] - run_pc[0]  # type: ignore[operator]
    d_free = None if None in free else free[1] - free[0]  # type: ignore[operator]
    engines = _engines(a, b)
    reads_free = bool(engines & READS_FREE)
    numbers = {"host_cached_start_a_bytes": start[0], "host_cached_start_b_bytes": start[1],
               "run_page_cache_ready_a_bytes": run_pc[0], "run_page_cache_ready_b_bytes": run_pc[1],
               "host_free_start_delta_bytes": d_free, "material_bytes": max(MATERIAL_FLOOR_BYTES,
                                                                             int(MATERIAL_FRACTION * (scale or 0)))}
    text = (f"host Cached at start {gib(start[0])} vs {gib(start[1])} (delta {gib(d_start)}); page cache charged "
            f"to the run at ready {gib(run_pc[0])} vs {gib(run_pc[1])} (delta {gib(d_run)}); MemFree at start "
            f"delta {gib(d_free)}. ")
    text += ("The engine's rule reads free memory, so page cache lowers its KV budget"
             if reads_free else "The engine's rule does not read MemFree, so page cache cannot change its KV budget")
    material = _material(d_start, scale) or _material(d_run, scale)
    return Hypothesis(name, claim, SUPPORTED if material else CONTRADICTED, text, numbers)


def _sum_opt(vals: Any) -> int | None:
    vs = list(vals)
    return None if any(v is None for v in vs) else sum(vs)


def cgroup_accounting(a: Side, b: Side, rows: Sequence[Row]) -> Hypothesis:
    name = "cgroup_accounting"
    claim = ("the cgroup charged more than the engine's own memory, and that charge reached the engine "
             "(through a limit or the engine's memory source)")
    usage = (_at(a, "ready", "cgroup_usage_bytes"), _at(b, "ready", "cgroup_usage_bytes"))
    if usage == (None, None):
        return Hypothesis(name, claim, NOT_MEASURED, "neither side carries cgroup readings (no cgroup of its own, "
                          "or engine-level numbers only): the charge was not measured")
    anon = (_at(a, "ready", "process_anon_bytes"), _at(b, "ready", "process_anon_bytes"))
    excess = [None if u is None or p is None else u - p for u, p in zip(usage, anon, strict=True)]
    limits = [_limit(s) for s in (a, b)]
    events = [_limit_events(s) for s in (a, b)]
    engines = _engines(a, b)
    numbers = {"cgroup_usage_ready_a_bytes": usage[0], "cgroup_usage_ready_b_bytes": usage[1],
               "charge_beyond_engine_anon_a_bytes": excess[0], "charge_beyond_engine_anon_b_bytes": excess[1],
               "limit_a_bytes": limits[0], "limit_b_bytes": limits[1], "limit_events_a": events[0],
               "limit_events_b": events[1]}
    peak_usage = [median([(r.get("memory") or {}).get("cgroup_usage_peak_bytes") for r in s.records]) for s in (a, b)]
    near = [lim is not None and pk is not None and pk >= 0.9 * lim for lim, pk in zip(limits, peak_usage, strict=True)]
    reached = any(near) or any(e for e in events if e)
    source = "; ".join(f"{e}: {MEMORY_SOURCE.get(e, 'unknown')}" for e in sorted(engines))
    text = (f"cgroup usage at ready {gib(usage[0])} vs {gib(usage[1])}; charged beyond the engine's anon memory "
            f"{gib(excess[0])} vs {gib(excess[1])}; limit {gib(limits[0])} vs {gib(limits[1])}, "
            f"limit events (failcnt/OOM) {_count(events[0])} vs {_count(events[1])}. No engine reads its cgroup to size the KV "
            f"cache ({source})")
    text += ("; the run came within 10% of its limit or hit it, so the charge could reach the engine"
             if reached else "; no limit came near, so the extra charge could not reach the engine")
    return Hypothesis(name, claim, SUPPORTED if reached else CONTRADICTED, text, numbers)


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _limit(side: Side) -> int | None:
    vals = [((r.get("cgroup_final") or {}).get("limit_bytes") or (r.get("environment_info") or {}).get("memory_limit_bytes"))
            for r in side.records]
    return median(vals)


def _limit_events(side: Side) -> int | None:
    tot, seen = 0, False
    for r in side.records:
        cf = r.get("cgroup_final") or {}
        for k in ("failcnt", "oom_kill_count"):
            if cf.get(k) is not None:
                seen = True
                tot += int(cf[k])
    return tot if seen else None


def _category_hypothesis(name: str, claim: str, a: Side, b: Side, rows: Sequence[Row], keys: tuple[str, ...],
                         host_column: str | None) -> Hypothesis:
    av = _sum_opt(_row(rows, k).a_bytes for k in keys)
    bv = _sum_opt(_row(rows, k).b_bytes for k in keys)
    host = (_at(a, "start", host_column), _at(b, "start", host_column)) if host_column else (None, None)
    if av is None or bv is None:
        return Hypothesis(name, claim, NOT_MEASURED, f"{' + '.join(keys)} not measured on one side or both")
    scale = _scale(rows)
    d = bv - av
    d_host = None if None in host else host[1] - host[0]  # type: ignore[operator]
    text = f"{' + '.join(_row(rows, k).title for k in keys)} at ready {gib(av)} vs {gib(bv)} (delta {gib(d)})"
    if host_column:
        text += f"; host {host_column.removeprefix('host_').removesuffix('_bytes')} at start delta {gib(d_host)}"
    verdict = SUPPORTED if _material(d, scale) or _material(d_host, scale) else CONTRADICTED
    return Hypothesis(name, claim, verdict, text, {"a_bytes": av, "b_bytes": bv, "delta_bytes": d,
                                                  "host_start_delta_bytes": d_host})


def gpu_outside_cgroup(a: Side, b: Side, rows: Sequence[Row]) -> Hypothesis:
    name = "gpu_outside_cgroup"
    claim = "GPU allocations the cgroup does not see differ"
    r = _row(rows, "gpu_outside_cgroup")
    if r.a_bytes is None or r.b_bytes is None:
        return Hypothesis(name, claim, NOT_MEASURED, "no NVML per-process reading on one side or both")
    d = r.delta_bytes
    verdict = SUPPORTED if _material(d, _scale(rows)) else CONTRADICTED
    return Hypothesis(name, claim, verdict, f"NVML per-process used {gib(r.a_bytes)} vs {gib(r.b_bytes)} (delta {gib(d)})",
                      {"a_bytes": r.a_bytes, "b_bytes": r.b_bytes, "delta_bytes": d})


def limits(a: Side, b: Side) -> list[str]:
    """What the data can and cannot establish."""
    out = []
    engine_only = [s.label for s in (a, b) if not any(led.measured for led in s.ledgers["ready"])]
    if engine_only:
        srcs = sorted({str(r.get("source") or "memgap") for s in (a, b) for r in s.records})
        out.append(f"{' and '.join(engine_only)}: engine-level numbers only (source {', '.join(srcs)}); page cache, "
                   "cgroup charges, shmem and other processes were not measured, so the data can show how the "
                   "KV cache follows the engine's reading of used memory, but not what that memory was")
    ta = sorted(str(r.get("created_at")) for r in a.records)
    tb = sorted(str(r.get("created_at")) for r in b.records)
    if ta and tb and (ta[-1] < tb[0] or tb[-1] < ta[0]):
        first, second = (a, b) if ta[-1] < tb[0] else (b, a)
        out.append(f"every run of {first.label} ran before every run of {second.label}: the comparison is "
                   "confounded with time (and with page cache built up by earlier runs); interleave the order")
    tput = [[float(v) for r in s.records if (v := r.get("output_tokens_per_s")) is not None] for s in (a, b)]
    if tput[0] and tput[1]:
        ta_, tb_ = statistics.median(tput[0]), statistics.median(tput[1])
        rel = abs(tb_ - ta_) / max(ta_, tb_, 1e-9)
        out.append(f"output throughput {ta_:.1f} vs {tb_:.1f} tokens/s (medians, {rel:.1%} apart)"
                   + (": the KV difference did not limit this workload" if rel < 0.02 else ""))
    for s in (a, b):
        for key in ("model", "engine"):
            vals = sorted({str(r.get(key)) for r in s.records})
            if len(vals) > 1:
                out.append(f"{s.label} mixes {key}s ({', '.join(vals)}): its medians summarise unlike runs")
        if len(s.runs) == 1:
            out.append(f"{s.label} is a single run: no spread, so no estimate of run-to-run noise")
    return out
