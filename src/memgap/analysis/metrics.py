"""The metrics compared across environments, and how each is read from a run record.

A metric's name carries its unit (STYLE.md, 3). ``relative_margin`` is the default
equivalence margin as a fraction of the baseline mean; ``None`` means that an exact
quantity is expected (the engine's KV cache is fixed by its options)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memgap.errors import UsageError
from memgap.record import field_reader
from memgap.units import format_bytes, format_seconds


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str  # "bytes", "s", "tokens/s", "requests/s"
    description: str
    read: Callable[[Mapping[str, Any]], float | None]

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "bytes":
            return format_bytes(value, precision=2)
        if self.unit == "s":
            return ("-" if value < 0 else "") + format_seconds(abs(value))
        return f"{value:.4g}"


def _path(*keys: str) -> Callable[[Mapping[str, Any]], float | None]:
    # The path is checked against the run record's model at import (memgap.record).
    return field_reader(".".join(keys))


METRICS: tuple[Metric, ...] = (
    Metric("output_tokens_per_s", "tokens/s", "output throughput", _path("output_tokens_per_s")),
    Metric("request_throughput_per_s", "requests/s", "request throughput", _path("request_throughput_per_s")),
    Metric("ttft_p50_s", "s", "time to first token, median", _path("ttft_s", "p50")),
    Metric("itl_p50_s", "s", "inter-token latency, median", _path("itl_s", "p50")),
    Metric("e2e_p50_s", "s", "request latency, median", _path("e2e_s", "p50")),
    Metric("kv_cache_bytes", "bytes", "KV cache (engine)", _path("engine_report", "kv_cache_bytes")),
    Metric("engine_peak_bytes", "bytes", "peak memory (engine's own figure)", _path("engine_report", "peak_bytes")),
    Metric("model_bytes", "bytes", "model weights (engine)", _path("engine_report", "model_bytes")),
    Metric("host_used_peak_bytes", "bytes", "host used memory, peak", _path("memory", "host_used_peak_bytes")),
    Metric("cgroup_usage_peak_bytes", "bytes", "cgroup usage, peak", _path("memory", "cgroup_usage_peak_bytes")),
    Metric("process_rss_peak_bytes", "bytes", "engine process RSS, peak", _path("memory", "process_rss_peak_bytes")),
    Metric("ready_s", "s", "time until the engine was ready", _path("ready_s")),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown metric {name!r} (known: {', '.join(BY_NAME)})") from None
