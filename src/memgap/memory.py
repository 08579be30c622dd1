"""The derived memory model of one run, computed from its raw series (pure)."""

from __future__ import annotations

from typing import Any

from memgap.series import COLUMNS, MemorySeries

MARKS = ("start", "ready", "end")


def _max_opt(*vals: int | float | None) -> int | float | None:
    present = [v for v in vals if v is not None]
    return max(present) if present else None


def memory_summary(series: MemorySeries) -> dict[str, Any]:
    """Values at engine start, ready and end, at the peak, and the kernel's watermarks.

    ``cgroup_usage_peak_bytes`` is the larger of the sampled maximum and the kernel's own
    watermark (memory.peak / max_usage_in_bytes), so a spike between samples counts.
    ``process_rss_peak_bytes`` likewise takes VmHWM (the largest per-process one) into
    account. Host "used" is MemTotal - MemAvailable (memory the kernel cannot reclaim);
    ``host_used_incl_cache_peak_bytes`` is MemTotal - MemFree, the view of cudaMemGetInfo on
    unified-memory GPUs."""
    n = len(series)
    at: dict[str, dict[str, Any] | None] = {}
    for mark in MARKS:
        t = series.marks.get(mark)
        i = series.index_at(t) if t is not None else None
        at[mark] = series.row(i) if i is not None else None
    has_cgroup = any(v is not None for v in series.columns["cgroup_usage_bytes"])
    peak_col = "cgroup_usage_bytes" if has_cgroup else "host_used_bytes"
    vals = series.columns[peak_col]
    # The ledger at peak needs the breakdown, which the native loop reads on full ticks
    # only (10 Hz by default; every row from the Python loop): the highest full row. The
    # sampled and kernel peaks below still count every row.
    full = [i for i, v in enumerate(series.columns["host_free_bytes"]) if v is not None]
    peak_i = None
    for i in full or range(n):
        v = vals[i]
        if v is not None and (peak_i is None or v > vals[peak_i]):
            peak_i = i
    at["peak"] = series.row(peak_i) if peak_i is not None else None

    total = series.host_total_bytes
    free_min = _min(series, "host_free_bytes")
    used_incl_cache_peak = (total - free_min) if (total is not None and free_min is not None) else None
    sampled_cg_peak = series.peak("cgroup_usage_bytes")
    return {
        "samples": n,
        "rate_hz": series.rate_hz,
        "duration_s": series.columns["t_s"][-1] if n else None,
        "host_total_bytes": total,
        "host_used_peak_bytes": series.peak("host_used_bytes"),
        "host_used_incl_cache_peak_bytes": used_incl_cache_peak,
        "host_cached_peak_bytes": series.peak("host_cached_bytes"),
        "process_rss_peak_bytes": _max_opt(series.peak("process_rss_bytes"), series.kernel_process_hwm_bytes),
        "process_rss_sampled_peak_bytes": series.peak("process_rss_bytes"),
        "process_hwm_bytes": series.kernel_process_hwm_bytes,
        "process_anon_peak_bytes": series.peak("process_anon_bytes"),
        "process_pss_peak_bytes": series.peak("process_pss_bytes"),
        "cgroup_usage_peak_bytes": _max_opt(sampled_cg_peak, series.kernel_cgroup_peak_bytes) if has_cgroup else None,
        "cgroup_usage_sampled_peak_bytes": sampled_cg_peak,
        "cgroup_kernel_peak_bytes": series.kernel_cgroup_peak_bytes,
        "cgroup_anon_peak_bytes": series.peak("cgroup_anon_bytes"),
        "cgroup_file_peak_bytes": series.peak("cgroup_file_bytes"),
        "kv_usage_ratio_peak": series.peak("kv_usage_ratio"),
        "requests_waiting_peak": series.peak("requests_waiting"),
        "at": at,
        "errors": list(series.errors),
    }


def _min(series: MemorySeries, column: str) -> int | None:
    vals = [v for v in series.columns[column] if v is not None]
    return min(vals) if vals else None


__all__ = ["COLUMNS", "memory_summary"]
