"""The hypotheses ``explain`` weighs, each with the numbers that decided it (pure).

Every hypothesis answers two questions apart (:class:`memgap.analysis.sides.Hypothesis`):
``differs`` -- does its quantity differ materially between the sides? -- and
``explains_kv`` -- does that difference explain the KV difference through the engine's
sizing rule? Only a reading the rule takes can, only when the KV caches differ, and only
by the amount the rule implies (:class:`memgap.analysis.rulefit.KvLink`).

The quantities are disjoint, so no byte is weighed twice: host page cache without shmem
(``Cached - Shmem``), shmem, memory outside the run other than page cache and shmem,
and the engine's GPU memory besides its KV cache. ``verdict`` (the older single answer,
kept for readers of version 1) follows ``differs``, except for the sizing rule, where it
says whether the rule fits the runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from memgap.analysis.rulefit import (
    MEMAVAILABLE,
    MEMFREE,
    MEMORY_SOURCE,
    KvLink,
    kv_link,
    sizing_rule,
)
from memgap.analysis.sides import (
    CONTRADICTED,
    NOT_MEASURED,
    SUPPORTED,
    Hypothesis,
    Row,
    Side,
    at,
    delta,
    engines,
    gib,
    material,
    material_bytes,
    median,
    row,
    scale,
    sum_opt,
)
from memgap.diagnose.limits import limit_hypothesis
from memgap.diagnose.pagecache import pagecache_hypothesis

# Which readings a memory lowers: page cache is free to MemAvailable, the rest is not.
LOWERS_FREE_ONLY = frozenset({MEMFREE})
LOWERS_BOTH = frozenset({MEMFREE, MEMAVAILABLE})
PAGE_CACHE_KEYS = ("page_cache_mapped", "page_cache_unmapped")


def hypotheses(a: Side, b: Side, rows: Sequence[Row]) -> list[Hypothesis]:
    rule = sizing_rule(a, b, rows)
    link = kv_link(a, b, rows, rule)
    out = [rule, page_cache(a, b, rows, link), cgroup_accounting(a, b, rows, link), shmem(a, b, rows, link),
           other_processes(a, b, rows, link), gpu_outside_cgroup(a, b, rows, link)]
    return out + diagnosed(a, b, rows, link, out)


def diagnosed(a: Side, b: Side, rows: Sequence[Row], link: KvLink, weighed: list[Hypothesis]) -> list[Hypothesis]:
    """The engine-specific mechanisms of memgap.diagnose (issue 14), where the runs show
    them: a memory limit vLLM's CPU worker read, and page cache vLLM booked as non-torch
    memory. Where the limit explains the KV difference, the cgroup hypothesis says so
    instead of "no rule reads the cgroup"."""
    th = material_bytes(scale(rows))
    kv = row(rows, "engine.kv_cache_bytes").delta_bytes
    out = []
    lim = limit_hypothesis(a.records, b.records, (a.label, b.label), kv, th)
    if lim is not None:
        out.append(Hypothesis(**lim))
        if lim["explains_kv"]:
            i = next(i for i, h in enumerate(weighed) if h.name == "cgroup_accounting")
            weighed[i] = replace(weighed[i], kv_evidence="not the charge but the limit reached the engine: vLLM's CPU "
                                 "worker reads the cgroup limit as its total (see memory_limit)")
    pc = pagecache_hypothesis([(s.label, s.records, s.samples.get("start", ()), s.samples.get("ready", ()))
                               for s in (a, b)], kv, th)
    if pc is not None:
        out.append(Hypothesis(**pc))
    return out


def _verdict(differs: bool) -> str:
    return SUPPORTED if differs else CONTRADICTED


def _weighed(name: str, claim: str, evidence: str, numbers: Mapping[str, Any], differs: bool, link: KvLink,
             subject: str, d: int | None, lowers: frozenset[str]) -> Hypothesis:
    explains, implied, why = link.weigh(subject, d, lowers)
    reach = link.reach(subject, lowers)
    evidence += ". " + reach[:1].upper() + reach[1:]
    return Hypothesis(name, claim, _verdict(differs), evidence, {**numbers, "kv_implied_delta_bytes": implied},
                      differs, explains, why)


def host_page_cache(side: Side, mark: str) -> int | None:
    """Host page cache proper at a mark: ``Cached - Shmem`` (meminfo counts tmpfs in Cached;
    shmem is weighed on its own)."""
    vals = []
    for s in side.samples.get(mark, ()):
        s = s or {}
        cached, shm = s.get("host_cached_bytes"), s.get("host_shmem_bytes")
        vals.append(None if cached is None else int(cached) - int(shm or 0))
    return median(vals)


def page_cache(a: Side, b: Side, rows: Sequence[Row], link: KvLink) -> Hypothesis:
    name = "page_cache"
    claim = "page cache (host Cached - Shmem, and what is charged to the run) differs"
    start = (host_page_cache(a, "start"), host_page_cache(b, "start"))
    ready = (host_page_cache(a, "ready"), host_page_cache(b, "ready"))
    run_pc = (sum_opt(row(rows, k).a_bytes for k in PAGE_CACHE_KEYS),
              sum_opt(row(rows, k).b_bytes for k in PAGE_CACHE_KEYS))
    free = (at(a, "start", "host_free_bytes"), at(b, "start", "host_free_bytes"))
    if None in start and None in ready and None in run_pc:
        return Hypothesis(name, claim, NOT_MEASURED, "no memory samples: host Cached and the cgroup's page cache "
                          "were not read at engine start")
    sc = scale(rows)
    d_start, d_ready, d_run, d_free = delta(start), delta(ready), delta(run_pc), delta(free)
    numbers = {"host_page_cache_start_a_bytes": start[0], "host_page_cache_start_b_bytes": start[1],
               "host_page_cache_ready_a_bytes": ready[0], "host_page_cache_ready_b_bytes": ready[1],
               "host_cached_start_a_bytes": at(a, "start", "host_cached_bytes"),
               "host_cached_start_b_bytes": at(b, "start", "host_cached_bytes"),
               "run_page_cache_ready_a_bytes": run_pc[0], "run_page_cache_ready_b_bytes": run_pc[1],
               "host_free_start_delta_bytes": d_free, "material_bytes": material_bytes(sc)}
    text = (f"host page cache (Cached - Shmem) at start {gib(start[0])} vs {gib(start[1])} (delta {gib(d_start)}), "
            f"at ready {gib(ready[0])} vs {gib(ready[1])} (delta {gib(d_ready)}); page cache charged to the run at "
            f"ready {gib(run_pc[0])} vs {gib(run_pc[1])} (delta {gib(d_run)}); MemFree at start delta {gib(d_free)}")
    differs = material(d_start, sc) or material(d_ready, sc) or material(d_run, sc)
    # What the rule reads at profiling, after the engine loaded: the host's page cache then
    # (including what the engine itself read), closest at ready.
    d = d_ready if d_ready is not None else d_start
    return _weighed(name, claim, text, numbers, differs, link, "page cache", d, LOWERS_FREE_ONLY)


def cgroup_accounting(a: Side, b: Side, rows: Sequence[Row], link: KvLink) -> Hypothesis:
    name = "cgroup_accounting"
    claim = ("the cgroup charged more than the engine's own memory, and that charge reached the engine "
             "(through a limit or the engine's memory source)")
    usage = (at(a, "ready", "cgroup_usage_bytes"), at(b, "ready", "cgroup_usage_bytes"))
    if usage == (None, None):
        return Hypothesis(name, claim, NOT_MEASURED, "neither side carries cgroup readings (no cgroup of its own, "
                          "or engine-level numbers only): the charge was not measured")
    anon = (at(a, "ready", "process_anon_bytes"), at(b, "ready", "process_anon_bytes"))
    ex_a, ex_b = (delta((p, u)) for u, p in zip(usage, anon, strict=True))  # charge beyond the engine's anon
    limits = [_limit(s) for s in (a, b)]
    events = [_limit_events(s) for s in (a, b)]
    numbers = {"cgroup_usage_ready_a_bytes": usage[0], "cgroup_usage_ready_b_bytes": usage[1],
               "charge_beyond_engine_anon_a_bytes": ex_a, "charge_beyond_engine_anon_b_bytes": ex_b,
               "limit_a_bytes": limits[0], "limit_b_bytes": limits[1], "limit_events_a": events[0],
               "limit_events_b": events[1]}
    peak_usage = [median([(r.get("memory") or {}).get("cgroup_usage_peak_bytes") for r in s.records]) for s in (a, b)]
    near = [lim is not None and pk is not None and pk >= 0.9 * lim for lim, pk in zip(limits, peak_usage, strict=True)]
    reached = any(near) or any(e for e in events if e)
    source = "; ".join(f"{e}: {MEMORY_SOURCE.get(e, 'unknown')}" for e in sorted(engines(a, b)))
    text = (f"cgroup usage at ready {gib(usage[0])} vs {gib(usage[1])}; charged beyond the engine's anon memory "
            f"{gib(ex_a)} vs {gib(ex_b)}; limit {gib(limits[0])} vs {gib(limits[1])}, "
            f"limit events (failcnt/OOM) {_count(events[0])} vs {_count(events[1])}. No engine reads its cgroup to size the KV "
            f"cache ({source})")
    text += ("; the run came within 10% of its limit or hit it, so the charge could reach the engine"
             if reached else "; no limit came near, so the extra charge could not reach the engine")
    d_excess = delta((ex_a, ex_b))
    differs = material(d_excess, scale(rows)) or material(delta(usage), scale(rows))
    if link.kv_differs is None:
        explains, why = None, "the KV cache size is missing on one side"
    elif not link.kv_differs:
        explains, why = False, "the KV caches do not differ: there is no KV difference to explain"
    elif reached:
        explains, why = None, ("a limit was reached, which can hold an engine back, but no sizing rule reads the "
                               "cgroup: see the engine log")
    else:
        explains, why = False, "no sizing rule reads the cgroup, and no limit came near"
    # ``verdict`` keeps its older meaning here: the charge reached the engine.
    return Hypothesis(name, claim, SUPPORTED if reached else CONTRADICTED, text, numbers, differs, explains, why)


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


def shmem(a: Side, b: Side, rows: Sequence[Row], link: KvLink) -> Hypothesis:
    name, claim = "shmem", "shmem/tmpfs differs between the two"
    r = row(rows, "shmem")
    host = (at(a, "ready", "host_shmem_bytes"), at(b, "ready", "host_shmem_bytes"))
    host_start = (at(a, "start", "host_shmem_bytes"), at(b, "start", "host_shmem_bytes"))
    if r.delta_bytes is None and None in host:
        return Hypothesis(name, claim, NOT_MEASURED, "shmem not measured on one side or both")
    sc = scale(rows)
    d_host, d_start = delta(host), delta(host_start)
    text = (f"{r.title} at ready {gib(r.a_bytes)} vs {gib(r.b_bytes)} (delta {gib(r.delta_bytes)}); host Shmem "
            f"at ready {gib(host[0])} vs {gib(host[1])} (delta {gib(d_host)}), at start delta {gib(d_start)}")
    differs = material(r.delta_bytes, sc) or material(d_host, sc) or material(d_start, sc)
    numbers = {"a_bytes": r.a_bytes, "b_bytes": r.b_bytes, "delta_bytes": r.delta_bytes,
               "host_ready_delta_bytes": d_host, "host_start_delta_bytes": d_start}
    d = d_host if d_host is not None else r.delta_bytes
    return _weighed(name, claim, text, numbers, differs, link, "shmem", d, LOWERS_BOTH)


def other_processes(a: Side, b: Side, rows: Sequence[Row], link: KvLink) -> Hypothesis:
    """Memory outside the run that is neither page cache nor shmem (``outside_other``):
    the ledger's other page cache is page cache, weighed by ``page_cache``."""
    name = "other_processes"
    claim = "memory outside the run other than page cache and shmem (other processes, the kernel) differs"
    r = row(rows, "outside_other")
    if r.delta_bytes is None:
        return Hypothesis(name, claim, NOT_MEASURED, f"{r.title} not measured on one side or both")
    text = (f"{r.title} at ready {gib(r.a_bytes)} vs {gib(r.b_bytes)} (delta {gib(r.delta_bytes)}); page cache and "
            "shmem outside the run are weighed by page_cache and shmem")
    numbers = {"a_bytes": r.a_bytes, "b_bytes": r.b_bytes, "delta_bytes": r.delta_bytes}
    return _weighed(name, claim, text, numbers, material(r.delta_bytes, scale(rows)), link,
                    "memory outside the run", r.delta_bytes, LOWERS_BOTH)


def gpu_outside_cgroup(a: Side, b: Side, rows: Sequence[Row], link: KvLink) -> Hypothesis:
    name = "gpu_outside_cgroup"
    claim = "GPU allocations the cgroup does not see differ"
    r = row(rows, "gpu_outside_cgroup")
    if r.a_bytes is None or r.b_bytes is None:
        return Hypothesis(name, claim, NOT_MEASURED, "no NVML per-process reading on one side or both")
    d = r.delta_bytes
    # The engine's GPU memory holds the KV cache it sized: that part is the result, not a
    # cause. What else it holds (weights, activations, graphs) lowers free memory before sizing.
    kv = row(rows, "engine.kv_cache_bytes").delta_bytes
    on_host = {led.engine.get("buffers_on_host") for s in (a, b) for led in s.ledgers["ready"]}
    kv_on_gpu = on_host == {False}
    besides = None if d is None or (kv_on_gpu and kv is None) else d - (kv if kv_on_gpu and kv else 0)
    numbers = {"a_bytes": r.a_bytes, "b_bytes": r.b_bytes, "delta_bytes": d, "besides_kv_delta_bytes": besides}
    text = (f"NVML per-process used {gib(r.a_bytes)} vs {gib(r.b_bytes)} (delta {gib(d)}); without the KV cache "
            f"delta {gib(besides)}")
    return _weighed(name, claim, text, numbers, material(d, scale(rows)), link,
                    "the engine's GPU memory besides its KV cache", besides, LOWERS_BOTH)
