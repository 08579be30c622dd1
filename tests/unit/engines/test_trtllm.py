"""TensorRT-LLM adapters: trtllm-serve and trtllm-bench commands, and a recorded log."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.engines.trtllm import BenchLoad, TrtllmBench, TrtllmServeEngine
from memgap.errors import UsageError
from memgap.spec import RunSpec, TrtllmSpec

GiB = 1 << 30

# Rebuilt from the formats in tensorrt_llm/_torch/pyexecutor/_util.py, batch_manager/kvCacheManager.cpp,
# bench reporting. The seed study's native DeepSeek run: peak 70.05 GiB, KV 44.69 GiB.
RECORDED = """\
[11/09/2025-04:24:04] [TRT-LLM] [I] Memory used after loading model weights (inside torch) in memory usage profiling: 14.27 GiB
[TensorRT-LLM][INFO] [MemUsageChange] Allocated 0.56 GiB for max tokens in paged KV cache (10240).
[11/09/2025-04:24:30] [TRT-LLM] [I] Peak memory during memory usage profiling (torch + non-torch): 70.05 GiB, available KV cache memory when calculating max tokens: 44.69 GiB, fraction is set 0.9, kv size per token is 57344. device total memory 119.64 GiB, temporary kv cache memory during profiling 0.56 GiB
[TensorRT-LLM][INFO] Number of tokens per block: 32.
[TensorRT-LLM][INFO] [MemUsageChange] Allocated 44.68 GiB for max tokens in paged KV cache (836608).
===========================================================
= PERFORMANCE OVERVIEW
===========================================================
Request Throughput (req/sec):                     0.9308
Total Output Throughput (tokens/sec):             119.1443
"""


def test_serve_command(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yml"
    extra.write_text("kv_cache_config:\n  dtype: fp8\n")
    e = TrtllmServeEngine(TrtllmSpec(model="/models/ds7b", free_gpu_memory_fraction=0.9,
                                             max_batch_size=64, max_seq_len=8192, extra_llm_api_options=extra))
    cmd = e.command("0.0.0.0", 8000)
    argv = list(cmd.argv)
    assert argv[:3] == ["trtllm-serve", "serve", "/models/ds7b"]
    assert argv[argv.index("--backend") + 1] == "pytorch"
    assert argv[argv.index("--kv_cache_free_gpu_memory_fraction") + 1] == "0.9"
    assert argv[argv.index("--max_seq_len") + 1] == "8192"
    assert argv[argv.index("--extra_llm_api_options") + 1] == str(extra)
    assert extra in cmd.read_paths
    assert e.options()["extra_llm_api_options"] == str(extra)


def test_bench_pytorch_steps(tmp_path: Path) -> None:
    b = TrtllmBench(TrtllmSpec(mode="bench", model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", model_path=Path("/m"),
                               free_gpu_memory_fraction=0.9),
                    BenchLoad(num_requests=50, input_len=1024, output_len=128, concurrency=8))
    steps = b.commands(tmp_path)
    assert len(steps) == 2  # no engine build with the PyTorch backend
    prep, run = (list(s.argv) for s in steps)
    assert prep[:5] == ["trtllm-bench", "--model", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "--model_path", "/m"]
    assert prep[prep.index("--output") + 1] == str(tmp_path / "dataset.jsonl")
    assert prep[prep.index("--input-mean") + 1] == "1024"
    assert "throughput" in run and run[run.index("--backend") + 1] == "pytorch"
    assert run[run.index("--kv_cache_free_gpu_mem_fraction") + 1] == "0.9"
    assert run[run.index("--report_json") + 1] == str(tmp_path / "report.json")
    assert "--engine_dir" not in run


def test_bench_tensorrt_builds_first(tmp_path: Path) -> None:
    b = TrtllmBench(TrtllmSpec(mode="bench", model="m", backend="tensorrt"))
    steps = [list(s.argv) for s in b.commands(tmp_path)]
    assert [("build" in s, "throughput" in s) for s in steps] == [(False, False), (True, False), (False, True)]
    # where build saves it (bench/build/build.py: workspace / model / tp_{tp}_pp_{pp})
    assert steps[1][steps[1].index("--workspace") + 1] == str(tmp_path)
    assert steps[2][steps[2].index("--engine_dir") + 1] == str(tmp_path / "m" / "tp_1_pp_1")


def test_bad_options() -> None:
    with pytest.raises(UsageError, match=r"engine\.backend"):
        RunSpec.from_dict({"engine": {"kind": "trtllm", "model": "m", "backend": "onnx"}})
    with pytest.raises(UsageError, match="num_requests"):
        TrtllmBench(TrtllmSpec(model="m"), BenchLoad(num_requests=0))
    with pytest.raises(UsageError, match="engine.model"):
        TrtllmServeEngine(TrtllmSpec())


def test_recorded_log() -> None:
    e = TrtllmServeEngine(TrtllmSpec(model="m", python="/nonexistent/python"))
    r = e.parse_log(RECORDED)
    assert r.peak_bytes == round(70.05 * GiB)
    assert r.kv_cache_bytes == round(44.68 * GiB) and r.kv_cache_tokens == 836608
    assert r.extra["kv_available_bytes"] == round(44.69 * GiB)
    assert r.extra["output_throughput"] == pytest.approx(119.1443)
    assert e.version() is None
