"""explain: the comparison, the sizing-rule fit and each hypothesis's verdict, on the seed
study's real runs and on hand-made records whose answer is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memgap.explain import CONTRADICTED, NOT_MEASURED, SUPPORTED, RunInput, explain, fit_trtllm
from memgap.importers import blank_record, parse_files
from memgap.series import COLUMNS

GIB, MIB = 1024**3, 1024**2
# The seed study's real results file (a verbatim copy: tests/fixtures/benchmark_spark/README.md).
REFERENCE = Path(__file__).resolve().parent.parent / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="fixture missing")


@pytest.fixture(scope="module")
def seed() -> list[dict[str, Any]]:
    return [r.record for r in parse_files("benchmark-spark", [REFERENCE])]


def _pick(records: list[dict[str, Any]], model: str, env: str) -> list[RunInput]:
    return [RunInput(r) for r in records if r["model"] == model and r["environment"] == env]


@needs_reference
@pytest.mark.parametrize("model", ["deepseek", "qwen72b", "gpt120b"])
def test_seed_sizing_rule_supported_cgroup_not_measured(seed: list[dict[str, Any]], model: str) -> None:
    ex = explain("native", _pick(seed, model, "native"), "container", _pick(seed, model, "container"))
    rule = ex.hypothesis("kv_sizing_rule")
    assert rule.verdict == SUPPORTED
    assert rule.numbers["fraction"] == pytest.approx(0.900, abs=0.001)
    assert rule.numbers["total_bytes"] / GIB == pytest.approx(119.71, abs=0.05)
    assert rule.numbers["max_residual_bytes"] < 0.02 * GIB  # the logged figures have two decimals
    assert "0.900 x (119.71 GiB - peak)" in rule.evidence
    assert ex.hypothesis("cgroup_accounting").verdict == NOT_MEASURED
    assert ex.hypothesis("page_cache").verdict == NOT_MEASURED
    assert any("engine-level numbers only" in n for n in ex.notes)
    assert any("every run of native ran before every run of container" in n for n in ex.notes)
    d = ex.to_dict()
    kv = next(r for r in d["categories"] if r["key"] == "engine.kv_cache_bytes")
    assert kv["delta_bytes"] == kv["b_bytes"] - kv["a_bytes"] < -10 * GIB


@needs_reference
def test_seed_predicted_kv_matches_measured(seed: list[dict[str, Any]]) -> None:
    ex = explain("n", _pick(seed, "deepseek", "native"), "c", _pick(seed, "deepseek", "container"))
    n = ex.hypothesis("kv_sizing_rule").numbers
    assert abs(n["kv_a_predicted_bytes"] - n["kv_a_bytes"]) < 0.1 * GIB
    assert abs(n["kv_b_predicted_bytes"] - n["kv_b_bytes"]) < 0.1 * GIB


def test_fit_recovers_fraction_and_total() -> None:
    pts = [(int(p * GIB), int(0.85 * (100 - p) * GIB)) for p in (40, 50, 61, 77)]
    fit = fit_trtllm(pts)
    assert fit is not None
    assert fit.fraction == pytest.approx(0.85, abs=1e-6)
    assert fit.total_bytes / GIB == pytest.approx(100, abs=1e-6)
    assert fit.max_residual_bytes < 1024
    assert fit_trtllm(pts[:2]) is None
    assert fit_trtllm([(GIB, GIB)] * 4) is None  # no spread in peak


def _trt(run_id: str, env: str, peak_gib: float, kv_gib: float) -> RunInput:
    r = blank_record()
    r.update(run_id=run_id, environment=env, engine="trtllm", model="m", status="ok",
             created_at=f"2026-01-01T00:00:{run_id[-2:]}")
    r["engine_report"].update(engine="trtllm", peak_bytes=int(peak_gib * GIB), kv_cache_bytes=int(kv_gib * GIB))
    return RunInput(r)


def test_kv_that_does_not_follow_the_rule_contradicts_it() -> None:
    a = [_trt("a01", "x", 70, 44), _trt("a02", "x", 71, 10), _trt("a03", "x", 72, 40)]
    b = [_trt("b04", "y", 90, 30), _trt("b05", "y", 95, 1)]
    rule = explain("x", a, "y", b).hypothesis("kv_sizing_rule")
    assert rule.verdict == CONTRADICTED
    assert "does not fit" in rule.evidence


def _mem_run(run_id: str, *, created: str, cached_start: int, cg_file: int, cg_mapped: int, usage: int,
             limit: int | None = None, failcnt: int = 0) -> RunInput:
    def row(t: float) -> dict[str, Any]:
        r: dict[str, Any] = dict.fromkeys(COLUMNS)
        r.update(t_s=t, host_free_bytes=10 * GIB, host_cached_bytes=cached_start, host_shmem_bytes=8 * MIB,
                 host_available_bytes=14 * GIB, host_used_bytes=2 * GIB, cgroup_usage_bytes=usage,
                 cgroup_anon_bytes=usage - cg_file - 2 * MIB, cgroup_file_bytes=cg_file, cgroup_shmem_bytes=0,
                 cgroup_file_mapped_bytes=cg_mapped, cgroup_kmem_bytes=2 * MIB,
                 process_anon_bytes=usage - cg_file - 2 * MIB, process_file_bytes=110 * MIB, process_shmem_bytes=0,
                 process_rss_bytes=usage - cg_file + 110 * MIB)
        return r

    rec = blank_record()
    rec.update(run_id=run_id, environment="sandbox", engine="llamacpp", model="smol", status="ok", created_at=created,
               engine_options={"mmap": True, "ctx_size": 8192},
               environment_info={"cgroup_version": 1, "memory_limit_bytes": limit},
               cgroup_final={"limit_bytes": limit, "failcnt": failcnt, "oom_kill_count": 0})
    rec["engine_report"].update(engine="llamacpp", kv_cache_bytes=180 * MIB, kv_cache_tokens=8192,
                                compute_bytes=17 * MIB, model_bytes=92 * MIB, extra={"n_ctx": 8192},
                                evidence=["llama_kv_cache: CPU KV buffer size = 180.00 MiB"])
    rec["memory"] = {"host_total_bytes": 16 * GIB, "cgroup_usage_peak_bytes": usage,
                     "at": {m: row(i) for i, m in enumerate(("start", "ready", "peak", "end"))}}
    return RunInput(rec)


def test_cold_vs_warm_page_cache_supported_cgroup_contradicted() -> None:
    cold = _mem_run("cold01", created="2026-01-01T00:00:01", cached_start=3 * GIB, cg_file=98 * MIB,
                    cg_mapped=97 * MIB, usage=313 * MIB)
    warm = _mem_run("warm02", created="2026-01-01T00:00:02", cached_start=3 * GIB + 97 * MIB, cg_file=0,
                    cg_mapped=0, usage=215 * MIB)
    ex = explain("cold", [cold], "warm", [warm])
    pc = ex.hypothesis("page_cache")
    assert pc.verdict == SUPPORTED
    assert pc.numbers["run_page_cache_ready_a_bytes"] == 98 * MIB
    assert pc.numbers["run_page_cache_ready_b_bytes"] == 0
    assert "does not read MemFree" in pc.evidence  # llama.cpp: n_ctx decides
    cg = ex.hypothesis("cgroup_accounting")
    assert cg.verdict == CONTRADICTED
    assert cg.numbers["charge_beyond_engine_anon_a_bytes"] == 100 * MIB
    assert ex.hypothesis("kv_sizing_rule").verdict == SUPPORTED  # same n_ctx, same KV
    rows = {r.key: r for r in ex.categories}
    assert rows["page_cache_mapped"].delta_bytes == -97 * MIB
    assert rows["page_cache_mapped_elsewhere"].delta_bytes == 97 * MIB
    assert ex.hypothesis("shmem").verdict == CONTRADICTED
    assert ex.hypothesis("gpu_outside_cgroup").verdict == NOT_MEASURED
    assert any("single run" in n for n in ex.notes)


def test_same_page_cache_contradicts_it() -> None:
    runs = [_mem_run(f"r{i:02d}", created=f"2026-01-01T00:00:{i:02d}", cached_start=3 * GIB, cg_file=98 * MIB,
                     cg_mapped=97 * MIB, usage=313 * MIB) for i in range(4)]
    ex = explain("a", runs[:2], "b", runs[2:])
    assert ex.hypothesis("page_cache").verdict == CONTRADICTED
    assert ex.hypothesis("other_processes").verdict == CONTRADICTED


def test_a_limit_that_was_hit_supports_cgroup_accounting() -> None:
    a = _mem_run("a01", created="2026-01-01T00:00:01", cached_start=3 * GIB, cg_file=98 * MIB, cg_mapped=97 * MIB,
                 usage=313 * MIB)
    b = _mem_run("b02", created="2026-01-01T00:00:02", cached_start=3 * GIB, cg_file=98 * MIB, cg_mapped=97 * MIB,
                 usage=313 * MIB, limit=320 * MIB, failcnt=12)
    cg = explain("a", [a], "b", [b]).hypothesis("cgroup_accounting")
    assert cg.verdict == SUPPORTED
    assert cg.numbers["limit_b_bytes"] == 320 * MIB and cg.numbers["limit_events_b"] == 12


def test_json_shape() -> None:
    a = _mem_run("a01", created="2026-01-01T00:00:01", cached_start=3 * GIB, cg_file=0, cg_mapped=0, usage=215 * MIB)
    d = explain("a", [a], "b", [a]).to_dict()
    assert set(d) >= {"a", "b", "categories", "hypotheses"} and d["explain_version"] == 1
    assert d["a"]["runs"] == 1 and d["a"]["run_ids"] == ["a01"]
    for c in d["categories"]:
        assert {"a_bytes", "b_bytes", "delta_bytes", "source"} <= set(c)
    for h in d["hypotheses"]:
        assert {"name", "verdict", "evidence"} <= set(h)
        assert h["verdict"] in (SUPPORTED, CONTRADICTED, NOT_MEASURED)


def test_different_engines_are_not_fitted() -> None:
    a = _mem_run("a01", created="2026-01-01T00:00:01", cached_start=3 * GIB, cg_file=0, cg_mapped=0, usage=215 * MIB)
    rule = explain("a", [a], "b", [_trt("b02", "y", 90, 30)]).hypothesis("kv_sizing_rule")
    assert rule.verdict == NOT_MEASURED and "different engines" in rule.evidence


def test_two_runs_use_the_default_fraction() -> None:
    ok = explain("x", [_trt("a01", "x", 70, 0.9 * (119.6 - 70))], "y", [_trt("b02", "y", 100, 0.9 * (119.6 - 100))])
    rule = ok.hypothesis("kv_sizing_rule")
    assert rule.verdict == SUPPORTED and rule.numbers["fraction_source"] == "engine default (not fitted)"
    assert rule.numbers["total_bytes"] / GIB == pytest.approx(119.6, abs=0.01)
    off = explain("x", [_trt("a01", "x", 70, 44)], "y", [_trt("b02", "y", 100, 40)]).hypothesis("kv_sizing_rule")
    assert off.verdict == NOT_MEASURED and "apart" in off.evidence


def test_a_side_mixing_models_is_noted() -> None:
    a = [_trt("a01", "x", 70, 44), _trt("a02", "x", 71, 43)]
    r = _trt("a03", "x", 72, 42)
    r.record["model"] = "other"  # type: ignore[index]
    ex = explain("x", [*a, r], "y", [_trt("b04", "y", 90, 26)])
    assert any("x mixes models (m, other)" in n for n in ex.notes)
