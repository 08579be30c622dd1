"""The benchmark-spark importer over the study's real 63-run file, hand-made variants and garbage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.cli.main import main
from memgap.errors import StoreError, UsageError
from memgap.importers import RECORD_KEYS, blank_record, import_files, parse_files
from memgap.importers.benchmark_spark import GIB, parse
from memgap.store import Store

# The seed study's real results file (a verbatim copy: tests/fixtures/benchmark_spark/README.md).
REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="fixture missing")

ONE = {
    "environment": "container", "model_name": "deepseek", "model_id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "model_path": "/data/m", "iteration": 10, "timestamp": "20251109_065229", "start_temp_celsius": 40,
    "end_temp_celsius": 57, "exit_code": 0, "throughput": 0.9305, "output_throughput": 119.1019,
    "latency": None, "peak_memory": 101.56, "kv_cache": 16.33,
}


def doc(*runs: dict[str, Any]) -> str:
    return json.dumps({"models": {"deepseek": {"container": list(runs)}}})


def test_one_run_maps_every_field() -> None:
    [run] = parse(doc(ONE), origin="/x/results.json")
    r = run.record
    assert r["run_id"] == "bs-deepseek-container-20251109_065229"
    assert r["study_id"] == "benchmark-spark:results"
    assert r["created_at"] == "2025-11-09T06:52:29"
    assert (r["environment"], r["engine"], r["model"], r["status"], r["source"]) == (
        "container", "trtllm", "deepseek", "ok", "benchmark-spark")
    assert r["engine_report"]["peak_bytes"] == round(101.56 * GIB)
    assert r["engine_report"]["kv_cache_bytes"] == round(16.33 * GIB)
    assert r["engine_report"]["extra"] == {"peak_memory_gib": 101.56, "kv_cache_gib": 16.33}
    assert r["request_throughput_per_s"] == 0.9305
    assert r["output_tokens_per_s"] == 119.1019
    info = r["source_info"]
    assert (info["iteration"], info["start_temp_celsius"], info["end_temp_celsius"]) == (10, 40.0, 57.0)
    # engine-level numbers only: nothing from the memory layers
    assert all(v is None for v in r["memory"].values()) and r["cgroup_final"] is None and r["ready_s"] is None
    assert r["engine_report"]["device_total_bytes"] is None


def test_failed_run_and_missing_figures_are_none() -> None:
    bad = dict(ONE, exit_code=1, peak_memory=None, kv_cache=None)
    [run] = parse(doc(bad))
    assert run.record["status"] == "failed"
    assert run.record["failure"] == "trtllm-bench exited with status 1"
    assert run.record["engine_report"]["peak_bytes"] is None
    assert run.record["engine_report"]["extra"] == {}


def test_record_has_the_same_top_level_keys_as_memgap_runs() -> None:
    from memgap.load.spec import WorkloadSpec
    from memgap.outcome import build_record
    from memgap.spec import RunSpec

    class Eng:
        name = "llamacpp"

        def version(self) -> str:
            return "1"

        def options(self) -> dict[str, Any]:
            return {}

    class Env:
        def describe(self) -> dict[str, Any]:
            return {}

    own = build_record(run_id="x", created_at="t", config=RunSpec(workload=WorkloadSpec()),
                       engine=Eng(), model_sha256="0", model_name="m", model_size_bytes=1, env=Env(),  # type: ignore[arg-type]
                       status="ok", failure=None, log_tail_text=None, ready_s=1.0, exit_status=0,
                       cgroup_final=None, report={}, summary=None, memory=None, command=[])
    assert tuple(own) == RECORD_KEYS
    imported = parse(doc(ONE))[0].record
    assert set(imported) - set(own) == {"source", "source_info"}
    assert set(own) <= set(imported)
    assert set(blank_record()["ttft_s"]) == set(own["ttft_s"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "no top-level 'models'"),
        (json.dumps({"models": {"m": []}}), "models.m is not an object"),
        (json.dumps({"models": {"m": {"native": {}}}}), "models.m.native is not a list"),
        (doc(dict(ONE, timestamp="yesterday")), r"\[0\]\.timestamp: 'yesterday' is not YYYYmmdd_HHMMSS"),
        (doc(dict(ONE, timestamp=None)), "no 'timestamp'"),
        (doc(dict(ONE, peak_memory="70")), r"\.peak_memory: expected a number"),
        (doc(dict(ONE, kv_cache=True)), r"\.kv_cache: expected a number"),
        (doc(ONE, 5), r"\[1\] is not an object"),
        (doc(dict(ONE, iteration=1.5)), "iteration: expected an integer"),
    ],
)
def test_malformed_input_names_file_and_place(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(text, origin="f.json")


def test_nan_is_refused() -> None:
    with pytest.raises(UsageError, match="peak_memory"):
        parse('{"models": {"m": {"e": [{"timestamp": "20250101_000000", "peak_memory": NaN}]}}}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(list(ONE)), json_values))
def test_garbage_runs_parse_or_raise_usage_error(overrides: dict[str, Any]) -> None:
    try:
        runs = parse(doc(dict(ONE, **overrides)))
    except UsageError:
        return
    json.dumps([r.record for r in runs], allow_nan=False)  # storable as is


@given(st.text(max_size=200))
def test_garbage_text(text: str) -> None:
    try:
        parse(text)
    except UsageError:
        pass


@needs_reference
def test_reference_file_all_63_runs(tmp_path: Path) -> None:
    runs = parse_files("benchmark-spark", [REFERENCE])
    assert len(runs) == 63
    by = {}
    for r in runs:
        key = (r.record["model"], r.record["environment"])
        by[key] = by.get(key, 0) + 1
    assert by == {("deepseek", "native"): 10, ("deepseek", "container"): 10, ("gpt120b", "native"): 13,
                  ("gpt120b", "container"): 10, ("qwen72b", "native"): 10, ("qwen72b", "container"): 10}
    with Store(tmp_path / "s.db") as s:
        summary = import_files(s, "benchmark-spark", [REFERENCE])
        assert len(summary.added) == 63
        stored = s.get("bs-deepseek-native-20251109_042404").record
        assert stored["engine_report"]["extra"] == {"peak_memory_gib": 70.05, "kv_cache_gib": 44.69}
        with pytest.raises(StoreError, match="63 of 63 runs are already"):
            import_files(s, "benchmark-spark", [REFERENCE])
        assert import_files(s, "benchmark-spark", [REFERENCE], skip_existing=True).skipped
        assert len(import_files(s, "benchmark-spark", [REFERENCE], force=True).added) == 63
        assert len(s.runs()) == 63


@needs_reference
def test_cli_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["added"]) == 63 and out["skipped"] == []
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", str(db)]) == 4
    assert "use --force" in capsys.readouterr().err


def test_cli_unknown_source_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "nope", "x.json", "--store", str(tmp_path / "s.db")]) == 2
    assert "unknown import source 'nope' (known: benchmark-spark" in capsys.readouterr().err
    assert main(["import", "benchmark-spark", str(tmp_path / "missing.json"), "--store", str(tmp_path / "s.db")]) == 2
    assert "cannot read" in capsys.readouterr().err
