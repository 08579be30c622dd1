"""The exact command lines trtllm-bench, trtllm-serve and SGLang get from ``memgap run``:
flags -> ``--print-spec`` -> the registry's engine for that spec -> argv. These engines
need an NVIDIA GPU, so they cannot run here; their command lines are what can be checked.
Flags and subcommands are TensorRT-LLM's (tensorrt_llm/commands/serve.py;
tensorrt_llm/bench/dataset/prepare_dataset.py and prepare_synthetic_data.py;
bench/build/build.py; bench/benchmark/throughput.py) and SGLang's
(python/sglang/srt/server_args.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.engines.registry import engine_for_run
from memgap.spec import RunSpec


def specs(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[RunSpec]:
    assert main(["run", *args, "--print-spec"]) == 0
    return [RunSpec.from_dict(d) for d in json.loads(capsys.readouterr().out)]


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """trtllm-serve, trtllm-bench and a python with 'sglang' on PATH (stand-ins that do
    nothing: only their presence is checked before a command line is built)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("trtllm-serve", "trtllm-bench", "python-with-sglang"):
        p = bin_dir / name
        p.write_text("#!/bin/sh\nexit 0\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def test_trtllm_bench(installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [spec] = specs(["--engine", "trtllm", "--set", "engine.mode=bench", "--model", MODEL,
                    "--set", "engine.model_path=/models/ds7b", "--set", "engine.free_gpu_memory_fraction=0.9",
                    "--env", "native", "--requests", "50", "--prompt-tokens", "1024", "--output-tokens", "128",
                    "--concurrency", "8", "--warmup", "2"], capsys)
    assert spec.engine.kind == "trtllm" and spec.engine.mode == "bench"
    engine = engine_for_run(spec)
    w = tmp_path / "w"
    steps = engine.steps(w)
    assert [(s.name, s.measured) for s in steps] == [("prepare-dataset", False), ("throughput", True)]
    base = ["trtllm-bench", "--model", MODEL, "--model_path", "/models/ds7b"]
    assert list(steps[0].command.argv) == [
        *base, "prepare-dataset", "--output", f"{w}/dataset.jsonl", "token-norm-dist", "--num-requests", "50",
        "--input-mean", "1024", "--input-stdev", "0", "--output-mean", "128", "--output-stdev", "0"]
    assert list(steps[1].command.argv) == [
        *base, "throughput", "--dataset", f"{w}/dataset.jsonl", "--backend", "pytorch", "--tp", "1",
        "--report_json", f"{w}/report.json", "--kv_cache_free_gpu_mem_fraction", "0.9", "--concurrency", "8",
        "--warmup", "2", "--streaming"]
    assert steps[1].command.env["TLLM_LOG_LEVEL"] == "INFO"


def test_trtllm_bench_tensorrt_backend(installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [spec] = specs(["--engine", "trtllm", "--set", "engine.mode=bench", "--set", "engine.backend=tensorrt",
                    "--model", MODEL, "--env", "native", "--requests", "10"], capsys)
    w = tmp_path / "w"
    prep, build, run = (list(s.command.argv) for s in engine_for_run(spec).steps(w))
    assert build == ["trtllm-bench", "--model", MODEL, "--workspace", str(w), "build",
                     "--dataset", f"{w}/dataset.jsonl", "--tp_size", "1"]
    assert run[run.index("--backend") + 1] == "tensorrt"
    assert run[run.index("--engine_dir") + 1] == f"{w}/{MODEL}/tp_1_pp_1"


def test_trtllm_serve(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [spec] = specs(["--engine", "trtllm", "--model", "/models/ds7b", "--set", "engine.free_gpu_memory_fraction=0.9",
                    "--set", "engine.max_batch_size=64", "--env", "native"], capsys)
    argv = list(engine_for_run(spec).command("127.0.0.1", 8123).argv)
    assert argv == ["trtllm-serve", "serve", "/models/ds7b", "--host", "127.0.0.1", "--port", "8123",
                    "--backend", "pytorch", "--tp_size", "1", "--log_level", "info",
                    "--kv_cache_free_gpu_memory_fraction", "0.9", "--max_batch_size", "64"]


def test_sglang(installed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    python = str(installed / "python-with-sglang")
    [spec] = specs(["--engine", "sglang", "--model", "Qwen/Qwen2.5-7B-Instruct", "--engine-python", python,
                    "--set", "engine.mem_fraction_static=0.8", "--set", "engine.context_length=8192",
                    "--env", "native"], capsys)
    cmd = engine_for_run(spec).command("127.0.0.1", 30000)
    assert list(cmd.argv) == [python, "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B-Instruct",
                              "--host", "127.0.0.1", "--port", "30000", "--tp-size", "1", "--kv-cache-dtype", "auto",
                              "--enable-metrics", "--log-level", "info", "--mem-fraction-static", "0.8",
                              "--context-length", "8192"]
    assert cmd.env == {"PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
