"""SGLang adapter: command construction and a recorded start-up log."""

from __future__ import annotations

import pytest

from memgap.engines.sglang import SglangEngine
from memgap.errors import UsageError
from memgap.spec import RunSpec
from memgap.spec import SglangSpec as SglangOptions

GiB = 1 << 30

# Rebuilt from the formats in python/sglang/srt/model_executor/model_runner.py, mem_cache/memory_pool.py,
# managers/scheduler.py.
RECORDED = """\
[2025-12-29 18:33:03] server_args=ServerArgs(model_path='Qwen/Qwen3-8B', mem_fraction_static=0.835, tp_size=1)
[2025-12-29 18:33:03 TP0] Load weight begin. avail mem=78.68 GB
[2025-12-29 18:33:09 TP0] Load weight end. type=Qwen3ForCausalLM, dtype=torch.bfloat16, avail mem=63.21 GB, mem usage=15.47 GB.
[2025-12-29 18:33:09 TP0] KV Cache is allocated. #tokens: 353280, K size: 24.26 GB, V size: 24.26 GB
[2025-12-29 18:33:09 TP0] Memory pool end. avail mem=14.03 GB
[2025-12-29 18:33:20 TP0] Capture cuda graph end. Time elapsed: 10.87 s. mem usage=0.81 GB. avail mem=13.22 GB.
[2025-12-29 18:33:21 TP0] max_total_num_tokens=353280, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=4096, context_len=40960, available_gpu_mem=13.22 GB
[2025-12-29 18:33:22] The server is fired up and ready to roll!
"""


def test_command() -> None:
    e = SglangEngine(SglangOptions(model="/models/qwen3", mem_fraction_static=0.8, context_length=8192,
                                   max_running_requests=64, tp_size=2, disable_cuda_graph=True))
    argv = list(e.command("127.0.0.1", 30000).argv)
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    assert argv[argv.index("--model-path") + 1] == "/models/qwen3"
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.8"
    assert argv[argv.index("--context-length") + 1] == "8192"
    assert argv[argv.index("--tp-size") + 1] == "2"
    assert "--enable-metrics" in argv and "--disable-cuda-graph" in argv
    default = SglangEngine(SglangOptions(model="m")).command("h", 1).argv
    assert "--mem-fraction-static" not in default  # SGLang derives it from the card


def test_bad_options() -> None:
    with pytest.raises(UsageError, match=r"engine\.mem_fraction_static"):
        RunSpec.from_dict({"engine": {"kind": "sglang", "model": "m", "mem_fraction_static": 0}})
    with pytest.raises(UsageError, match="kv_cache_dtype"):
        SglangEngine(SglangOptions(model="m", kv_cache_dtype="q4_0"))
    with pytest.raises(UsageError, match="engine.model"):
        SglangEngine(SglangOptions())


def test_recorded_log() -> None:
    e = SglangEngine(SglangOptions(model="m", python="/nonexistent/python"))
    r = e.parse_log(RECORDED)
    assert r.model_bytes == round(15.47 * GiB)
    assert r.kv_cache_bytes == 2 * round(24.26 * GiB) and r.kv_cache_tokens == 353280
    assert r.kv_fraction == pytest.approx(0.835)
    assert r.compute_bytes == round(0.81 * GiB)
    assert e.ready_line in RECORDED
    assert e.version() is None
