"""memgap compare: the seed study's published means reproduced from its raw data, with
intervals, tests and the findings that flag its design; and runs built by hand."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from memgap.cli.main import main
from memgap.store import Store

REFERENCE = Path(__file__).resolve().parents[4] / "shared" / "reference" / "benchmark-spark-phase1-results.json"
if not REFERENCE.exists():
    REFERENCE = Path("/work/shared/reference/benchmark-spark-phase1-results.json")
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference is not beside the checkout")
GIB = 1024**3


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _metric(out: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    (g,) = [g for g in out["groups"] if g["model"] == model]
    (m,) = [m for m in g["metrics"] if m["metric"] == name]
    return m


@needs_reference
def test_seed_study_means_reproduced_with_intervals_and_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "s.db")
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", db]) == 0
    out = _json(capsys, ["compare", "--store", db, "--json"])
    raw = json.loads(REFERENCE.read_text())["models"]
    fields = {"request_throughput_per_s": ("throughput", 1), "output_tokens_per_s": ("output_throughput", 1),
              "engine_peak_bytes": ("peak_memory", GIB), "kv_cache_bytes": ("kv_cache", GIB)}
    assert sorted(g["model"] for g in out["groups"]) == ["deepseek", "gpt120b", "qwen72b"]
    for model, envs in raw.items():
        for metric, (key, scale) in fields.items():
            m = _metric(out, model, metric)
            for side, env in (("a", "native"), ("b", "container")):
                values = [r[key] for r in envs[env]]
                # the study's own per-environment mean (all its runs, duplicates included)
                assert m[side]["n"] == len(values)
                assert m[side]["mean"] == pytest.approx(statistics.mean(values) * scale, rel=1e-6)
                assert m[side]["sd"] == pytest.approx(statistics.stdev(values) * scale, rel=1e-6)
            lo, hi = m["difference"]["ci95"]
            assert lo <= m["difference"]["mean"] <= hi
            assert set(m) >= {"p_value", "p_holm", "effect_size", "verdict"}
    # the published headline: deepseek KV 44.31 GiB natively, 16.57 GiB in Docker
    kv = _metric(out, "deepseek", "kv_cache_bytes")
    assert kv["a"]["mean"] / GIB == pytest.approx(44.314, abs=1e-3)
    assert kv["b"]["mean"] / GIB == pytest.approx(16.567, abs=1e-3)
    assert kv["verdict"] == "different" and kv["p_holm"] < 1e-6
    assert kv["difference"]["ci95"][1] < -25 * GIB
    assert _metric(out, "deepseek", "output_tokens_per_s")["verdict"] == "equivalent"
    checks = {(f["check"], f["model"], f["environment"]) for f in out["findings"]}
    for model in raw:
        assert ("confounded_with_time", model, None) in checks
    assert ("duplicate_iterations", "gpt120b", "native") in checks
    dup = next(f for f in out["findings"] if f["check"] == "duplicate_iterations")
    assert dup["data"]["duplicates"] == {"1": 4} or dup["data"]["duplicates"] == {1: 4}
    # and the terminal table says the same
    capsys.readouterr()
    assert main(["compare", "--store", db, "model=deepseek"]) == 0
    text = capsys.readouterr().out
    assert "44.31 GiB" in text and "16.57 GiB" in text and "confounded_with_time" in text


def _run(st: Store, i: int, env: str, tps: float, kv: int, *, model: str = "m", status: str = "ok") -> None:
    st.add_run({"run_id": f"{env}-{i}", "study_id": None, "created_at": f"2026-01-01T00:{i:02d}:00",
                "status": status, "environment": env, "engine": "e", "model": model,
                "failure": None if status == "ok" else "engine exited with status 1",
                "output_tokens_per_s": tps, "engine_report": {"kv_cache_bytes": kv}})


def test_two_selectors_compare_a_with_b(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    with Store(db) as st:
        for i in range(6):
            _run(st, 2 * i, "native", 100 + i % 2, 1000)
            _run(st, 2 * i + 1, "sandbox", 80 + i % 2, 1000)
        _run(st, 40, "sandbox", 1, 1, status="failed")
    out = _json(capsys, ["compare", "environment=native", "environment=sandbox", "--store", str(db), "--json"])
    (g,) = out["groups"]
    tps = next(m for m in g["metrics"] if m["metric"] == "output_tokens_per_s")
    assert tps["a"]["mean"] == 100.5 and tps["b"]["mean"] == 80.5 and tps["verdict"] == "different"
    kv = next(m for m in g["metrics"] if m["metric"] == "kv_cache_bytes")
    assert kv["verdict"] == "equivalent" and kv["p_value"] == 1.0
    assert not any(f["check"] == "confounded_with_time" for f in out["findings"])


def test_failed_runs_are_reported_not_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    with Store(db) as st:
        for i in range(4):
            _run(st, 2 * i, "native", 100, 1000)
            _run(st, 2 * i + 1, "sandbox", 100, 1000)
        _run(st, 30, "sandbox", 5, 5, status="failed")
    out = _json(capsys, ["compare", "--store", str(db), "--json", "--metric", "output_tokens_per_s"])
    (m,) = out["groups"][0]["metrics"]
    assert m["b"]["n"] == 4 and m["b"]["mean"] == 100
    assert [f["check"] for f in out["findings"]] == ["failed_runs"]


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert main(["compare", "--store", str(db)]) == 2  # no store
    Store(db).close()
    assert main(["compare", "--store", str(db)]) == 2  # empty
    with Store(db) as st:
        _run(st, 1, "native", 1, 1)
    assert main(["compare", "--store", str(db), "--margin", "abc"]) == 2
    assert main(["compare", "--store", str(db), "--metric", "nope"]) == 2
    assert main(["compare", "a", "b", "c", "--store", str(db)]) == 2
    assert "unknown metric" in capsys.readouterr().err
