"""Case 3 for vLLM: on unified memory its profiler books page cache that grew while it
loaded and profiled as "non-torch memory", and the KV cache loses it.

vLLM's profile (vllm/utils/mem_utils.py ``memory_profiling``) takes the device-wide
used memory ``total - free`` at engine creation and after profiling; what grew beyond
torch's own allocations is ``non_torch_increase`` and is subtracted from the KV
budget. On unified memory ``free`` is cudaMemGetInfo's, about MemFree, where page cache
counts as used -- until vLLM took MemAvailable there instead (``MemorySnapshot.measure``:
compute capabilities of Orin, Thor and Spark first, ``is_integrated`` since
vllm-project/vllm#35356, 2026-02). So reading the model's files during loading lowers
the KV cache by up to the page cache they left. The log gives the figure: 0.11.0
prints ``{w} GiB for weight, {a} GiB for peak activation, {n} GiB for non-torch memory``
(gpu_worker.py, DEBUG); 0.32.0 prints ``{c} GiB for consumed memory (weights +
non-torch)`` beside ``Model loading took {w} GiB memory``. memgap compares that figure
with the growth of the host's page cache (``Cached - Shmem``) between engine start and
ready, which contains the profiling window. Pure over records and sample rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memgap.diagnose.base import PAGE_CACHE_AS_USED, Diagnosis, gib

MIN_GROWTH_BYTES = 256 << 20  # less page cache growth than this is not worth attributing
# A reading that counts page cache as used books all of its growth as non-torch memory;
# the figure must hold at least this share of the growth (the rest: rounding, cache the
# kernel dropped meanwhile) for the growth to be called booked.
BOOKED_SHARE = 0.8


def non_torch(report: Mapping[str, Any]) -> int | None:
    """The memory vLLM booked outside torch, from its log (both summary forms)."""
    extra = report.get("extra") or {}
    if extra.get("non_torch_bytes") is not None:
        return int(extra["non_torch_bytes"])
    consumed, weights = extra.get("consumed_bytes"), report.get("model_bytes")
    if consumed is not None and weights is not None:
        return int(consumed) - int(weights)
    return None


def unified_gpu(record: Mapping[str, Any]) -> bool | None:
    gpus = (record.get("host") or {}).get("gpus")
    if not isinstance(gpus, list) or not gpus:
        return None
    flags = [g.get("unified_memory") for g in gpus if isinstance(g, dict)]
    return True if any(f is True for f in flags) else False if flags and all(f is False for f in flags) else None


def _page_cache(row: Mapping[str, Any] | None) -> int | None:
    if not row or row.get("host_cached_bytes") is None:
        return None
    return int(row["host_cached_bytes"]) - int(row.get("host_shmem_bytes") or 0)


@dataclass(frozen=True)
class Booked:
    non_torch_bytes: int
    cache_start_bytes: int
    cache_ready_bytes: int
    kv_bytes: int | None

    @property
    def growth_bytes(self) -> int:
        return self.cache_ready_bytes - self.cache_start_bytes

    @property
    def booked_bytes(self) -> int:
        """The part of non-torch memory the page cache growth accounts for: all of the
        growth when the non-torch figure holds it (a reading that counts page cache as
        used books every byte of it), else none (the reading counted it as free, as
        MemAvailable does, and the non-torch memory is the engine's own)."""
        g = self.growth_bytes
        if g < MIN_GROWTH_BYTES or self.non_torch_bytes < BOOKED_SHARE * g:
            return 0
        return min(g, self.non_torch_bytes)


def booked(record: Mapping[str, Any], start: Mapping[str, Any] | None, ready: Mapping[str, Any] | None) -> Booked | None:
    rep = record.get("engine_report") or {}
    if record.get("engine") != "vllm" or rep.get("log_variant") == "cpu" or unified_gpu(record) is False:
        return None
    n, c0, c1 = non_torch(rep), _page_cache(start), _page_cache(ready)
    if n is None or c0 is None or c1 is None:
        return None
    return Booked(n, c0, c1, rep.get("kv_cache_bytes"))


def run_diagnosis(record: Mapping[str, Any], start: Mapping[str, Any] | None,
                  ready: Mapping[str, Any] | None) -> Diagnosis | None:
    b = booked(record, start, ready)
    if b is None or not b.booked_bytes:
        return None
    kv = b.kv_bytes
    numbers = {"non_torch_bytes": b.non_torch_bytes, "page_cache_start_bytes": b.cache_start_bytes,
               "page_cache_ready_bytes": b.cache_ready_bytes, "booked_bytes": b.booked_bytes, "kv_bytes": kv,
               "kv_without_bytes": None if kv is None else kv + b.booked_bytes}
    sentence = (f"vLLM booked {gib(b.non_torch_bytes)} as non-torch memory while the host's page cache grew "
                f"{gib(b.growth_bytes)} between engine start and ready (Cached - Shmem {gib(b.cache_start_bytes)} -> "
                f"{gib(b.cache_ready_bytes)}): {gib(b.booked_bytes)} of it is page cache, which its free-memory "
                "reading on unified memory (cudaMemGetInfo, about MemFree) counted as used.")
    remedy = ("Drop the page cache before the start (sync; echo 3 > /proc/sys/vm/drop_caches) or give an explicit "
              "--kv-cache-memory" + (f": the KV cache would have been {gib(kv + b.booked_bytes)} instead of {gib(kv)}."
                                     if kv is not None else "."))
    return Diagnosis(3, PAGE_CACHE_AS_USED, sentence, numbers, remedy)


def _median(vals: Sequence[int]) -> int | None:
    s = sorted(vals)
    return s[len(s) // 2] if s else None


def pagecache_hypothesis(sides: Sequence[tuple[str, Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any] | None],
                                               Sequence[Mapping[str, Any] | None]]],
                         kv_delta_bytes: int | None, threshold_bytes: int) -> dict[str, Any] | None:
    """explain's ``page_cache_as_non_torch`` hypothesis (Hypothesis keyword arguments)
    over two sides ``(label, records, start rows, ready rows)``; None where the runs are
    not vLLM runs on a GPU whose log gave the non-torch figure and whose samples the
    page cache."""
    per_side = []
    for label, records, starts, readies in sides:
        got = [b for r, s, y in zip(records, starts, readies, strict=True) if (b := booked(r, s, y)) is not None]
        if not got:
            return None
        per_side.append((label, got))
    (la, ba), (lb, bb) = per_side
    va, vb = _median([b.booked_bytes for b in ba]), _median([b.booked_bytes for b in bb])
    na, nb = _median([b.non_torch_bytes for b in ba]), _median([b.non_torch_bytes for b in bb])
    ga, gb = _median([b.growth_bytes for b in ba]), _median([b.growth_bytes for b in bb])
    assert va is not None and vb is not None
    d = vb - va
    numbers = {"non_torch_a_bytes": na, "non_torch_b_bytes": nb, "page_cache_growth_a_bytes": ga,
               "page_cache_growth_b_bytes": gb, "booked_a_bytes": va, "booked_b_bytes": vb,
               "kv_implied_delta_bytes": -d}
    evidence = (f"vLLM booked {gib(na)} vs {gib(nb)} as non-torch memory while page cache grew {gib(ga)} vs {gib(gb)} "
                f"between engine start and ready: page cache booked as non-torch {gib(va)} ({la}) vs {gib(vb)} ({lb})")
    differs = abs(d) >= threshold_bytes
    if kv_delta_bytes is None:
        explains, why = None, "the KV cache size is missing on one side"
    elif abs(kv_delta_bytes) < threshold_bytes:
        explains, why = False, "the KV caches do not differ: there is no KV difference to explain"
    else:
        explains = differs and -d * kv_delta_bytes > 0
        why = (f"vLLM subtracts non-torch memory one for one, so {gib(abs(d))} {'more' if d > 0 else 'less'} page "
               f"cache booked on {lb} implies a KV delta of {gib(-d)}, measured {gib(kv_delta_bytes)}")
    return {"name": "page_cache_as_non_torch",
            "claim": "vLLM booked page cache that grew while it loaded as non-torch memory (unified memory)",
            "verdict": "supported" if differs else "contradicted", "evidence": evidence, "numbers": numbers,
            "differs": differs, "explains_kv": explains, "kv_evidence": why}
