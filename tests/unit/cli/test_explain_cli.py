"""``memgap explain`` end to end over a store filled by ``memgap import benchmark-spark``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main

# The seed study's real results file (a verbatim copy: tests/fixtures/benchmark_spark/README.md).
REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"
pytestmark = pytest.mark.skipif(not REFERENCE.exists(), reason="fixture missing")


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    db = tmp_path / "s.db"
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", str(db)]) == 0
    capsys.readouterr()
    return db


def test_explain_seed_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["explain", "model=qwen72b,environment=native", "model=qwen72b,environment=container",
               "--store", str(store), "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["a"]["runs"] == 10 and d["b"]["runs"] == 10 and d["a"]["engine"] == ["trtllm"]
    verdicts = {h["name"]: h["verdict"] for h in d["hypotheses"]}
    assert verdicts["kv_sizing_rule"] == "supported"
    assert verdicts["cgroup_accounting"] == "not measured"
    rule = next(h for h in d["hypotheses"] if h["name"] == "kv_sizing_rule")
    assert rule["numbers"]["fraction"] == pytest.approx(0.9, abs=0.001)


def test_explain_seed_text(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["explain", "model=deepseek,environment=native", "model=deepseek,environment=container",
               "--store", str(store)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "supported" in out and "kv_sizing_rule" in out
    assert "0.900 x (119.71 GiB - peak)" in out
    assert "the ledger is not measured" in out
    assert "confounded with time" in out


def test_explain_by_run_id(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["explain", "bs-deepseek-native-20251109_042404", "bs-deepseek-container-20251109_065229",
               "--store", str(store), "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert d["a"]["run_ids"] == ["bs-deepseek-native-20251109_042404"]
    kv = next(c for c in d["categories"] if c["key"] == "engine.kv_cache_bytes")
    assert kv["a_bytes"] == round(44.69 * 1024**3) and kv["b_bytes"] == round(16.33 * 1024**3)
    # two runs cannot determine a two-parameter fit: the engine's default fraction is used
    rule = next(h for h in d["hypotheses"] if h["name"] == "kv_sizing_rule")
    assert rule["verdict"] == "supported"
    assert rule["numbers"]["fraction"] == 0.9 and rule["numbers"]["fraction_source"] == "engine default (not fitted)"
    assert rule["numbers"]["total_bytes"] / 1024**3 == pytest.approx(119.7, abs=0.1)


@pytest.mark.parametrize(("a", "message"), [("environment=docker", "no runs match"), ("colour=red", "unknown key")])
def test_explain_bad_selection_is_a_usage_error(store: Path, capsys: pytest.CaptureFixture[str], a: str,
                                                message: str) -> None:
    assert main(["explain", a, "environment=native", "--store", str(store)]) == 2
    assert message in capsys.readouterr().err


def test_explain_one_side_prints_its_ledger(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "model=gpt120b", "--store", str(store), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["a"]["runs"] == 23 and len(d["ledgers"]["ready"]) == 23
    led = d["ledgers"]["ready"][0]
    assert led["total_bytes"] is None and led["engine"]["kv_cache_bytes"] > 0
    assert main(["explain", "model=gpt120b", "--store", str(store)]) == 0
    assert "the memory layers were not measured" in capsys.readouterr().out


def test_explain_one_side_with_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from memgap.importers import blank_record
    from memgap.series import COLUMNS
    from memgap.store import Store

    row = dict.fromkeys(COLUMNS)
    row.update(t_s=1.0, host_free_bytes=6 << 30, host_cached_bytes=1 << 30, host_shmem_bytes=0,
               cgroup_usage_bytes=300 << 20, cgroup_anon_bytes=200 << 20, cgroup_file_bytes=100 << 20,
               cgroup_shmem_bytes=0, cgroup_file_mapped_bytes=90 << 20, cgroup_kmem_bytes=0)
    rec = blank_record()
    rec.update(run_id="r1", environment="sandbox", engine="llamacpp", status="ok", created_at="2026-01-01T00:00:00",
               environment_info={"cgroup_version": 1},
               memory={"host_total_bytes": 8 << 30, "at": {"ready": row, "peak": row}})
    with Store(tmp_path / "s.db") as s:
        s.add_run(rec)
    assert main(["explain", "r1", "--store", str(tmp_path / "s.db")]) == 0
    out = capsys.readouterr().out
    assert "Ledger at engine ready" in out and "Ledger at peak" in out
    assert "page cache charged to the run, mapped" in out and "90.0 MiB" in out
