"""memgap report: writes Markdown and HTML from the store, on the seed study and on a
study of memgap's own (with its sequential verdicts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.experiment import parse_experiment
from memgap.store import Store
from memgap.study import open_study

REFERENCE = Path(__file__).resolve().parents[4] / "shared" / "reference" / "benchmark-spark-phase1-results.json"
if not REFERENCE.exists():
    REFERENCE = Path("/work/shared/reference/benchmark-spark-phase1-results.json")
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference is not beside the checkout")


@needs_reference
def test_seed_report(tmp_path: Path) -> None:
    db, md, html, js = tmp_path / "s.db", tmp_path / "r.md", tmp_path / "r.html", tmp_path / "r.json"
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", str(db)]) == 0
    assert main(["report", "--store", str(db), "--md", str(md), "--html", str(html), "--json", str(js),
                 "--title", "seed"]) == 0
    text = md.read_text()
    # the answer first, per model: container against native, TensorRT-LLM's rule and what it read
    answers = json.loads(js.read_text())["answers"]
    assert [(a["group"], a["a"], a["b"]) for a in answers] == [
        ("deepseek", "native", "container"), ("gpt120b", "native", "container"), ("qwen72b", "native", "container")]
    for a in answers:
        assert a["answer"]["rule"] == "trtllm" and a["answer"]["kv_differs"] and a["answer"]["rule_explains_kv"]
        assert a["answer"]["rule_input_delta_bytes"] < 0  # the container read less free memory
        assert a["answer"]["text"] in text
    assert text.index("## The answer") < text.index("## Model deepseek")
    for model in ("deepseek", "gpt120b", "qwen72b"):
        assert f"## Model {model}" in text
    assert "| kv_cache_bytes | native | 10 | 44.31 GiB |" in text
    assert "confounded_with_time" in text and "duplicate_iterations" in text
    assert "No memory samples for these runs" in text
    h = html.read_text()
    assert "<h1>seed</h1>" in h and h.count("<svg") >= 3 * 3  # intervals per model
    assert "Memory ledger" not in h  # imported runs have no memory layers: section left out


def test_study_section_and_selection(tmp_path: Path) -> None:
    db, md = tmp_path / "s.db", tmp_path / "r.md"
    exp = parse_experiment('[study]\nname = "mine"\niterations = "auto"\n'
                           '[[metrics]]\nname = "kv_cache_bytes"\nmargin = 0\n')
    with Store(db) as st:
        open_study(st, exp, "exp.toml")
        for i, env in enumerate(["native", "sandbox"] * 3):
            run_id = f"r{i}"
            st.add_run({"run_id": run_id, "study_id": exp.study_id, "created_at": f"2026-01-01T00:0{i}:00",
                        "status": "ok", "environment": env, "engine": "llamacpp", "model": "embedded",
                        "engine_report": {"kv_cache_bytes": 1000}})
            st.start_study_run(exp.study_id, plan_index=i, attempt=1, block=i // 2 + 1, iteration=i // 2 + 1,
                               cell={"model": "embedded", "variant": "base", "environment": env},
                               started_at="2026-01-01T00:00:00", actions=None)
            st.end_study_run(exp.study_id, plan_index=i, attempt=1, status="finished", run_id=run_id,
                             ended_at="2026-01-01T00:00:01")
    assert main(["report", "study_id=study:mine", "--store", str(db), "--md", str(md)]) == 0
    text = md.read_text()
    assert "## Study mine" in text
    assert "**6 runs** reached the verdicts, where 10 per cell would have taken **20**" in text
    assert "| embedded / base | sandbox vs native: kv_cache_bytes | equivalent | ±0 B (study mine) | 3 |" in text


def test_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    Store(db).close()
    assert main(["report", "--store", str(db)]) == 2
    assert "--html FILE, --md FILE and/or --json FILE" in capsys.readouterr().err
    assert main(["report", "--store", str(tmp_path / "none.db"), "--md", str(tmp_path / "x.md")]) == 2
