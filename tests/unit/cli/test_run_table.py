from __future__ import annotations

from rich.console import Console

from memgap.cli.run_table import comparison_table


def render(records: list[dict[str, object]]) -> str:
    c = Console(width=200, record=True)
    c.print(comparison_table(records))
    return c.export_text()


def test_side_by_side_with_units_and_unknowns() -> None:
    ok = {
        "environment": "native", "run_id": "aaa111", "status": "ok", "requests_ok": 6, "requests_errored": 1,
        "output_tokens": 48, "output_tokens_per_s": 12.345, "ttft_s": {"p50": 0.25, "p99": 1.5},
        "engine_report": {"kv_cache_bytes": 180 * 2**20, "kv_cache_tokens": 8192},
        "memory": {"cgroup_usage_peak_bytes": None, "host_used_peak_bytes": 3 * 2**30},
    }
    failed = {"environment": "sandbox", "run_id": "bbb222", "status": "failed", "engine_report": {}, "memory": {}}
    text = render([ok, failed])
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in text.splitlines() if line.count("│") >= 3}
    assert lines["status"] == ["ok", "failed"]
    assert lines["requests ok / errored"] == ["6 / 1", "0 / 0"]
    assert lines["output tokens/s"] == ["12.3", "-"]
    assert lines["TTFT p50"] == ["250.0 ms", "-"]
    assert lines["TTFT p99"] == ["1.50 s", "-"]
    assert lines["engine: KV cache"] == ["180.0 MiB", "-"]
    assert lines["engine: KV tokens"] == ["8192", "-"]
    assert lines["cgroup usage peak"] == ["-", "-"]  # unknown is a dash, never 0
    assert lines["host used peak"] == ["3.0 GiB", "-"]
    assert "aaa111" in text and "bbb222" in text
