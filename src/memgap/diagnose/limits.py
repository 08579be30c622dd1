"""Case 4: a memory limit the engine reads moves its KV size; one it does not read
OOM-kills it when the cache it sized from something larger is allocated (or grows
under load).

vLLM's CPU worker reads the limit (vllm/utils/cpu_resource_utils.py 0.32.0,
``get_memory_node_info``: the NUMA node's MemTotal and available memory clamped by
``/sys/fs/cgroup/memory.max`` or ``memory/memory.limit_in_bytes`` as the process sees
them) and logs what it sized from: ``Auto set ({kv}/{total}) GiB for KV cache on node
{n}, with {requested} GiB requested memory for the worker. {non_kv} GiB memory was
consumed by non-kv usages.`` (cpu_worker.py), where ``requested = ceil(total x
gpu_memory_utilization)`` and ``kv = requested - non_kv``. A container runtime mounts
the container's own cgroup at /sys/fs/cgroup, so the limit shows there; memgap's
sandbox has no cgroup namespace, so the engine reads the host's root (no limit) while
the sandbox's limit still binds. GPU engines do not read host limits at all.

All functions are pure over stored records (``RunRecord.to_dict()`` mappings)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memgap.diagnose.base import LIMIT_NOT_READ, LIMIT_READ, Diagnosis, gib
from memgap.units import parse_size

GIB = 1 << 30
# vLLM prints GiB with two decimals: a figure is within half a hundredth of its bytes.
LOG_ROUNDING_BYTES = int(0.006 * GIB)


@dataclass(frozen=True)
class CpuSizing:
    """What vLLM's CPU worker said it sized from, in one run."""

    source: str  # "auto" or "explicit"
    total_bytes: int  # node MemTotal, clamped by the limit it saw
    kv_bytes: int
    requested_bytes: int | None  # auto: ceil(total x utilization)
    non_kv_bytes: int | None  # auto: the worker's RSS after its warm-up
    utilization: float | None
    node: int | None


def cpu_sizing(record: Mapping[str, Any]) -> CpuSizing | None:
    rep = record.get("engine_report") or {}
    extra = rep.get("extra") or {}
    if record.get("engine") != "vllm" or rep.get("log_variant") != "cpu":
        return None
    source, total, kv = extra.get("kv_cache_source"), rep.get("device_total_bytes"), rep.get("kv_cache_bytes")
    if source not in ("auto", "explicit") or total is None or kv is None:
        return None
    util = (record.get("engine_options") or {}).get("gpu_memory_utilization")
    return CpuSizing(str(source), int(total), int(kv), extra.get("requested_bytes"), extra.get("non_kv_bytes"),
                     float(util) if util is not None else None, extra.get("numa_node"))


def memory_limit(record: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """The run's memory limit and where it came from: its cgroup's, or the flag."""
    cf = record.get("cgroup_final") or {}
    env = record.get("environment_info") or {}
    if cf.get("limit_bytes") is not None:
        return int(cf["limit_bytes"]), "its cgroup's limit"
    if env.get("memory_limit_bytes") is not None:
        return int(env["memory_limit_bytes"]), "--memory-limit"
    given = (env.get("options") or {}).get("memory")
    if given:
        try:
            return parse_size(str(given), what="--memory"), f"--memory={given}"
        except Exception:  # noqa: BLE001 - an unreadable flag is an unknown limit
            return None, None
    return None, None


def clamped(s: CpuSizing, limit: int | None) -> bool:
    """Whether the total the engine sized from is the limit (it read the limit)."""
    return limit is not None and abs(s.total_bytes - limit) <= LOG_ROUNDING_BYTES


def rule_fits(s: CpuSizing) -> bool | None:
    """Whether the logged figures obey the rule: ``kv = ceil(total x u) - non_kv``."""
    if s.source == "explicit":
        return True
    if s.requested_bytes is None or s.non_kv_bytes is None:
        return None
    ok = abs(s.requested_bytes - s.non_kv_bytes - s.kv_bytes) <= 2 * LOG_ROUNDING_BYTES
    if s.utilization is not None:
        ok = ok and abs(math.ceil(s.total_bytes * s.utilization) - s.requested_bytes) <= 2 * LOG_ROUNDING_BYTES
    return ok


def _side(label: str, s: CpuSizing, limit: int | None, limit_src: str | None) -> str:
    read = (f"{gib(s.total_bytes)} (= its limit, {limit_src})" if clamped(s, limit) else
            f"{gib(s.total_bytes)}" + (f" (limit {gib(limit)} not read)" if limit is not None else " (no limit)"))
    return f"{label} read {read}"


def vllm_cpu_rule(a_records: Sequence[Mapping[str, Any]], b_records: Sequence[Mapping[str, Any]], labels: tuple[str, str],
                  threshold_bytes: int) -> dict[str, Any] | None:
    """The sizing-rule hypothesis for vLLM on a CPU (explain's ``kv_sizing_rule``), as
    Hypothesis keyword arguments; None when the runs are not vllm-cpu runs whose log
    gave the sizing line."""
    sides = []
    for recs in (a_records, b_records):
        pairs = [(x, r) for r in recs if (x := cpu_sizing(r)) is not None]
        if not pairs or len(pairs) != len(recs):
            return None
        pairs.sort(key=lambda p: p[0].kv_bytes)  # each side by its median run (by KV size)
        sides.append(pairs[len(pairs) // 2])
    (sa, ra), (sb, rb) = sides
    fits = [rule_fits(sa), rule_fits(sb)]
    la, la_src = memory_limit(ra)
    lb, lb_src = memory_limit(rb)
    d_total = sb.total_bytes - sa.total_bytes
    formula = "kv = ceil(total x gpu_memory_utilization) - non-KV memory, total = node MemTotal clamped by the " \
              "cgroup limit vLLM reads at /sys/fs/cgroup"
    numbers: dict[str, Any] = {
        "total_a_bytes": sa.total_bytes, "total_b_bytes": sb.total_bytes, "limit_a_bytes": la, "limit_b_bytes": lb,
        "kv_a_bytes": sa.kv_bytes, "kv_b_bytes": sb.kv_bytes, "utilization_a": sa.utilization,
        "utilization_b": sb.utilization, "non_kv_a_bytes": sa.non_kv_bytes, "non_kv_b_bytes": sb.non_kv_bytes,
        "source_a": sa.source, "source_b": sb.source, "formula": formula,
        "rule_input": "the memory total vLLM's CPU worker sized from (node MemTotal, clamped by the limit it reads)",
        "rule_input_delta_bytes": d_total,
    }
    sides_text = f"{_side(labels[0], sa, la, la_src)}; {_side(labels[1], sb, lb, lb_src)}"
    if None in fits:
        return {"name": "kv_sizing_rule", "claim": "", "verdict": "not measured",
                "evidence": f"the sizing line lacks the requested or non-KV figure: {sides_text}",
                "numbers": numbers, "differs": abs(d_total) >= threshold_bytes}
    ok = all(fits)
    text = (f"vLLM's CPU worker: {formula}. {sides_text}; KV {gib(sa.kv_bytes)} vs {gib(sb.kv_bytes)}"
            + ("; every run's log obeys it" if ok else "; a run's figures do not obey it"))
    numbers["explanation"] = _explanation(sa, sb, la, lb, la_src, lb_src, labels)
    return {"name": "kv_sizing_rule", "claim": "", "verdict": "supported" if ok else "contradicted",
            "evidence": text, "numbers": numbers, "differs": abs(d_total) >= threshold_bytes}


def _explanation(sa: CpuSizing, sb: CpuSizing, la: int | None, lb: int | None, la_src: str | None,
                 lb_src: str | None, labels: tuple[str, str]) -> str:
    if sa.source == "explicit" and sb.source == "explicit":
        return f"both sides were given their KV size (--kv-cache-memory): {gib(sa.kv_bytes)} vs {gib(sb.kv_bytes)}"
    parts = []
    for label, s, lim, src in ((labels[0], sa, la, la_src), (labels[1], sb, lb, lb_src)):
        if s.source == "explicit":
            parts.append(f"{label} was given {gib(s.kv_bytes)} (--kv-cache-memory)")
        else:
            why = f"its memory limit ({src})" if clamped(s, lim) else "node MemTotal"
            parts.append(f"{label} sized from {gib(s.total_bytes)}, {why}: ceil({gib(s.total_bytes)} x "
                         f"{s.utilization if s.utilization is not None else 'u'}) - {gib(s.non_kv_bytes)} non-KV "
                         f"= {gib(s.kv_bytes)}")
    return "; ".join(parts)


def limit_hypothesis(a_records: Sequence[Mapping[str, Any]], b_records: Sequence[Mapping[str, Any]],
                     labels: tuple[str, str], kv_delta_bytes: int | None, threshold_bytes: int) -> dict[str, Any] | None:
    """explain's ``memory_limit`` hypothesis (Hypothesis keyword arguments): a limit the
    engine read moved the total it sized from. None where no run is a vllm-cpu run."""
    rule = vllm_cpu_rule(a_records, b_records, labels, threshold_bytes)
    if rule is None:
        return None
    n = rule["numbers"]
    sa_total, sb_total = n["total_a_bytes"], n["total_b_bytes"]
    la, lb = n["limit_a_bytes"], n["limit_b_bytes"]
    read = [la is not None and abs(sa_total - la) <= LOG_ROUNDING_BYTES,
            lb is not None and abs(sb_total - lb) <= LOG_ROUNDING_BYTES]
    claim = "a memory limit the engine reads (vLLM's CPU worker: the cgroup limit at /sys/fs/cgroup) moved its KV size"
    d_total = sb_total - sa_total
    differs = any(read) and abs(d_total) >= threshold_bytes
    auto = n["source_a"] == "auto" and n["source_b"] == "auto"
    u = n["utilization_a"] if n["utilization_a"] == n["utilization_b"] else None
    implied = int(d_total * u) if auto and u is not None else None
    numbers = {**{k: n[k] for k in ("total_a_bytes", "total_b_bytes", "limit_a_bytes", "limit_b_bytes")},
               "read_limit_a": read[0], "read_limit_b": read[1], "kv_implied_delta_bytes": implied}
    which = [lab for lab, r in zip(labels, read, strict=True) if r]
    evidence = (f"vLLM's CPU worker sized from {gib(sa_total)} on {labels[0]} and {gib(sb_total)} on {labels[1]}; "
                + (f"{' and '.join(which)} sized from its memory limit" if which else "neither side's total was its limit"))
    if kv_delta_bytes is None:
        explains, why = None, "the KV cache size is missing on one side"
    elif abs(kv_delta_bytes) < threshold_bytes:
        explains, why = False, "the KV caches do not differ: there is no KV difference to explain"
    elif not differs:
        explains, why = False, "no side sized from a limit, or the totals are the same"
    elif implied is None:
        explains, why = None, "the KV size was given explicitly on a side (or the utilizations differ)"
    else:
        ok = implied * kv_delta_bytes > 0 and abs(implied - kv_delta_bytes) <= max(threshold_bytes, abs(kv_delta_bytes) // 5)
        explains = ok
        why = (f"the limit moved the total by {gib(d_total)}, and {u:g} x that is {gib(implied)} of KV cache, measured "
               f"{gib(kv_delta_bytes)}: the limit is the input that moved the KV size" if ok else
               f"{u:g} x the change in total is {gib(implied)}, but the KV cache moved {gib(kv_delta_bytes)}")
    return {"name": "memory_limit", "claim": claim, "verdict": "supported" if differs else "contradicted",
            "evidence": evidence, "numbers": numbers, "differs": differs, "explains_kv": explains, "kv_evidence": why}


# ------------------------------------------------------------------ OOM kill


def _asked(report: Mapping[str, Any]) -> tuple[int | None, str]:
    """What the engine had asked for, from its log, and how that was made up."""
    extra = report.get("extra") or {}
    kv, weights, compute = report.get("kv_cache_bytes"), report.get("model_bytes"), report.get("compute_bytes")
    if report.get("log_variant") == "cpu" and kv is not None:
        non_kv = extra.get("non_kv_bytes")
        line = "'Auto set'" if extra.get("kv_cache_source") == "auto" else "'Explicitly set'"
        if non_kv is not None:
            return int(kv) + int(non_kv), (f" for its worker: KV cache {gib(kv)} + {gib(non_kv)} of non-KV memory "
                                           f"(its {line} line)")
        return int(kv), f" for its KV cache (its {line} line)"
    parts = [(n, v) for n, v in (("weights", weights), ("KV cache", kv), ("buffers", compute)) if v is not None]
    if not parts:
        return None, ""
    return sum(int(v) for _, v in parts), ": " + " + ".join(f"{n} {gib(v)}" for n, v in parts) + " (its log)"


def oom_cause(failure: str, report: Mapping[str, Any], cgroup_final: Mapping[str, Any] | None,
              env_info: Mapping[str, Any], *, engine: str = "the engine") -> Diagnosis | None:
    """What an OOM-killed engine had asked for against the limit that killed it; None
    when the run was not OOM-killed or the engine's log said nothing of its size."""
    if "OOM-killed" not in failure:
        return None
    cf = cgroup_final or {}
    asked, how = _asked(report)
    limit = cf.get("limit_bytes") if cf.get("limit_bytes") is not None else env_info.get("memory_limit_bytes")
    if asked is None or limit is None:
        return None
    numbers: dict[str, Any] = {"asked_bytes": asked, "limit_bytes": limit, "cgroup_peak_bytes": cf.get("peak_bytes")}
    sentence = f"It had asked for {gib(asked)}{how} against the memory limit {gib(limit)}"
    if cf.get("peak_bytes") is not None:
        sentence += f", and its cgroup's peak reached {gib(cf['peak_bytes'])} with all its processes"
    sentence += "."
    total = report.get("device_total_bytes")
    mechanism = LIMIT_NOT_READ
    if report.get("log_variant") == "cpu" and total is not None:
        numbers["sized_from_bytes"] = total
        if abs(int(total) - int(limit)) <= LOG_ROUNDING_BYTES:
            mechanism = LIMIT_READ
            sentence += (f" {engine} sized from the limit ({gib(total)}), but its other processes and its memory "
                         "outside the KV cache did not fit beside that.")
        else:
            hidden = ("memgap's sandbox has no cgroup namespace, so /sys/fs/cgroup showed the host's root"
                      if env_info.get("name") == "sandbox" else "/sys/fs/cgroup did not show it")
            sentence += (f" {engine} sized from {gib(total)}, node MemTotal, not from the limit: the limit was not "
                         f"visible to it ({hidden}).")
    else:
        sentence += f" {engine[:1].upper()}{engine[1:]}'s sizing rule does not read host memory limits."
    remedy = ("Run it where the limit is visible to it (a container), give an explicit --kv-cache-memory below the "
              "limit less the engine's own memory, or raise the limit.")
    return Diagnosis(4, mechanism, sentence, numbers, remedy)
