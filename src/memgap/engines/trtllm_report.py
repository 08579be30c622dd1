"""trtllm-bench's ``--report_json``: the workload figures the engine measured itself.

Field names from tensorrt_llm/bench/dataclasses/reporting.py
(``ReportUtility.get_statistics_dict``) and statistics.py (``PercentileStats``), NVIDIA/
TensorRT-LLM main, 2025:

- ``engine``: ``model``, ``model_path``, ``engine_dir``, ``version``, ``backend``
  ("Pytorch" / "TRT"), ``dtype``, ``kv_cache_dtype``, ``quantization``;
- ``machine`` (null without CUDA): ``name``, ``memory.total`` (GiB: total_memory / 1024**3),
  ``clocks.mem``;
- ``world_info``: ``tp_size``, ``pp_size``, ``ep_size``, ``world_size``, ``max_batch_size``,
  ``max_num_tokens``, ``scheduling_policy``, ``kv_cache_percentage`` (the free-memory
  fraction, e.g. 0.9), ``issue_rate``;
- ``request_info``: ``num_requests``, ``avg_num_concurrent_requests``, ``avg_input_length``,
  ``avg_output_length``;
- ``performance``: ``total_latency_ms``, ``avg_request_latency_ms``,
  ``request_throughput_req_s``, ``system_output_throughput_tok_s``,
  ``system_total_throughput_tok_s``, ``output_throughput_per_user_tok_s``,
  ``output_throughput_per_gpu_tok_s``, ``request_latency_percentiles_ms``;
- ``streaming_metrics`` (``--streaming`` only): ``token_output_speed_tok_s``, ``avg_ttft_ms``,
  ``avg_tpot_ms``, ``tpot_percentiles``, ``ttft_percentiles``, ``gen_tps_percentiles``;
- a percentile object: ``p50``, ``p90``, ``p95``, ``p99``, ``minimum``, ``maximum``,
  ``average`` (older releases have no ``p90``).

A field the report lacks stays None and is named in ``missing``: never a silent 0."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from memgap.nested import value_at

GIB = 1 << 30

# The figures a run's record takes from the report (missing ones are listed).
EXPECTED = (
    "request_info.num_requests", "request_info.avg_output_length", "performance.total_latency_ms",
    "performance.request_throughput_req_s", "performance.system_output_throughput_tok_s",
    "performance.request_latency_percentiles_ms",
)


@dataclass(frozen=True)
class BenchReport:
    num_requests: int | None
    duration_s: float | None
    request_throughput_per_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None
    avg_input_tokens: float | None
    avg_output_tokens: float | None
    e2e_s: dict[str, float | int | None]
    ttft_s: dict[str, float | int | None]
    tpot_s: dict[str, float | int | None]
    device_name: str | None
    device_total_bytes: int | None
    kv_fraction: float | None
    version: str | None
    backend: str | None
    missing: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def output_tokens(self) -> int | None:
        """Total output tokens: trtllm-bench reports the mean per request."""
        if self.num_requests is None or self.avg_output_tokens is None:
            return None
        return round(self.num_requests * self.avg_output_tokens)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _percentiles_s(p: Any, n: int | None) -> dict[str, float | int | None]:
    """A percentile object in ms -> memgap's shape in seconds (p50, p90, p99, mean, n)."""
    out: dict[str, float | int | None] = dict.fromkeys(("p50", "p90", "p99", "mean"))
    out["n"] = n if isinstance(p, dict) else 0
    if isinstance(p, dict):
        for ours, theirs in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("mean", "average")):
            v = _num(p.get(theirs))
            out[ours] = v / 1000.0 if v is not None else None
    return out


def parse_bench_report(text: str) -> BenchReport:
    """Raises ValueError when the text is not a JSON object."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"a report is a JSON object, got {type(doc).__name__}")
    n_raw = value_at(doc, "request_info.num_requests")
    n = int(n_raw) if isinstance(n_raw, int) and not isinstance(n_raw, bool) else None
    latency_ms = _num(value_at(doc, "performance.total_latency_ms"))
    machine: dict[str, Any] = doc["machine"] if isinstance(doc.get("machine"), dict) else {}
    mem_gib = _num(machine.get("memory.total"))  # one key, with a dot in it
    version = value_at(doc, "engine.version")
    backend = value_at(doc, "engine.backend")
    name = machine.get("name")
    return BenchReport(
        num_requests=n,
        duration_s=latency_ms / 1000.0 if latency_ms is not None else None,
        request_throughput_per_s=_num(value_at(doc, "performance.request_throughput_req_s")),
        output_tokens_per_s=_num(value_at(doc, "performance.system_output_throughput_tok_s")),
        total_tokens_per_s=_num(value_at(doc, "performance.system_total_throughput_tok_s")),
        avg_input_tokens=_num(value_at(doc, "request_info.avg_input_length")),
        avg_output_tokens=_num(value_at(doc, "request_info.avg_output_length")),
        e2e_s=_percentiles_s(value_at(doc, "performance.request_latency_percentiles_ms"), n),
        ttft_s=_percentiles_s(value_at(doc, "streaming_metrics.ttft_percentiles"), n),
        tpot_s=_percentiles_s(value_at(doc, "streaming_metrics.tpot_percentiles"), n),
        device_name=name if isinstance(name, str) else None,
        device_total_bytes=round(mem_gib * GIB) if mem_gib is not None else None,
        kv_fraction=_num(value_at(doc, "world_info.kv_cache_percentage")),
        version=str(version) if isinstance(version, (str, int, float)) else None,
        backend=backend if isinstance(backend, str) else None,
        missing=tuple(k for k in EXPECTED if value_at(doc, k) is None),
        raw=doc,
    )


def workload_summary(report: BenchReport) -> dict[str, Any]:
    """The report in the shape of ``WorkloadSummary.to_dict()``. trtllm-bench counts the
    requests it completed and reports no errors apart, so ``requests_errored`` is unknown
    (None); TTFT only with ``--streaming``; TPOT (a per-request mean) is not memgap's
    inter-token gap distribution, so ``itl_s`` stays empty and TPOT is kept beside it."""
    return {
        "requests_ok": report.num_requests,
        "requests_errored": None,
        "duration_s": report.duration_s,
        "request_throughput_per_s": report.request_throughput_per_s,
        "output_tokens": report.output_tokens,
        "output_tokens_per_s": report.output_tokens_per_s,
        "ttft_s": report.ttft_s,
        "itl_s": _percentiles_s(None, 0),
        "e2e_s": report.e2e_s,
        "queue_delay_s": _percentiles_s(None, 0),
        "tpot_s": report.tpot_s,
        "token_count_mismatches": None,
        "errors_by_kind": {},
        "source": "trtllm-bench report_json",
        "missing": list(report.missing),
    }
