"""A self-driven engine (trtllm-bench) through the runner: its steps run in order in the
environment, memory is sampled while the throughput step runs, and the workload's figures
come from its report JSON. trtllm-bench needs a GPU, so its place is taken by a clearly
named TEST DOUBLE, tests/fixtures/bin/trtllm-bench-double, which writes the files the real
tool writes and log lines rebuilt from TensorRT-LLM's format strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memgap.engines.base import REPORT_MARKER
from memgap.engines.registry import engine_for_run
from memgap.runner import perform_run
from memgap.selfdriven import measured_step_limit_s
from memgap.spec import RunSpec

DOUBLE = Path(__file__).resolve().parents[1] / "fixtures" / "bin" / "trtllm-bench-double"
GiB = 1 << 30


def bench_spec(tmp_path: Path, **engine: Any) -> RunSpec:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "config.json").write_text('{"model_type": "qwen2"}')
    return RunSpec.from_dict({
        "engine": {"kind": "trtllm", "mode": "bench", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                   "model_path": str(ckpt), "executable": str(DOUBLE), "free_gpu_memory_fraction": 0.9, **engine},
        "environment": {"name": "native"},
        "workload": {"requests": 6, "prompt_tokens": 64, "output_tokens": 16, "concurrency": 3},
        "sampler": {"rate_hz": 20},
    })


@pytest.fixture(autouse=True)
def _quick_double(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMGAP_TRTLLM_DOUBLE_SECONDS", "0.6")
    monkeypatch.delenv("MEMGAP_TRTLLM_DOUBLE_FAIL", raising=False)


def test_bench_run_is_a_record_with_the_reports_figures(tmp_path: Path, no_leftovers: None) -> None:
    spec = bench_spec(tmp_path)
    out = perform_run(spec)
    r = out.record
    assert r["status"] == "ok", (r["failure"], out.engine_log[-2000:])
    # the workload memgap asked for, driven by the engine itself, read from its report
    assert r["requests_ok"] == 6 and r["output_tokens"] == 6 * 16 and r["requests_errored"] is None
    assert r["workload_duration_s"] == pytest.approx(0.6, abs=0.3)
    assert r["output_tokens_per_s"] == pytest.approx(96 / r["workload_duration_s"], rel=1e-6)
    assert r["e2e_s"]["n"] == 6 and r["e2e_s"]["p50"] is not None and r["ttft_s"]["p50"] is None
    assert out.requests == []  # memgap sent none
    # the measured step's command is the run's; every step is listed with its exit status
    assert r["engine_command"][0] == str(DOUBLE) and "throughput" in r["engine_command"]
    steps = r["environment_info"]["self_driven"]["steps"]
    assert [(s["name"], s["exit_status"], s["measured"]) for s in steps] == [
        ("prepare-dataset", 0, False), ("throughput", 0, True)]
    assert r["engine_exit_status"] == 0 and r["ready_s"] is not None
    # memory sampled while throughput ran: the double holds 64 MiB
    mem = r["memory"]
    assert mem["samples"] >= 5 and mem["process_rss_peak_bytes"] >= 64 << 20
    # the engine's own memory lines (rebuilt) and its report, kept verbatim after the log
    er = r["engine_report"]
    assert er["peak_bytes"] == round(70.05 * GiB) and er["kv_cache_tokens"] == 836608
    assert er["kv_fraction"] == 0.9 and er["device_total_bytes"] == round(119.64 * GiB)
    log, _, report = out.engine_log.partition(REPORT_MARKER)
    assert "==> memgap: step 1/2 prepare-dataset: exit status 0 <==" in log and "PERFORMANCE OVERVIEW" in log
    assert '"request_throughput_req_s"' in report
    assert r["model"] == "ckpt" and r["model_sha256"] is not None
    assert r["spec"]["engine"]["mode"] == "bench"


@pytest.mark.parametrize(
    ("fail", "failure", "names"),
    [
        ("throughput", "throughput step: engine exited with status 1 during the workload",
         ["prepare-dataset", "throughput"]),
        ("prepare-dataset", "prepare-dataset step: engine exited with status 1 before it was ready",
         ["prepare-dataset"]),  # nothing after a failed step runs
    ],
)
def test_a_failed_step_is_a_failed_run_with_its_log(
    fail: str, failure: str, names: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftovers: None
) -> None:
    monkeypatch.setenv("MEMGAP_TRTLLM_DOUBLE_FAIL", fail)
    out = perform_run(bench_spec(tmp_path))
    r = out.record
    assert r["status"] == "failed" and r["failure"].startswith(failure)  # then any diagnosis memgap made
    assert "simulated failure" in r["failure_log_tail"]
    assert [s["name"] for s in r["environment_info"]["self_driven"]["steps"]] == names
    assert r["requests_ok"] == 0 and r["output_tokens_per_s"] is None  # as a served run that failed


def test_no_report_is_a_failure_not_an_empty_success(tmp_path: Path, no_leftovers: None) -> None:
    # trtllm-bench's own flag is --report_json; the double, told another name, writes none
    spec = bench_spec(tmp_path)
    engine = engine_for_run(spec)
    steps = engine.steps

    def without_report(workdir: Path) -> list[Any]:
        out = steps(workdir)
        argv = list(out[-1].command.argv)
        argv[argv.index("--report_json") + 1] = str(workdir / "elsewhere.json")
        out[-1] = type(out[-1])(out[-1].name, type(out[-1].command)(tuple(argv)), True)
        return out

    engine.steps = without_report
    r = perform_run(spec, engine=engine).record
    assert r["status"] == "failed"
    assert r["failure"] == "the measured step exited 0 but wrote no report (--report_json)"


def test_tensorrt_backend_builds_then_runs_the_built_engine(tmp_path: Path, no_leftovers: None) -> None:
    r = perform_run(bench_spec(tmp_path, backend="tensorrt")).record
    assert r["status"] == "ok", r["failure"]
    steps = r["environment_info"]["self_driven"]["steps"]
    assert [(s["name"], s["exit_status"]) for s in steps] == [("prepare-dataset", 0), ("build", 0), ("throughput", 0)]
    # throughput ran the engine where build saved it (the double refuses a missing --engine_dir)
    assert r["engine_command"][r["engine_command"].index("--engine_dir") + 1].endswith(
        "/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/tp_1_pp_1")


def test_measured_step_limit_follows_from_the_spec(tmp_path: Path) -> None:
    spec = bench_spec(tmp_path)
    # ready_s 120 + request timeout 120 s x ceil(6 requests / 3 in flight)
    assert measured_step_limit_s(spec) == 120 + 120 * 2
