"""One verdict per question (issue 12, item 5): a report judges a study's primary metrics
against the margins the study declared, and says beside each verdict which margin it applied."""

from __future__ import annotations

from pathlib import Path

from memgap.analysis.compare import build_comparison
from memgap.analysis.margins import Margin, declared_margins, margins_for
from memgap.analysis.metrics import METRICS
from memgap.analysis.report_data import build_report
from memgap.experiment import parse_experiment
from memgap.matrix import plan_runs
from memgap.report.base import render_text
from memgap.report.markdown import MarkdownReporter
from memgap.store import Store
from memgap.study import open_study

EXPERIMENT = ('[study]\nname = "mine"\niterations = "auto"\nmax_iterations = 4\n'
              '[[metrics]]\nname = "kv_cache_bytes"\nmargin = 0\n'
              '[[metrics]]\nname = "output_tokens_per_s"\nmargin = "25%"\n')
# sandbox 10% slower than native, little noise: within 25%, far outside 5%
TPS = {"native": [100.0, 101.0, 99.5, 100.5], "sandbox": [90.0, 90.8, 89.6, 90.3]}


def _study_store(db: Path) -> None:
    exp = parse_experiment(EXPERIMENT)
    with Store(db) as st:
        open_study(st, exp, "exp.toml")
        for p in plan_runs(exp):  # the plan's own order: its index names the cell
            env, i = p.cell.environment, p.index
            run_id = f"r{i}"
            st.add_run({"run_id": run_id, "study_id": exp.study_id, "created_at": f"2026-01-01T00:{i:02d}:00",
                        "status": "ok", "environment": env, "engine": "llamacpp", "model": "embedded",
                        "output_tokens_per_s": TPS[env][p.block - 1], "engine_report": {"kv_cache_bytes": 1000}})
            st.start_study_run(exp.study_id, plan_index=i, attempt=1, block=p.block, iteration=p.iteration,
                               cell=p.cell.to_dict(), started_at="2026-01-01T00:00:00", actions=None)
            st.end_study_run(exp.study_id, plan_index=i, attempt=1, status="finished", run_id=run_id,
                             ended_at="2026-01-01T00:00:01")


def _tput(comparison: dict) -> dict:  # type: ignore[type-arg]
    (g,) = comparison["groups"]
    return next(m for m in g["metrics"] if m["metric"] == "output_tokens_per_s")


def test_a_studys_runs_are_judged_against_the_studys_margin(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _study_store(db)
    with Store(db) as st:
        comparison = build_comparison(st, [], metrics=list(METRICS), margin=0.05, alpha=0.05, seed=0)
        rep = build_report(st, st.runs(), comparison)
    row = _tput(comparison)
    assert row["margin_rule"] == {"relative": 0.25, "absolute": None, "source": "study mine"}
    assert abs(row["margin"] - 0.25 * 100.25) < 1e-9  # 25% of native's mean
    assert row["verdict"] == "equivalent"  # the interval (-10%) lies within ±25%
    # a metric the study did not declare keeps the command line's margin
    (g,) = comparison["groups"]
    assert all(m["margin_rule"]["source"] == "--margin" for m in g["metrics"]
               if m["metric"] not in ("output_tokens_per_s", "kv_cache_bytes"))
    # The study's sequential test decided the same question at the same margin: 'different'
    # (it tests a difference first, and 10% with this little noise is one). The report
    # gives that one verdict in both tables, each with the margin beside it.
    (study,) = rep["studies"]
    v = study["groups"][0]["verdicts"]["sandbox vs native: output_tokens_per_s"]
    assert v["verdict"] == "different" and v["margin_text"] == "±25% (study mine)"
    (shown,) = rep["models"][0]["comparisons"]
    t = next(m for m in shown["metrics"] if m["metric"] == "output_tokens_per_s")
    assert (t["verdict"], t["verdict_compare"], t["verdict_source"]) == (
        "different", "equivalent", "the study's sequential test")
    assert comparison["groups"][0]["metrics"] is not shown["metrics"]  # the comparison itself is left as it was
    md = render_text(MarkdownReporter(rep))
    assert "| embedded / base | sandbox vs native: output_tokens_per_s | different | ±25% (study mine) |" in md
    table = md.split("### sandbox vs native", 1)[1]
    assert "| different | ±25% (study mine); the study's sequential test |" in table
    assert "| equivalent | ±0 B (study mine); the study's sequential test |" in table  # kv_cache_bytes


def test_control_the_same_runs_outside_a_study_get_the_default_margin(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _study_store(db)
    with Store(db) as st:
        st.db.execute("DELETE FROM studies")  # the plan (and its margins) forgotten
        comparison = build_comparison(st, [], metrics=list(METRICS), margin=0.05, alpha=0.05, seed=0)
    row = _tput(comparison)
    assert row["margin_rule"]["source"] == "--margin" and row["verdict"] == "different"


def test_margins_apply_only_where_every_run_shares_them() -> None:
    class Run:
        def __init__(self, study_id: str | None) -> None:
            self.study_id = study_id

    a = declared_margins({"metrics": [{"name": "output_tokens_per_s", "margin": "25%"},
                                      {"name": "kv_cache_bytes", "margin": 0}]}, "study a")
    b = declared_margins({"metrics": [{"name": "output_tokens_per_s", "margin": "10%"},
                                      {"name": "kv_cache_bytes", "margin": 0}, {"name": "gone", "margin": 1}]}, "study b")
    assert a["kv_cache_bytes"] == Margin(None, 0.0, "study a") and "gone" not in b
    declared = {"a": a, "b": b}
    both = margins_for([Run("a"), Run("b")], declared)  # type: ignore[list-item]
    assert set(both) == {"kv_cache_bytes"}  # they disagree on throughput: the default applies
    assert both["kv_cache_bytes"].source == "study a, study b"
    assert margins_for([Run("a"), Run(None)], declared) == {}  # a run outside any study  # type: ignore[list-item]
    assert Margin(0.25, None, "study a").describe("output_tokens_per_s") == "±25% (study a)"
    assert Margin(None, 0.0, "study a").describe("kv_cache_bytes") == "±0 B (study a)"
