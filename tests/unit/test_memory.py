from __future__ import annotations

from memgap.memory import memory_summary
from memgap.series import COLUMNS, MemorySeries


def series_of(rows: list[dict[str, object]], **kw: object) -> MemorySeries:
    s = MemorySeries(rate_hz=10.0)
    for row in rows:
        for c in COLUMNS:
            s.columns[c].append(row.get(c))
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_peaks_marks_and_watermarks() -> None:
    s = series_of(
        [
            {"t_s": 0.0, "host_used_bytes": 100, "host_free_bytes": 900, "cgroup_usage_bytes": 10, "process_rss_bytes": 5},
            {"t_s": 0.1, "host_used_bytes": 300, "host_free_bytes": 600, "cgroup_usage_bytes": 50, "process_rss_bytes": 40},
            {"t_s": 0.2, "host_used_bytes": 200, "host_free_bytes": 700, "cgroup_usage_bytes": 30, "process_rss_bytes": 20},
        ],
        host_total_bytes=1000,
        kernel_cgroup_peak_bytes=80,  # a spike between samples
        kernel_process_hwm_bytes=35,
    )
    s.marks = {"start": 0.0, "ready": 0.05, "end": 0.2}
    m = memory_summary(s)
    assert m["samples"] == 3
    assert m["host_used_peak_bytes"] == 300
    assert m["host_used_incl_cache_peak_bytes"] == 1000 - 600
    assert m["cgroup_usage_sampled_peak_bytes"] == 50
    assert m["cgroup_usage_peak_bytes"] == 80  # the kernel saw more than the samples
    assert m["process_rss_peak_bytes"] == 40  # sampled max beats a smaller per-process HWM
    assert m["at"]["ready"]["t_s"] == 0.1  # first sample at or after the mark
    assert m["at"]["peak"]["cgroup_usage_bytes"] == 50
    assert m["at"]["end"]["host_used_bytes"] == 200


def test_no_cgroup_means_none_not_zero() -> None:
    s = series_of([{"t_s": 0.0, "host_used_bytes": 100}], host_total_bytes=None)
    m = memory_summary(s)
    assert m["cgroup_usage_peak_bytes"] is None
    assert m["process_rss_peak_bytes"] is None
    assert m["host_used_incl_cache_peak_bytes"] is None
    assert m["at"]["ready"] is None  # never marked ready
    assert m["at"]["peak"]["host_used_bytes"] == 100


def test_empty_series() -> None:
    m = memory_summary(MemorySeries(rate_hz=10.0))
    assert m["samples"] == 0 and m["duration_s"] is None and m["host_used_peak_bytes"] is None
    assert m["at"]["peak"] is None


def test_series_round_trips_through_dict() -> None:
    s = series_of([{"t_s": 0.0, "host_used_bytes": 1}], kernel_cgroup_peak_bytes=7)
    s.marks = {"ready": 0.0}
    back = MemorySeries.from_dict(s.to_dict())
    assert back.to_dict() == s.to_dict()
