"""The side-by-side table of ``memgap run`` (pure: records in, a rich Table out)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table

from memgap.nested import value_at
from memgap.units import format_bytes, format_seconds


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else format(v, fmt)


ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("status", "status", str),
    ("requests ok / errored", "", str),
    ("output tokens", "output_tokens", _num("d")),
    ("output tokens/s", "output_tokens_per_s", _num(".1f")),
    ("requests/s", "request_throughput_per_s", _num(".2f")),
    ("TTFT p50", "ttft_s.p50", format_seconds),
    ("TTFT p99", "ttft_s.p99", format_seconds),
    ("ITL p50", "itl_s.p50", format_seconds),
    ("E2E p50", "e2e_s.p50", format_seconds),
    ("E2E p99", "e2e_s.p99", format_seconds),
    ("engine: model", "engine_report.model_bytes", format_bytes),
    ("engine: KV cache", "engine_report.kv_cache_bytes", format_bytes),
    ("engine: KV tokens", "engine_report.kv_cache_tokens", _num("d")),
    ("engine: compute", "engine_report.compute_bytes", format_bytes),
    ("host used peak", "memory.host_used_peak_bytes", format_bytes),
    ("host used incl. cache peak", "memory.host_used_incl_cache_peak_bytes", format_bytes),
    ("process RSS peak", "memory.process_rss_peak_bytes", format_bytes),
    ("process anon peak", "memory.process_anon_peak_bytes", format_bytes),
    ("cgroup usage peak", "memory.cgroup_usage_peak_bytes", format_bytes),
    ("cgroup anon peak", "memory.cgroup_anon_peak_bytes", format_bytes),
    ("cgroup file peak", "memory.cgroup_file_peak_bytes", format_bytes),
    ("memory samples", "memory.samples", _num("d")),
)


def comparison_table(records: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="memgap run", show_lines=False)
    table.add_column("")
    for r in records:
        table.add_column(f"{r['environment']}\n{r['run_id']}", justify="right")
    for label, path, fmt in ROWS:
        if label == "requests ok / errored":
            # a self-driven engine (trtllm-bench) does not report its errored requests: "-"
            table.add_row(label, *(f"{_count(r.get('requests_ok', 0))} / {_count(r.get('requests_errored', 0))}"
                                   for r in records))
            continue
        table.add_row(label, *(fmt(value_at(r, path)) for r in records))
    return table


def _count(v: object) -> str:
    return "-" if v is None else str(v)
