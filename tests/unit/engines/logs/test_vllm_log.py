# ruff: noqa: UP031 - lines are rebuilt with vLLM's own %-format strings, verbatim
"""vLLM log lines rebuilt from the format strings in vllm-project/vllm:
vllm/v1/worker/gpu_model_runner.py, vllm/v1/worker/gpu_worker.py,
vllm/v1/core/kv_cache_utils.py, and (v0) vllm/worker/worker.py, executor_base.py."""

from __future__ import annotations

import pytest

from memgap.engines.logs import detect_engine, parse_engine_log

GiB = 1 << 30
PREFIX = "(EngineCore_0 pid=4242) INFO 05-06 12:00:01 [gpu_worker.py:123] "


def test_v1_separate_lines_with_prefixes_and_thousands() -> None:
    text = "\n".join([
        # gpu_model_runner.py: "Model loading took %s GiB memory and %.6f seconds"
        PREFIX + "Model loading took %s GiB memory and %.6f seconds" % ("14.99", 6.204724),
        # gpu_worker.py: "Available KV cache memory: %s GiB"
        PREFIX + "Available KV cache memory: %s GiB" % "37.26",
        # kv_cache_utils.py: "GPU KV cache size: %s tokens", f"{num_tokens:,}"
        PREFIX + "GPU KV cache size: %s tokens" % f"{697_728:,}",
        PREFIX + "Maximum concurrency for %s tokens per request: %.2fx" % (f"{8_192:,}", 85.17),
        # gpu_model_runner.py: "Graph capturing finished in %.0f secs, took %.2f GiB"
        PREFIX + "Graph capturing finished in %.0f secs, took %.2f GiB" % (12, 0.53),
    ])
    r = parse_engine_log("vllm", text)
    assert r.model_bytes == round(14.99 * GiB)
    assert r.kv_cache_bytes == round(37.26 * GiB)
    assert r.kv_cache_tokens == 697_728
    assert r.compute_bytes == round(0.53 * GiB)
    assert r.extra["max_concurrency"] == pytest.approx(85.17)
    assert r.extra["max_model_len"] == 8192
    assert r.extra["model_load_s"] == pytest.approx(6.204724)
    assert r.extra["graph_capture_s"] == 12
    assert len(r.evidence) == 5
    assert detect_engine(text) == "vllm"


def test_newer_one_line_capacity_and_older_load_format() -> None:
    text = "\n".join([
        # older gpu_model_runner.py: "Model loading took %.4f GiB and %.6f seconds"
        "INFO 03-01 10:00:00 [gpu_model_runner.py:1] Model loading took %.4f GiB and %.6f seconds" % (0.2389, 1.5),
        # newer kv_cache_utils.py: both figures on one line
        "INFO [kv_cache_utils.py:2] GPU KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"
        % (f"{1_234_567:,}", f"{32_768:,}", 37.68),
        "INFO [gpu_worker.py:3] Available KV cache memory: %.2f GiB" % 56.5,
    ])
    r = parse_engine_log("vllm", text)
    assert r.model_bytes == round(0.2389 * GiB)
    assert r.kv_cache_tokens == 1_234_567
    assert r.extra["max_model_len"] == 32_768
    assert r.kv_cache_bytes == round(56.5 * GiB)


def test_v0_profiling_message() -> None:
    # worker.py (v0) multi-line message; executor_base.py "# %s blocks: %d, # CPU blocks: %d"
    text = "\n".join([
        "INFO 03-23 19:17:47 model_runner.py:1116] Loading model weights took 14.2717 GB",
        "INFO 03-23 19:17:49 worker.py:266] Memory profiling takes 1.20 seconds",
        "INFO 03-23 19:17:49 worker.py:266] the current vLLM instance can use total_gpu_memory (%.2fGiB)"
        " x gpu_memory_utilization (%.2f) = %.2fGiB" % (31.74, 0.90, 28.57),
        "INFO 03-23 19:17:49 worker.py:266] model weights take %.2fGiB; non_torch_memory takes %.2fGiB; "
        "PyTorch activation peak memory takes %.2fGiB; the rest of the memory reserved for KV Cache is %.2fGiB."
        % (14.27, 0.09, 1.40, 12.80),
        "INFO 03-23 19:17:49 executor_base.py:108] # %s blocks: %d, # CPU blocks: %d" % ("CUDA", 14984, 4681),
        "INFO 03-23 19:17:49 executor_base.py:113] Maximum concurrency for %s tokens per request: %.2fx" % (2048, 117.06),
    ])
    r = parse_engine_log("vllm", text)
    assert r.model_bytes == round(14.2717 * GiB)  # the load line wins over the rounded profile figure
    assert r.device_total_bytes == round(31.74 * GiB)
    assert r.kv_fraction == pytest.approx(0.90)
    assert r.kv_cache_bytes == round(12.80 * GiB)
    assert r.kv_cache_blocks == 14984
    assert r.extra["activation_peak_bytes"] == round(1.40 * GiB)
    assert r.extra["non_torch_bytes"] == round(0.09 * GiB)
    assert r.extra["requested_bytes"] == round(28.57 * GiB)


def test_debug_initial_free_line_gives_fraction() -> None:
    # gpu_worker.py (debug): "Initial free memory: %s GiB; Requested memory: %f (util), %s GiB"
    line = PREFIX + "Initial free memory: %s GiB; Requested memory: %f (util), %s GiB" % ("117.35", 0.9, "107.68")
    r = parse_engine_log("vllm", line)
    assert r.kv_fraction == pytest.approx(0.9)
    assert r.extra["initial_free_bytes"] == round(117.35 * GiB)


def test_other_ranks_are_skipped_and_ansi_stripped() -> None:
    text = "\n".join([
        "\x1b[1;36m(VllmWorker rank=0 pid=11)\x1b[0;0m INFO Model loading took 7.10 GiB memory and 3.0 seconds",
        "\x1b[1;36m(VllmWorker rank=1 pid=12)\x1b[0;0m INFO Model loading took 9.99 GiB memory and 3.0 seconds",
    ])
    r = parse_engine_log("vllm", text)
    assert r.model_bytes == round(7.10 * GiB)
    assert "\x1b" not in r.evidence[0]


def test_cuda_graph_pool_line_when_no_capture_line() -> None:
    line = PREFIX + "CUDA graph pool memory: %s GiB (actual), %s GiB (estimated), difference: %s GiB (%.1f%%)." % (
        "0.61", "0.58", "0.03", 5.2)
    assert parse_engine_log("vllm", line).compute_bytes == round(0.61 * GiB)
