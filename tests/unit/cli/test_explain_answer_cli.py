"""``memgap explain``: the answer first, then one line per hypothesis with both questions,
then the tables; ``--json`` carries the answer's fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"
pytestmark = pytest.mark.skipif(not REFERENCE.exists(), reason="fixture missing")
GIB = 1024**3
QWEN = ["model=qwen72b,environment=native", "model=qwen72b,environment=container"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("seed") / "s.db"
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", str(db)]) == 0
    return db


def test_text_prints_the_answer_then_verdicts_then_tables(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["explain", *QWEN, "--store", str(store), "--no-peak"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # qwen72b in the JSON: KV medians 44.675 -> 28.99 GiB, peak medians 70.065 -> 87.495 GiB
    assert lines[0].startswith("KV cache 44.7 \u2192 29.0 GiB (\u221215.7). TensorRT-LLM's rule explains it: it read "
                               "17.4 GiB less free memory when it sized the cache")
    rule = next(i for i, line in enumerate(lines) if line.strip().startswith("kv_sizing_rule"))
    assert "differs: yes" in lines[rule] and "explains KV: yes" in lines[rule] and "supported" in lines[rule]
    pc = next(line for line in lines if line.strip().startswith("page_cache"))
    assert "differs: unknown" in pc and "explains KV: unknown" in pc and "not measured" in pc
    assert rule < out.splitlines().index(next(x for x in lines if "What the engine reported" in x))
    assert out.index("Evidence") > out.index("What the engine reported")


def test_json_carries_the_answer(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["explain", *QWEN, "--store", str(store), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["explain_version"] == 3
    ans = d["answer"]
    assert ans["kv_before_bytes"] == round(44.675 * GIB) and ans["kv_after_bytes"] == round(28.99 * GIB)
    assert ans["kv_delta_bytes"] == ans["kv_after_bytes"] - ans["kv_before_bytes"]
    assert ans["rule"] == "trtllm" and ans["rule_explains_kv"] is True
    assert ans["rule_input_delta_bytes"] == round(70.065 * GIB) - round(87.495 * GIB)
    assert ans["carriers"] == [] and ans["text"].startswith("KV cache 44.7")
    rule = next(h for h in d["hypotheses"] if h["name"] == "kv_sizing_rule")
    assert (rule["verdict"], rule["differs"], rule["explains_kv"]) == ("supported", True, True)
