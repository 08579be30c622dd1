"""trtllm-bench's report JSON (rebuilt from reporting.py, see tests/fixtures/trtllm-bench)
read into the record's workload figures, and the report's memory figures filling what the
log did not say."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.engines.base import REPORT_MARKER
from memgap.engines.trtllm import BenchLoad, TrtllmBench
from memgap.engines.trtllm_report import parse_bench_report, workload_summary
from memgap.errors import EngineNotFound, UsageError
from memgap.spec import TrtllmSpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "trtllm-bench"
GiB = 1 << 30


def test_report_figures_in_the_record_units() -> None:
    r = parse_bench_report((FIXTURES / "report-pytorch-rebuilt.json").read_text())
    assert r.missing == ()
    assert r.num_requests == 100 and r.output_tokens == 100 * 128
    assert r.request_throughput_per_s == pytest.approx(0.9308)
    assert r.output_tokens_per_s == pytest.approx(119.1443)
    assert r.duration_s == pytest.approx(107.43446, rel=1e-6)  # total_latency_ms / 1000
    assert r.e2e_s == {"p50": pytest.approx(8.57143), "p90": pytest.approx(8.57143 * 1.35),
                       "p99": pytest.approx(8.57143 * 1.5), "mean": pytest.approx(8.57143 * 0.98), "n": 100}
    assert r.ttft_s["p50"] == pytest.approx(0.3165) and r.tpot_s["mean"] == pytest.approx(0.0629 * 0.98)
    # machine["memory.total"] is GiB (total_memory / 1024**3): one key with a dot in it
    assert r.device_total_bytes == round(119.64 * GiB) and r.device_name == "NVIDIA GB10"
    assert r.kv_fraction == 0.9 and r.version == "1.2.0rc1" and r.backend == "Pytorch"
    s = workload_summary(r)
    assert s["requests_ok"] == 100 and s["output_tokens"] == 12800
    # trtllm-bench reports no errored requests apart, and TPOT is not an inter-token gap
    assert s["requests_errored"] is None and s["itl_s"]["p50"] is None
    assert s["source"] == "trtllm-bench report_json"


def test_missing_fields_are_named_never_zero() -> None:
    r = parse_bench_report((FIXTURES / "report-fields-missing-made-up.json").read_text())
    assert r.missing == ("performance.system_output_throughput_tok_s",)
    assert r.output_tokens_per_s is None and r.device_total_bytes is None and r.device_name is None
    assert r.e2e_s["p90"] is None and r.e2e_s["p50"] == pytest.approx(8.57143)
    assert r.ttft_s == {"p50": None, "p90": None, "p99": None, "mean": None, "n": 0}
    assert workload_summary(r)["missing"] == ["performance.system_output_throughput_tok_s"]


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"a string"'])
def test_not_a_report(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bench_report(text)


def bench(tmp_path: Path, **opts: object) -> TrtllmBench:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "config.json").write_text('{"model_type": "qwen2"}')
    spec = TrtllmSpec.model_validate({"mode": "bench", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                                      "model_path": str(ckpt), **opts})
    return TrtllmBench(spec, BenchLoad(num_requests=100, input_len=1024, output_len=128, concurrency=8))


def test_summary_from_the_report_in_the_workdir(tmp_path: Path) -> None:
    b = bench(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    assert b.workload_summary(work) == (None, None)  # no report written
    b.report_path(work).write_text("{truncated")
    assert b.workload_summary(work) == (None, "{truncated")
    text = (FIXTURES / "report-pytorch-rebuilt.json").read_text()
    b.report_path(work).write_text(text)
    summary, raw = b.workload_summary(work)
    assert raw == text and summary is not None and summary["requests_ok"] == 100


def test_report_fills_what_the_log_did_not_say(tmp_path: Path) -> None:
    b = bench(tmp_path)
    report = (FIXTURES / "report-pytorch-rebuilt.json").read_text()
    # The C++ executor's line alone: no device total, no fraction in the log.
    log = "[TensorRT-LLM][INFO] [MemUsageChange] Allocated 44.68 GiB for max tokens in paged KV cache (836608).\n"
    without = b.parse_log(log)
    assert without.device_total_bytes is None and "device_total_bytes" in without.missing
    r = b.parse_log(log + REPORT_MARKER + report)
    assert r.kv_cache_bytes == round(44.68 * GiB)  # the log's own figure, untouched
    assert r.device_total_bytes == round(119.64 * GiB) and r.kv_fraction == 0.9
    assert "device_total_bytes" not in r.missing and "kv_fraction" not in r.missing
    assert any(e.startswith("report_json: device_total_bytes=") for e in r.evidence)
    # the report's JSON is never read as log lines
    assert b.parse_log(log + REPORT_MARKER + "{not json").device_total_bytes is None


def test_steps_and_model_identity(tmp_path: Path) -> None:
    b = bench(tmp_path)
    steps = b.steps(tmp_path / "w")
    assert [(s.name, s.measured) for s in steps] == [("prepare-dataset", False), ("throughput", True)]
    assert b.model().name == "ckpt" and len(b.model().sha256) == 64
    trt = bench(tmp_path, backend="tensorrt").steps(tmp_path / "w")
    assert [s.name for s in trt] == ["prepare-dataset", "build", "throughput"]
    no_path = TrtllmBench(TrtllmSpec(mode="bench", model="org/name"))
    with pytest.raises(EngineNotFound, match="engine.model_path"):
        no_path.model()
    # trtllm-bench refuses a path as --model (BenchmarkEnvironment.verify_model_name)
    with pytest.raises(UsageError, match="takes a model name"):
        TrtllmBench(TrtllmSpec(mode="bench", model=str(tmp_path)))
