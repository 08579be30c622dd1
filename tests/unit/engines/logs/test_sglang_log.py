"""SGLang log lines rebuilt from the f-strings in sgl-project/sglang:
python/sglang/srt/model_executor/model_runner.py, mem_cache/memory_pool.py,
managers/scheduler.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.engines.logs import detect_engine, parse_engine_log

GiB = 1 << 30  # sglang: GB = 1024 * 1024 * 1024


def tp(rank: int) -> str:
    return f"[2025-08-13 14:27:06 TP{rank}] "


def startup(rank: int = 0, usage: float = 15.28) -> list[str]:
    return [
        tp(rank) + f"Load weight begin. avail mem={78.50:.2f} GB",
        tp(rank) + f"Load weight end. type=Qwen2ForCausalLM, dtype=torch.bfloat16, avail mem={63.10:.2f} GB, "
        f"mem usage={usage:.2f} GB.",
        tp(rank) + f"KV Cache is allocated. #tokens: {1_023_456}, K size: {27.34:.2f} GB, V size: {27.34:.2f} GB",
        tp(rank) + f"Memory pool end. avail mem={7.81:.2f} GB",
        tp(rank) + f"Capture cuda graph end. Time elapsed: {22.74:.2f} s. mem usage={0.93:.2f} GB. avail mem={6.88:.2f} GB.",
        tp(rank) + "max_total_num_tokens=1023456, chunked_prefill_size=8192, max_prefill_tokens=16384, "
        "max_running_requests=4096, context_len=32768, available_gpu_mem=6.88 GB",
    ]


def test_full_startup() -> None:
    text = "\n".join(["server_args=ServerArgs(model_path='x', mem_fraction_static=0.88, tp_size=1)", *startup()])
    r = parse_engine_log("sglang", text)
    assert r.model_bytes == round(15.28 * GiB)
    assert r.kv_cache_bytes == 2 * round(27.34 * GiB)
    assert r.kv_cache_tokens == 1_023_456
    assert r.compute_bytes == round(0.93 * GiB)
    assert r.kv_fraction == pytest.approx(0.88)
    assert r.extra["avail_after_load_bytes"] == round(63.10 * GiB)
    assert r.extra["avail_after_pool_bytes"] == round(7.81 * GiB)
    assert r.extra["max_running_requests"] == 4096
    assert r.extra["context_len"] == 32768
    assert detect_engine(text) == "sglang"


def test_mla_pool_and_older_lines() -> None:
    text = "\n".join([
        # old model_runner: "Load weight end. type=%s, dtype=%s, avail mem=%.2f GB" (no mem usage)
        "[2024-12-13 01:44:59 TP0] Load weight end. type=MistralForCausalLM, dtype=torch.bfloat16, avail mem=9.69 GB",
        # MLATokenToKVPool: f"KV Cache is allocated. #tokens: {size}, KV size: {kv_size / GB:.2f} GB"
        "[2025-11-04 05:27:13 DP0 TP0 EP0] KV Cache is allocated. #tokens: 524288, KV size: 17.16 GB",
        "[2024-12-13 01:45:01 TP0] Capture cuda graph end. Time elapsed: 2.19 s",
    ])
    r = parse_engine_log("sglang", text)
    assert r.model_bytes is None
    assert r.kv_cache_bytes == round(17.16 * GiB)
    assert r.kv_cache_tokens == 524288
    assert r.compute_bytes is None
    assert r.extra["graph_capture_s"] == pytest.approx(2.19)


def test_other_tp_ranks_ignored() -> None:
    text = "\n".join([*startup(1, usage=99.0), *startup(0), *startup(2, usage=98.0)])
    assert parse_engine_log("sglang", text).model_bytes == round(15.28 * GiB)


def test_scheduler_line_alone_gives_tokens() -> None:
    line = tp(0) + "max_total_num_tokens=56524, max_prefill_tokens=16384, max_running_requests=2049, context_len=32768"
    r = parse_engine_log("sglang", line)
    assert r.kv_cache_tokens == 56524 and r.kv_cache_bytes is None


# --- fixtures rebuilt from the f-strings of three releases (tests/fixtures/logs/README.md)

FIXTURES = Path(__file__).parents[3] / "fixtures" / "logs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_0_3_6_log_has_no_pool_line_and_says_so() -> None:
    r = parse_engine_log("sglang", fixture("sglang-0.3.6-rebuilt.log"))
    assert r.found_any and r.log_variant == "gpu"
    assert r.kv_cache_tokens == 441_974  # from the scheduler's max_total_num_tokens
    assert r.kv_fraction == pytest.approx(0.88)
    assert r.extra["avail_before_load_bytes"] == round(78.48 * GiB)
    assert r.extra["avail_after_load_bytes"] == round(63.45 * GiB)
    assert r.extra["avail_after_pool_bytes"] == round(8.98 * GiB)
    assert r.model_bytes is None and r.kv_cache_bytes is None and r.compute_bytes is None
    assert r.missing == ("model_bytes", "kv_cache_bytes", "available_gpu_mem_bytes")


def test_0_4_6_tp2_log_keeps_rank_0() -> None:
    r = parse_engine_log("sglang", fixture("sglang-0.4.6-tp2-rebuilt.log"))
    assert r.model_bytes == round(7.36 * GiB)
    assert r.kv_cache_bytes == 2 * round(29.58 * GiB)
    assert r.kv_cache_tokens == 2_215_304
    assert r.extra["avail_after_pool_bytes"] == round(11.56 * GiB)
    # "Capture cuda graph end. Time elapsed: 15.31 s. avail mem=11.02 GB. mem usage=0.54 GB."
    assert r.compute_bytes == round(0.54 * GiB)
    assert r.extra["graph_capture_s"] == pytest.approx(15.31)
    assert r.kv_fraction == pytest.approx(0.85)
    assert r.missing == ("available_gpu_mem_bytes",)  # the scheduler line got it in 0.5
    assert not any("TP1]" in e for e in r.evidence)


def test_0_5_23_hybrid_pools_add_up_and_the_draft_is_kept_apart() -> None:
    r = parse_engine_log("sglang", fixture("sglang-0.5.23-swa-eagle-rebuilt.log"))
    assert r.missing == () and r.log_variant == "gpu"
    assert r.model_bytes == round(13.38 * GiB)  # the target's, not the draft's 0.52
    assert r.extra["draft_model_bytes"] == round(0.52 * GiB)
    # full pool 15.00 + 15.00 GB and the "SWA" pool 3.00 + 3.00 GB
    assert r.kv_cache_bytes == 2 * round(15.00 * GiB) + 2 * round(3.00 * GiB)
    assert r.extra["kv_pools"] == 2
    assert r.extra["swa_k_bytes"] == round(3.00 * GiB)
    assert r.kv_cache_tokens == 1_310_720  # the full pool's #tokens, not the SWA pool's
    assert r.extra["draft_kv_cache_bytes"] == 2 * round(1.25 * GiB)
    assert r.compute_bytes == round(0.62 * GiB)  # "Capture target decode CUDA graph end."
    assert r.extra["draft_graph_bytes"] == round(0.21 * GiB)
    assert r.extra["avail_after_pool_bytes"] == round(28.81 * GiB)
    assert r.extra["available_gpu_mem_bytes"] == round(24.91 * GiB)
    assert r.kv_fraction == pytest.approx(0.831)


def test_cpu_backend_scheduler_line() -> None:
    # managers/scheduler.py 0.5.23: "available_cpu_mem" when the device is the CPU.
    line = tp(0) + ("max_total_num_tokens=65536, chunked_prefill_size=4096, max_prefill_tokens=16384, "
                    "max_running_requests=128, context_len=4096, available_cpu_mem=12.34 GB")
    r = parse_engine_log("sglang", line)
    assert r.log_variant == "cpu"
    assert r.extra["available_cpu_mem_bytes"] == round(12.34 * GiB)
    assert "available_cpu_mem_bytes" not in r.missing


def test_va_upper_bound_is_not_an_allocation() -> None:
    # memory_pool.py 0.5.23 says "VA upper bound" for a pool mapped after graph capture.
    line = tp(0) + "KV Cache VA upper bound. dtype: torch.bfloat16, #tokens: 999, K size: 9.00 GB, V size: 9.00 GB"
    r = parse_engine_log("sglang", line)
    assert r.kv_cache_bytes is None and not r.found_any


def test_restart_in_one_file_keeps_the_last_start() -> None:
    text = "\n".join([*startup(usage=99.0), *startup(usage=15.28)])
    r = parse_engine_log("sglang", text)
    assert r.model_bytes == round(15.28 * GiB)
    assert r.kv_cache_bytes == 2 * round(27.34 * GiB)
    assert "draft_kv_cache_bytes" not in r.extra


def test_log_without_memory_lines_is_a_visible_miss() -> None:
    r = parse_engine_log("sglang", "[2025-01-01 00:00:00] The server is fired up and ready to roll!")
    assert not r.found_any
    assert r.missing == ("model_bytes", "kv_cache_bytes", "kv_cache_tokens", "avail_after_pool_bytes",
                         "available_gpu_mem_bytes")
