"""The engine's KV sizing rule against the runs (pure): does the rule, fitted to the runs
or with the engine's default fraction, reproduce their KV caches; and which memory
reading the rule takes, so that a difference in some memory can be said to explain the
KV difference only by the amount the rule implies (:class:`KvLink`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memgap import sizing
from memgap.analysis.sides import (
    CONTRADICTED,
    GIB,
    MIB,
    NOT_MEASURED,
    SUPPORTED,
    Hypothesis,
    Row,
    Side,
    engines,
    gib,
    material,
    material_bytes,
    median,
    row,
    scale,
    unified,
)
from memgap.diagnose.limits import vllm_cpu_rule

# The memory figure each engine's rule reads, from memgap.sizing's docstrings.
MEMORY_SOURCE = {
    "trtllm": "cudaMemGetInfo free (~MemFree on unified memory: page cache counts as used)",
    "sglang": "cudaMemGetInfo free (~MemFree on unified memory; newer releases read MemAvailable there)",
    "vllm": "total x gpu_memory_utilization minus what grew while profiling, read from cudaMemGetInfo "
            "(MemAvailable on Orin, Thor and Spark)",
    "llamacpp": "n_ctx (-c): memory is not read (MemAvailable only with --fit)",
}
ENGINE_NAMES = {"trtllm": "TensorRT-LLM", "sglang": "SGLang", "vllm": "vLLM", "llamacpp": "llama.cpp"}

# Engines whose rule subtracts from a free-memory reading (vLLM only on unified memory).
# On unified memory the reading is host memory, and which figure it is decides whether
# page cache counts: cudaMemGetInfo answers about MemFree there (page cache counts as
# used), MemAvailable counts it as free. TensorRT-LLM reads cudaMemGetInfo (the seed's
# mechanism). vLLM reads MemAvailable on Orin, Thor and Spark (vllm MemorySnapshot) and
# subtracts only what grew while it profiled. SGLang read cudaMemGetInfo, but newer
# releases read MemAvailable on those GPUs too (sglang.srt.utils.get_available_gpu_memory),
# so for it the answer depends on a version boundary not pinned down here: None.
READS_FREE = frozenset({"trtllm", "sglang"})
READS_FREE_ON_UNIFIED = frozenset({"vllm"})
MEMFREE, MEMAVAILABLE, NO_HOST_READING = "MemFree", "MemAvailable", "no host reading"
UNIFIED_READING: dict[str, str | None] = {"trtllm": MEMFREE, "sglang": None, "vllm": MEMAVAILABLE}
# KV bytes per byte less of the reading: TensorRT-LLM keeps ``fraction`` of the free
# memory; SGLang's ``free - total x (1 - f)`` and vLLM's ``total x u - non_kv`` lose one for one.
SLOPES = {"sglang": 1.0, "vllm": 1.0}


def engine_name(engine: str | None) -> str:
    return ENGINE_NAMES.get(engine or "", engine or "the engine")


def host_reading(engine: str | None, on_unified: bool | None) -> str | None:
    """The host memory figure the engine's KV rule reads: MEMFREE, MEMAVAILABLE,
    NO_HOST_READING (n_ctx decides, or the GPU has memory of its own), or None when the
    records do not say whether the GPU shares host memory."""
    if engine == "llamacpp":
        return NO_HOST_READING
    if engine in READS_FREE or engine in READS_FREE_ON_UNIFIED:
        if on_unified is None:
            return None
        if not on_unified:
            return NO_HOST_READING
        return UNIFIED_READING.get(engine or "")
    return None


@dataclass(frozen=True)
class KvLink:
    """What the KV difference is, and how the engine's rule turns a difference in some
    memory into one."""

    engine: str | None  # None: the sides ran different engines
    reading: str | None
    slope: float | None
    kv_delta_bytes: int | None
    kv_differs: bool | None
    threshold_bytes: int  # a material difference
    on_unified: bool | None = None

    def reach(self, subject: str, lowers: frozenset[str]) -> str:
        """Whether the engine's rule sees a memory that lowers the readings in ``lowers``."""
        name = engine_name(self.engine)
        if self.engine is None:
            return "the two sides ran different engines: no one rule applies"
        if self.reading is None and self.engine == "sglang" and self.on_unified:
            return (f"SGLang reads cudaMemGetInfo (MemFree) or, in newer releases, MemAvailable on unified memory; "
                    f"which one this version reads, and so whether it sees {subject}, is not known here")
        if self.reading is None:
            return (f"whether {name}'s rule sees {subject} depends on whether the GPU shares host memory, which "
                    "the records do not say")
        if self.reading == NO_HOST_READING:
            return (f"{name}'s rule does not read MemFree ({MEMORY_SOURCE.get(self.engine, 'unknown')}), "
                    f"so {subject} cannot change its KV budget")
        if self.reading not in lowers:
            return f"{name}'s rule reads {self.reading}, which {subject} does not lower"
        if self.reading == MEMAVAILABLE:
            return (f"{name}'s rule reads MemAvailable and subtracts only what grew while it profiled; readings at "
                    "engine start and ready cannot separate that")
        return f"{name}'s rule reads {self.reading}, so {subject} lowers its KV budget"

    def weigh(self, subject: str, d: int | None, lowers: frozenset[str]) -> tuple[bool | None, int | None, str]:
        """(explains_kv, the KV delta the rule implies, why) for a difference ``d`` in a
        memory that lowers the readings in ``lowers``."""
        reach = self.reach(subject, lowers)
        if self.kv_differs is None:
            return None, None, "the KV cache size is missing on one side"
        if not self.kv_differs:
            return False, None, "the KV caches do not differ: there is no KV difference to explain"
        if d is None:
            return None, None, f"{subject} was not measured on one side or both"
        if self.engine is None or self.reading is None:
            return None, None, reach
        if self.reading == NO_HOST_READING or self.reading not in lowers:
            return False, None, reach
        if self.reading == MEMAVAILABLE:
            return None, None, reach
        implied = int(-(self.slope or 0) * d)
        kv = self.kv_delta_bytes or 0
        if not implied:
            return False, 0, f"{subject} does not differ, so by {engine_name(self.engine)}'s rule it changes no KV"
        share = implied / kv if kv else None
        how = (f"by {engine_name(self.engine)}'s rule ({self.slope:.2f} x the change in {self.reading}) {subject} "
               f"{'+' if d > 0 else ''}{gib(d)} implies a KV delta of {gib(implied)}, measured {gib(kv)}"
               + (f" ({share:.0%} of it)" if share is not None else ""))
        ok = abs(implied) >= self.threshold_bytes and implied * kv > 0
        return ok, implied, how + ("" if ok else ": not a material part of it")


def kv_link(a: Side, b: Side, rows: Sequence[Row], rule: Hypothesis) -> KvLink:
    kv = row(rows, "engine.kv_cache_bytes")
    names = engines(a, b)
    engine = next(iter(names)) if len(names) == 1 else None
    sides = {unified(a), unified(b)}
    on_unified = sides.pop() if len(sides) == 1 else None
    slope = SLOPES.get(engine or "")
    if engine == "trtllm":
        slope = float(rule.numbers.get("fraction") or sizing.DEFAULT_FRACTIONS["trtllm-pytorch"])
    differs = None if kv.delta_bytes is None else material(kv.delta_bytes, scale(rows))
    return KvLink(engine, host_reading(engine, on_unified), slope, kv.delta_bytes, differs,
                  material_bytes(scale(rows)), on_unified)


def _rule_kv(verdict: str, kv: Row, rows: Sequence[Row]) -> tuple[bool | None, str]:
    if verdict == NOT_MEASURED or kv.delta_bytes is None:
        return None, "the rule could not be checked"
    if not material(kv.delta_bytes, scale(rows)):
        return False, "the KV caches do not differ: there is no KV difference to explain"
    if verdict == CONTRADICTED:
        return False, "the rule does not reproduce the KV caches"
    return True, "the rule reproduces both KV caches from what it read"


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


NAME = "kv_sizing_rule"
CLAIM = "the engine's KV sizing rule explains the KV difference from the memory it read"


def sizing_rule(a: Side, b: Side, rows: Sequence[Row]) -> Hypothesis:
    names = engines(a, b)
    kv = row(rows, "engine.kv_cache_bytes")
    if len(names) != 1:
        return Hypothesis(NAME, CLAIM, NOT_MEASURED, f"the two sides ran different engines ({', '.join(sorted(names))})")
    engine = names.pop()
    if kv.a_bytes is None or kv.b_bytes is None:
        return Hypothesis(NAME, CLAIM, NOT_MEASURED, "the engine's KV cache size is missing on one side")
    if engine == "trtllm":
        h = _trtllm_rule(a, b, kv, rows)
    elif engine == "llamacpp":
        h = _llamacpp_rule(a, b, kv, rows)
    elif engine == "vllm" and (cpu := vllm_cpu_rule(a.records, b.records, (a.label, b.label),
                                                    material_bytes(scale(rows)))) is not None:
        h = Hypothesis(**{**cpu, "claim": CLAIM})  # vLLM on a CPU: its log gives what it sized from
    else:
        h = Hypothesis(NAME, CLAIM, NOT_MEASURED, f"no fit of {engine}'s rule yet; its memory source: "
                       f"{MEMORY_SOURCE.get(engine, 'unknown')}")
    explains, why = _rule_kv(h.verdict, kv, rows)
    return Hypothesis(h.name, h.claim, h.verdict, h.evidence, h.numbers, h.differs, explains, why)


def _peaks(a: Side, b: Side) -> tuple[int | None, int | None]:
    return (median([(r.get("engine_report") or {}).get("peak_bytes") for r in a.records]),
            median([(r.get("engine_report") or {}).get("peak_bytes") for r in b.records]))


def _tolerance(kv: Row) -> int:
    return max(int(0.1 * GIB), int(0.01 * max(kv.a_bytes or 0, kv.b_bytes or 0)))


def _trtllm_rule(a: Side, b: Side, kv: Row, rows: Sequence[Row]) -> Hypothesis:
    pts = [(rep["peak_bytes"], rep["kv_cache_bytes"]) for rep in
           ((r.get("engine_report") or {}) for r in (*a.records, *b.records))
           if rep.get("peak_bytes") is not None and rep.get("kv_cache_bytes") is not None]
    peak = _peaks(a, b)
    d_peak = None if peak[0] is None or peak[1] is None else peak[1] - peak[0]
    # The rule's input is the free memory it read: total - peak, device-wide.
    differs = None if d_peak is None else material(d_peak, scale(rows))
    fit = fit_trtllm(pts)
    if fit is None or fit.fraction <= 0:
        return _trtllm_default_fraction(pts, kv, peak, differs)
    tol = _tolerance(kv)
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
    fits = fit.max_residual_bytes <= tol and 0 < fit.fraction <= 1
    text = (f"kv = {fit.fraction:.3f} x ({gib(fit.total_bytes)} - peak) fits all {fit.n} runs within "
            f"{gib(fit.max_residual_bytes)} (tolerance {gib(tol)}); "
            f"peak {gib(peak[0])} -> {gib(peak[1])} (delta {gib(d_peak)}) predicts KV delta "
            f"{gib(None if d_peak is None else -fit.fraction * d_peak)}, measured {gib(kv.delta_bytes)}. "
            f"The rule reads {MEMORY_SOURCE['trtllm']}: the KV gap is {fit.fraction:.2f} x the gap in "
            "device-wide used memory at profiling")
    if not fits:
        text = (f"kv = fraction x (total - peak) does not fit: best fraction {fit.fraction:.3f}, total "
                f"{gib(fit.total_bytes)}, worst run off by {gib(fit.max_residual_bytes)} (tolerance {gib(tol)})")
    return Hypothesis(NAME, CLAIM, SUPPORTED if fits else CONTRADICTED, text, numbers, differs)


def _trtllm_default_fraction(pts: Sequence[tuple[int, int]], kv: Row, peak: tuple[int | None, int | None],
                             differs: bool | None) -> Hypothesis:
    """Too few runs to fit two parameters: with the engine's default fraction every run
    implies a device total ``peak + kv / fraction``; the rule holds if they agree."""
    if len(pts) < 2:
        return Hypothesis(NAME, CLAIM, NOT_MEASURED, f"needs at least 2 runs with the engine's peak and KV figures "
                          f"(have {len(pts)})", differs=differs)
    f = sizing.DEFAULT_FRACTIONS["trtllm-pytorch"]
    totals = [p + k / f for p, k in pts]
    spread = int(max(totals) - min(totals))
    tol = _tolerance(kv)
    total = int(statistics.median(totals))
    numbers = {"fraction": f, "fraction_source": "engine default (not fitted)", "total_bytes": total,
               "implied_total_spread_bytes": spread, "runs": len(pts), "peak_a_bytes": peak[0],
               "peak_b_bytes": peak[1], "kv_a_bytes": kv.a_bytes, "kv_b_bytes": kv.b_bytes}
    if spread <= tol:
        return Hypothesis(NAME, CLAIM, SUPPORTED,
                          f"too few runs to fit the fraction; with TensorRT-LLM's default {f} every run implies the "
                          f"same device total, peak + kv / {f} = {gib(total)} (spread {gib(spread)}, tolerance "
                          f"{gib(tol)}): the KV gap is {f} x the gap in device-wide used memory at profiling",
                          numbers, differs)
    return Hypothesis(NAME, CLAIM, NOT_MEASURED,
                      f"too few runs to fit the fraction, and with the default {f} the runs imply device totals "
                      f"{gib(spread)} apart: fit at least 3 runs with different peaks", numbers, differs)


def _llamacpp_rule(a: Side, b: Side, kv: Row, rows: Sequence[Row]) -> Hypothesis:
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
    if preds[0] is None or preds[1] is None:
        return Hypothesis(NAME, CLAIM, NOT_MEASURED, "n_ctx or the KV token count is missing from the engine log")
    d_pred = preds[1] - preds[0]
    d_kv = kv.delta_bytes or 0
    ok = abs(d_pred - d_kv) <= max(MIB, 0.01 * max(kv.a_bytes or 0, kv.b_bytes or 0))
    text = (f"llama.cpp sizes its KV cache from n_ctx x bytes per token, not from memory: predicted "
            f"{gib(preds[0])} and {gib(preds[1])} (delta {gib(d_pred)}), measured {gib(kv.a_bytes)} and "
            f"{gib(kv.b_bytes)} (delta {gib(d_kv)})")
    return Hypothesis(NAME, CLAIM, SUPPORTED if ok else CONTRADICTED, text,
                      {"kv_a_predicted_bytes": preds[0], "kv_b_predicted_bytes": preds[1],
                       "kv_a_bytes": kv.a_bytes, "kv_b_bytes": kv.b_bytes},
                      material(d_pred, scale(rows)))
