"""TensorRT-LLM log lines rebuilt from NVIDIA/TensorRT-LLM:
tensorrt_llm/_torch/pyexecutor/_util.py (PyTorch backend) and
cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp (C++ lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.engines.logs import detect_engine, parse_engine_log

GiB = 1 << 30
PY = "[12/20/2025-04:21:10] [TRT-LLM] [I] "
CPP = "[TensorRT-LLM][INFO] "


def peak_line(peak: float, avail: float, frac: float, per_token: int, total: float, tmp: float, *, variant: str) -> str:
    head = (f"Peak memory during memory usage profiling (torch + non-torch): {peak:.2f} GiB, "
            f"available KV cache memory when calculating max tokens: {avail:.2f} GiB")
    if variant == "oldest":
        return head
    if variant == "kv size is":
        return head + f", fraction is set {frac}, kv size is {per_token}"
    if variant == "tmp kv_mem":
        return head + (f", fraction is set {frac}, kv size is {per_token}. device total memory {total:.2f} GiB, "
                       f", tmp kv_mem {tmp:.2f} GiB")
    return head + (f", fraction is set {frac}, kv size per token is {per_token}. device total memory {total:.2f} GiB, "
                   f"temporary kv cache memory during profiling {tmp:.2f} GiB")


def seed_log(variant: str = "current") -> str:
    # The seed study's native run: peak 78.31 GiB on a 119.64 GiB GB10.
    return "\n".join([
        PY + f"Prefetching {14.19:.2f}GB checkpoint files.",
        PY + f"Memory used after loading model weights (inside torch) in memory usage profiling: {14.19:.2f} GiB",
        PY + f"Memory used after loading model weights (outside torch) in memory usage profiling: {1.02:.2f} GiB",
        CPP + "Number of tokens per block: 32.",
        CPP + f"[MemUsageChange] Allocated {0.56:.2f} GiB for max tokens in paged KV cache ({8224}).",
        PY + f"Memory used outside torch (e.g., NCCL and CUDA graphs) in memory usage profiling: {3.20:.2f} GiB",
        PY + peak_line(78.31, 37.26, 0.9, 57344, 119.64, 0.56, variant=variant),
        PY + f"Estimated max memory in KV cache : {37.26:.2f} GiB",
        CPP + "Number of tokens per block: 32.",
        CPP + f"[MemUsageChange] Allocated {37.25:.2f} GiB for max tokens in paged KV cache ({697504}).",
    ])


@pytest.mark.parametrize("variant", ["current", "tmp kv_mem"])
def test_pytorch_backend_takes_last_allocation(variant: str) -> None:
    text = seed_log(variant)
    r = parse_engine_log("trtllm", text)
    assert r.peak_bytes == round(78.31 * GiB)
    assert r.kv_cache_bytes == round(37.25 * GiB)  # the real cache, not the 0.56 GiB profiling one
    assert r.kv_cache_tokens == 697504
    assert r.kv_fraction == pytest.approx(0.9)
    assert r.device_total_bytes == round(119.64 * GiB)
    assert r.model_bytes == round(14.19 * GiB)
    assert r.extra["kv_available_bytes"] == round(37.26 * GiB)
    assert r.extra["kv_bytes_per_token"] == 57344
    assert r.extra["tmp_kv_bytes"] == round(0.56 * GiB)
    assert r.extra["kv_allocations"] == 2
    assert r.extra["outside_torch_bytes"] == round(3.20 * GiB)
    assert r.extra["estimated_kv_bytes"] == round(37.26 * GiB)
    assert r.extra["tokens_per_block"] == 32
    assert r.extra["prefetch_bytes"] == round(14.19 * GiB)
    assert detect_engine(text) == "trtllm"


@pytest.mark.parametrize("variant", ["oldest", "kv size is"])
def test_older_profiling_lines(variant: str) -> None:
    r = parse_engine_log("trtllm", PY + peak_line(78.31, 37.26, 0.9, 57344, 119.64, 0.56, variant=variant))
    assert r.peak_bytes == round(78.31 * GiB)
    # no allocation line: the computed budget stands in for the cache
    assert r.kv_cache_bytes == round(37.26 * GiB)
    assert r.device_total_bytes is None
    assert (r.kv_fraction is None) == (variant == "oldest")


def test_cpp_backend_lines() -> None:
    text = "\n".join([
        CPP + f"Memory usage when calculating max tokens in paged kv cache: total: {79.10:.2f} GiB, available: {63.62:.2f} GiB",
        CPP + "Number of blocks in KV cache primary pool: 4607",
        CPP + "Number of blocks in KV cache secondary pool: 0, onboard blocks to primary memory before reuse: true",
        CPP + "Number of tokens per block: 64.",
        CPP + f"[MemUsageChange] Allocated {62.99:.2f} GiB for max tokens in paged KV cache ({294848}).",
    ])
    r = parse_engine_log("trtllm", text)
    assert r.device_total_bytes == round(79.10 * GiB)
    assert r.extra["free_at_sizing_bytes"] == round(63.62 * GiB)
    assert r.kv_cache_blocks == 4607
    assert r.kv_cache_tokens == 294848
    assert r.kv_cache_bytes == round(62.99 * GiB)


def test_legacy_outside_torch_wording() -> None:
    r = parse_engine_log("trtllm", PY + "Memory used outside torch in memory usage profiling: 1.25 GiB")
    assert r.extra["outside_torch_bytes"] == round(1.25 * GiB)


def test_trtllm_bench_report() -> None:
    # tensorrt_llm/bench/dataclasses/reporting.py (1.x): f"Request Throughput (req/sec):{pad}{x:.4f}" ...
    report = "\n".join([
        "===========================================================",
        "= PYTORCH BACKEND",
        "===========================================================",
        "Model:                  deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "TensorRT-LLM Version:   1.1.0rc2",
        "KV Memory Percentage:   90.00%",
        "===========================================================",
        "= PERFORMANCE OVERVIEW",
        "===========================================================",
        f"Request Throughput (req/sec):                     {0.9308:.4f}",
        f"Total Output Throughput (tokens/sec):             {119.1443:.4f}",
        f"Total Token Throughput (tokens/sec):              {238.2886:.4f}",
        f"Total Latency (ms):                               {107437.1234:.4f}",
    ])
    r = parse_engine_log("trtllm", report)
    assert r.extra["request_throughput"] == pytest.approx(0.9308)
    assert r.extra["output_throughput"] == pytest.approx(119.1443)
    assert r.extra["token_throughput"] == pytest.approx(238.2886)
    assert r.extra["total_latency_s"] == pytest.approx(107.4371234)
    assert r.extra["trtllm_version"] == "1.1.0rc2"
    assert r.kv_fraction == pytest.approx(0.9)


def test_old_trtllm_bench_statistics_block() -> None:
    # 0.12 reporting: f"Token Throughput (tokens/sec):\t{x}" and f"Total Latency (seconds):\t{x}"
    report = ("Number of requests:\t\t3000\nToken Throughput (tokens/sec):\t23405.927228471104\n"
              "Request Throughput (req/sec):\t182.8588064724305\nTotal Latency (seconds):\t16.406100739\n"
              "KV Memory Percentage:\t99.0%\nIssue Rate (req/sec):\t3.680275266452667e+18")
    r = parse_engine_log("trtllm", report)
    assert r.extra["num_requests"] == 3000
    assert r.extra["output_throughput"] == pytest.approx(23405.927228471104)
    assert r.extra["total_latency_s"] == pytest.approx(16.406100739)
    assert r.kv_fraction == pytest.approx(0.99)


# --- fixtures (tests/fixtures/logs/README.md says how each was made)

FIXTURES = Path(__file__).parents[3] / "fixtures" / "logs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_cpp_executor_fixture() -> None:
    r = parse_engine_log("trtllm", fixture("trtllm-cpp-executor-rebuilt.log"))
    assert r.log_variant == "cpp" and r.found_any and r.missing == ()
    # "Memory usage when calculating max tokens in paged kv cache: total: 79.10 GiB, available: 70.48 GiB"
    assert r.device_total_bytes == round(79.10 * GiB)
    assert r.extra["free_at_sizing_bytes"] == round(70.48 * GiB)
    assert r.kv_cache_blocks == 8119
    assert r.extra["tokens_per_block"] == 64
    # "[MemUsageChange] Allocated 63.43 GiB for max tokens in paged KV cache (519616)."
    assert r.kv_cache_bytes == round(63.43 * GiB)
    assert r.kv_cache_tokens == 519_616
    assert r.peak_bytes is None and r.kv_fraction is None


def test_older_pytorch_backend_with_two_ranks_fixture() -> None:
    r = parse_engine_log("trtllm", fixture("trtllm-pytorch-tp2-kvsizeis-rebuilt.log"))
    assert r.log_variant == "pytorch"
    assert r.peak_bytes == round(35.12 * GiB)  # rank 0's; [RANK 1] says 35.15
    assert r.extra["kv_available_bytes"] == round(39.75 * GiB)
    assert r.kv_fraction == pytest.approx(0.9)
    assert r.extra["kv_bytes_per_token"] == 131_072
    assert r.model_bytes == round(30.71 * GiB)
    assert r.extra["outside_torch_bytes"] == round(1.47 * GiB)
    assert r.extra["estimated_kv_tokens"] == 325_638
    # the last allocation is the real cache, not the 0.19 GiB (1536 tokens) profiling one
    assert r.kv_cache_bytes == round(39.75 * GiB)
    assert r.kv_cache_tokens == 325_632
    # this release's Peak line stops before "device total memory"
    assert r.device_total_bytes is None and r.missing == ("device_total_bytes",)
    assert not any("[RANK 1]" in e for e in r.evidence)


def test_seed_fixture_is_complete() -> None:
    r = parse_engine_log("trtllm", fixture("native/trtllm-bench-deepseek.log"))
    assert r.log_variant == "pytorch" and r.missing == ()
    assert r.peak_bytes == round(70.05 * GiB)
    assert r.kv_cache_bytes == round(44.68 * GiB)


def test_newer_cpp_blocks_line() -> None:
    # kvCacheManager.cpp, newer builds: "Max KV cache blocks per sequence: %d [window size=%d],
    # tokens per block=%d, primary blocks=%d, secondary blocks=%d, max sequence length=%d"
    line = CPP + ("Max KV cache blocks per sequence: 256 [window size=16384], tokens per block=64, "
                  "primary blocks=61848, secondary blocks=0, max sequence length=16384")
    assert parse_engine_log("trtllm", line).kv_cache_blocks == 61848


def test_allocation_line_without_final_period() -> None:
    line = CPP + "[MemUsageChange] Allocated 16.05 GiB for max tokens in paged KV cache (263008)"
    r = parse_engine_log("trtllm", line)
    assert r.kv_cache_bytes == round(16.05 * GiB) and r.kv_cache_tokens == 263_008
    assert r.found_any and r.log_variant == "pytorch"  # lines both runtimes print: the default


def test_benchmark_report_alone_is_not_a_memory_log() -> None:
    report = "Request Throughput (req/sec):                     0.9308\nKV Memory Percentage:   90.00%"
    r = parse_engine_log("trtllm", report)
    assert r.extra["request_throughput"] == pytest.approx(0.9308)
    assert not r.found_any and r.log_variant is None
    assert r.missing == ("peak_bytes", "kv_available_bytes", "kv_cache_bytes", "kv_cache_tokens",
                         "model_bytes", "device_total_bytes")  # kv_fraction came from the report
