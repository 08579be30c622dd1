"""SGLang log lines rebuilt from the f-strings in sgl-project/sglang:
python/sglang/srt/model_executor/model_runner.py, mem_cache/memory_pool.py,
managers/scheduler.py."""

from __future__ import annotations

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
