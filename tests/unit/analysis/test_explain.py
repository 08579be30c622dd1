"""explain: the comparison, the sizing-rule fit and each hypothesis's verdict, on the seed
study's real runs and on hand-made records whose answer is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from memgap.analysis.explain import (
    CONTRADICTED,
    NOT_MEASURED,
    SUPPORTED,
    RunInput,
    explain,
    fit_trtllm,
)
from memgap.importers import blank_record, parse_files
from memgap.series import COLUMNS

GIB, MIB = 1024**3, 1024**2
# The seed study's real results file (a verbatim copy: tests/fixtures/benchmark_spark/README.md).
REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"
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
             limit: int | None = None, failcnt: int = 0, host_free: int = 10 * GIB) -> RunInput:
    def row(t: float) -> dict[str, Any]:
        r: dict[str, Any] = dict.fromkeys(COLUMNS)
        r.update(t_s=t, host_free_bytes=host_free, host_cached_bytes=cached_start, host_shmem_bytes=8 * MIB,
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
    assert set(d) >= {"a", "b", "categories", "hypotheses", "answer"} and d["explain_version"] == 3
    assert d["a"]["runs"] == 1 and d["a"]["run_ids"] == ["a01"]
    for c in d["categories"]:
        assert {"a_bytes", "b_bytes", "delta_bytes", "source"} <= set(c)
    for h in d["hypotheses"]:
        assert {"name", "verdict", "evidence", "differs", "explains_kv", "kv_evidence"} <= set(h)
        assert h["verdict"] in (SUPPORTED, CONTRADICTED, NOT_MEASURED)
        assert h["differs"] in (True, False, None) and h["explains_kv"] in (True, False, None)
    # the same run on both sides: nothing differs, so nothing explains a KV difference
    assert {h["name"]: h["explains_kv"] for h in d["hypotheses"]}["page_cache"] is False
    ans = d["answer"]
    assert ans["kv_before_bytes"] == ans["kv_after_bytes"] == 180 * MIB and ans["kv_delta_bytes"] == 0
    assert ans["carriers"] == [] and ans["used_delta_bytes"] == 0 and ans["rule"] == "llamacpp"
    assert ans["text"].startswith("KV cache 180.0 MiB in both (no difference)")


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


def test_planted_page_cache_is_counted_once() -> None:
    """+4 GiB of page cache outside the run (it took 4 GiB of MemFree), KV caches equal:
    page cache differs, nothing else does, and nothing explains a KV difference. Before
    version 2, other_processes summed the other page cache again and was 'supported'."""
    a = _mem_run("a01", created="2026-01-01T00:00:01", cached_start=3 * GIB, cg_file=98 * MIB, cg_mapped=97 * MIB,
                 usage=313 * MIB)
    b = _mem_run("b02", created="2026-01-01T00:00:02", cached_start=7 * GIB, cg_file=98 * MIB, cg_mapped=97 * MIB,
                 usage=313 * MIB, host_free=6 * GIB)
    ex = explain("a", [a], "b", [b])
    pc, other = ex.hypothesis("page_cache"), ex.hypothesis("other_processes")
    assert (pc.verdict, pc.differs, pc.explains_kv) == (SUPPORTED, True, False)
    assert pc.numbers["host_page_cache_ready_a_bytes"] == 3 * GIB - 8 * MIB  # Cached - Shmem
    assert pc.numbers["host_page_cache_ready_b_bytes"] - pc.numbers["host_page_cache_ready_a_bytes"] == 4 * GIB
    assert "no KV difference to explain" in pc.kv_evidence
    assert (other.verdict, other.differs, other.explains_kv) == (CONTRADICTED, False, False)
    assert other.numbers["delta_bytes"] == 0
    assert ex.hypothesis("shmem").differs is False
    rule = ex.hypothesis("kv_sizing_rule")
    assert (rule.verdict, rule.differs, rule.explains_kv) == (SUPPORTED, False, False)
    # No byte is weighed twice: the deltas of the disjoint quantities add up to the change in used memory.
    used = next(r for r in ex.categories if r.key == "total")
    assert used.delta_bytes == 4 * GIB
    ans = ex.answer
    assert ans.kv_delta_bytes == 0 and ans.kv_differs is False and ans.used_delta_bytes == 4 * GIB
    assert [(c.category, c.delta_bytes, c.share) for c in ans.carriers] == [("outside_page_cache", 4 * GIB, 1.0)]
    assert ans.engine_own_delta_bytes == 0 and ans.explained_by == ()
    assert ans.text == ("KV cache 180.0 MiB in both (no difference): llama.cpp sizes it from n_ctx, not from memory. "
                        "Used memory (MemTotal \u2212 MemFree) grew by 4.0 GiB (6.0 \u2192 10.0 GiB): other page cache "
                        "(outside the run) +4.0 GiB (100%). The engine's own memory is the same on both sides.")


def test_planted_shmem_is_not_page_cache() -> None:
    """+2 GiB in /dev/shm (meminfo counts it in Cached and Shmem): shmem differs, page cache does not."""
    a = _mem_run("a01", created="2026-01-01T00:00:01", cached_start=3 * GIB, cg_file=98 * MIB, cg_mapped=97 * MIB,
                 usage=313 * MIB)
    b = _mem_run("b02", created="2026-01-01T00:00:02", cached_start=5 * GIB, cg_file=98 * MIB, cg_mapped=97 * MIB,
                 usage=313 * MIB, host_free=8 * GIB)
    for m in ("start", "ready", "peak", "end"):
        cast(dict[str, Any], b.record)["memory"]["at"][m]["host_shmem_bytes"] = 2 * GIB + 8 * MIB
    ex = explain("a", [a], "b", [b])
    assert ex.hypothesis("shmem").differs is True
    assert ex.hypothesis("shmem").numbers["host_ready_delta_bytes"] == 2 * GIB
    assert ex.hypothesis("page_cache").differs is False
    assert ex.hypothesis("other_processes").differs is False


def _trt_mem(run_id: str, *, peak_gib: float, cached_gib: float, unified: bool | None = True) -> RunInput:
    """A TensorRT-LLM run on a 119.6 GiB unified-memory GPU whose KV follows its rule:
    kv = 0.9 x (total - peak); the engine holds 60 GiB + its KV cache in GPU memory."""
    total, weights, anon, other = 119.6 * GIB, 60 * GIB, 2 * GIB, 1 * GIB
    kv = int(0.9 * (total - peak_gib * GIB))
    gpu = weights + kv
    cached = int(cached_gib * GIB)
    r = cast(dict[str, Any], _trt(run_id, "x", peak_gib, kv / GIB).record)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(t_s=1.0, host_free_bytes=int(total - gpu - anon - cached - other), host_cached_bytes=cached,
               host_shmem_bytes=8 * MIB, host_available_bytes=int(total - gpu - anon - other),
               process_rss_bytes=anon + GIB, process_anon_bytes=anon, process_file_bytes=GIB, process_shmem_bytes=0,
               gpu_process_used_bytes=gpu)
    r["engine_report"]["kv_cache_bytes"] = kv
    r["memory"] = {"host_total_bytes": int(total), "at": {m: dict(row) for m in ("start", "ready", "peak", "end")}}
    r["host"] = {"gpus": [{"name": "NVIDIA GB10", "unified_memory": unified}]}
    return RunInput(r)


def test_page_cache_explains_trtllm_kv_by_the_amount_its_rule_implies() -> None:
    """4 GiB more page cache on a unified-memory GPU: TensorRT-LLM read 4 GiB less free
    memory and kept 0.9 x 4 = 3.6 GiB less KV cache; page cache explains all of it."""
    a, b = _trt_mem("a01", peak_gib=70, cached_gib=3), _trt_mem("b02", peak_gib=74, cached_gib=7)
    ex = explain("a", [a], "b", [b])
    pc = ex.hypothesis("page_cache")
    assert (pc.differs, pc.explains_kv) == (True, True)
    assert pc.numbers["kv_implied_delta_bytes"] == pytest.approx(-0.9 * 4 * GIB, abs=2)
    other = ex.hypothesis("other_processes")
    assert (other.differs, other.explains_kv) == (False, False)
    gpu = ex.hypothesis("gpu_outside_cgroup")  # the engine's GPU memory shrank by its KV cache: a result
    assert gpu.numbers["besides_kv_delta_bytes"] == 0 and gpu.explains_kv is False
    ans = ex.answer
    assert ans.rule == "trtllm" and ans.rule_explains_kv is True
    assert ans.kv_delta_bytes == pytest.approx(-3.6 * GIB, abs=2)
    assert ans.rule_input_delta_bytes == -4 * GIB
    assert [h for h, _ in ans.explained_by] == ["page_cache"]
    assert ans.text.startswith("KV cache 44.6 \u2192 41.0 GiB (\u22123.6). TensorRT-LLM's rule explains it: it read "
                               "4.0 GiB less free memory when it sized the cache")
    assert "By TensorRT-LLM's rule the page cache difference accounts for \u22123.6 GiB of the KV difference " \
           "(100% of it)." in ans.text
    assert "The engine's own memory differs by 3.6 GiB." in ans.text
    # Used memory barely moved: the page cache took what the KV cache gave up.
    assert ans.used_delta_bytes == 4 * GIB - (a.record["engine_report"]["kv_cache_bytes"]
                                              - b.record["engine_report"]["kv_cache_bytes"])
    assert {c.category: c.share for c in ans.carriers} == {"outside_page_cache": None, "gpu_outside_cgroup": None}


@pytest.mark.parametrize(("engine", "unified", "explains"), [
    ("trtllm", False, False),  # discrete GPU: cudaMemGetInfo reads device memory, not MemFree
    ("trtllm", None, None),  # the record does not say: cannot tell
    ("vllm", True, False),  # vLLM on unified memory reads MemAvailable, where page cache is free
    ("sglang", True, None),  # MemFree or, in newer releases, MemAvailable: not pinned down
    ("llamacpp", True, False),  # n_ctx decides
])
def test_page_cache_reaches_kv_only_through_memfree(engine: str, unified: bool | None, explains: bool | None) -> None:
    a, b = _trt_mem("a01", peak_gib=70, cached_gib=3, unified=unified), _trt_mem("b02", peak_gib=74, cached_gib=7,
                                                                               unified=unified)
    for r in (a, b):
        rec = cast(dict[str, Any], r.record)
        rec["engine"] = rec["engine_report"]["engine"] = engine
    pc = explain("a", [a], "b", [b]).hypothesis("page_cache")
    assert pc.differs is True and pc.explains_kv is explains
