"""``memgap sweep`` with the engine runs replaced by a fake KV-limited engine."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import memgap.cli.sweep as cli_sweep
from memgap import sweep as sweep_mod
from memgap.cli.main import main
from memgap.load.records import RequestRecord
from memgap.report.base import render_text
from memgap.report.sweep_html import SweepHtmlReporter
from memgap.spec import RunSpec
from memgap.store import Store, open_store


def _rec(i: int, ttft: float, e2e: float) -> RequestRecord:
    return RequestRecord(i, False, 0.0, 0.0, ttft, (0.01,) * 7, e2e, 8, 8, 20, 200, None)


class FakeRuns:
    """Slots come from the engine options the CLI chose; load beyond them waits a turn."""

    def __init__(self) -> None:
        self.options: list[Any] = []

    def __call__(self, cfg: RunSpec, store: Store, *, engine: Any, **kw: Any) -> dict[str, Any]:
        opts = engine.opts if hasattr(engine, "opts") else engine.options_obj
        self.options.append(opts)
        c = cfg.workload.concurrency
        if cfg.workload.request_rate_per_s is not None:
            c = max(1, math.ceil(cfg.workload.request_rate_per_s))
        turns = math.ceil(c / opts.parallel)
        n = cfg.workload.requests
        reqs = [_rec(i, 0.1 + (turns - 1), float(turns)) for i in range(n)]
        dur = n / min(c, opts.parallel)
        run_id = f"r{len(self.options)}"
        waiting = float(max(0, c - opts.parallel))
        record = {
            "run_id": run_id, "created_at": "2026-11-27T00:00:00", "status": "ok", "environment": cfg.environment.name,
            "engine": "llama.cpp", "label": cfg.label, "study_id": cfg.study_id, "workload_duration_s": dur,
            "requests_ok": n, "requests_errored": 0, "output_tokens_per_s": 8 * n / dur,
            "request_throughput_per_s": n / dur, "ttft_s": {"p50": reqs[0].ttft_s}, "e2e_s": {"p50": reqs[0].e2e_s},
            "engine_options": {"parallel": opts.parallel, "ctx_size": opts.ctx_size},
            "engine_report": {"kv_cache_tokens": opts.ctx_size}, "workload": cfg.workload.to_dict(),
        }  # fmt: skip
        series = {"rate_hz": 1.0, "columns": {"t_s": [0.0, 1.0, 2.0], "requests_waiting": [0.0, waiting, 0.0]},
                  "marks": {"ready": 0.0, "end": 2.0}}  # fmt: skip
        store.add_run(record, requests=[r.to_dict() for r in reqs], series=series)
        return record


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()

    class Engine:
        def __init__(self, spec: RunSpec) -> None:
            self.opts = spec.engine

    real_run, real_search = sweep_mod.run_sweep, sweep_mod.search_saturation
    monkeypatch.setattr(cli_sweep, "run_sweep", lambda *a, **k: real_run(*a, **k, execute=runs, make=Engine))
    monkeypatch.setattr(cli_sweep, "search_saturation", lambda *a, **k: real_search(*a, **k, execute=runs, make=Engine))
    return runs


ARGS = ["sweep", "--concurrency", "1,4,8", "--ctx-size", "512", "--ctx-size", "1536", "--prompt-tokens", "96",
        "--output-tokens", "32", "--slo", "ttft_s=0.5"]  # fmt: skip


def test_sweep_json_points_knee_and_store(fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert main([*ARGS, "--store", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 'fit': 512 // 128 = 4 slots, 1536 // 128 = 12
    assert [(o.ctx_size, o.parallel) for o in fake.options] == [(512, 4), (1536, 12)] * 3
    pts = out["points"]
    assert [(p["concurrency"], p["ctx_size"]) for p in pts] == [(1, 512), (1, 1536), (4, 512), (4, 1536), (8, 512), (8, 1536)]
    by = {(p["concurrency"], p["ctx_size"]): p for p in pts}
    assert by[(8, 512)]["engine_waiting_peak"] == 4.0 and by[(8, 1536)]["engine_waiting_peak"] == 0.0
    assert by[(8, 512)]["goodput_per_s"] == 0.0 and by[(8, 1536)]["goodput_per_s"] > 0
    assert out["knees"]["compared"] == [512, 1536]
    assert out["knees"]["parting"]["output_tokens_per_s"] == 8.0
    assert out["knees"]["parting"]["ttft_p50_s"] == 8.0
    assert out["knees"]["saturation"] == {"512": 4.0, "1536": None}
    assert out["slo"] == {"ttft_s": 0.5, "itl_s": None, "e2e_s": None} and out["tokens_per_request"] == 128
    with open_store(db) as st:
        runs = st.runs(where={"study_id": out["sweep_id"]})
    assert len(runs) == 6 and runs[-1].label == f"{out['sweep_id']} c=8 ctx=1536"


def test_sweep_table_and_html(fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = tmp_path / "sweep.html"
    assert main([*ARGS, "--store", str(tmp_path / "s.db"), "--html", str(html)]) == 0
    cap = capsys.readouterr()
    assert "ctx 512 vs ctx 1536: output_tokens_per_s part from concurrency 8" in cap.out
    assert "ctx 512: throughput stops scaling after concurrency 4" in cap.out
    assert "c=8 ctx=512: ok" in cap.err  # one progress line per point
    page = html.read_text()
    assert page.count("<svg") >= 5 and "ctx 512 (4 slots)" in page and "ctx 1536 (12 slots)" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_saturation_search_from_the_cli(fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sweep", "--concurrency", "8", "--ctx-size", "512", "--prompt-tokens", "96", "--output-tokens", "32",
            "--slo", "ttft_s=0.5", "--saturate", "--rate-low", "0.5", "--rate-high", "16", "--saturation-steps", "4",
            "--store", str(tmp_path / "s.db"), "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    sat = out["saturation_search"]
    assert sat["bounded"] and 3.0 <= sat["best_rate_per_s"] <= 4.0  # 4 slots
    assert len(sat["trials"]) == 6 and len(sat["points"]) == 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--parallel", "many"], "--parallel"),
        (["--slo", "ttft=1"], "--slo"),
        (["--concurrency", "1,x"], "--concurrency"),
        (["--ctx-size", "64"], "holds no request"),
        (["--saturate", "--slo", ""], "needs an SLO"),
    ],
)
def test_bad_options_are_usage_errors(
    fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["sweep", "--prompt-tokens", "96", "--output-tokens", "32", "--store", str(tmp_path / "s.db"), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_html_escapes_everything_from_the_store() -> None:
    row = {"concurrency": 1, "request_rate_per_s": None, "ctx_size": 512, "load": 1.0, "status": "failed",
           "failure": "<script>alert(1)</script>", "run_id": "<b>x</b>", "errors_by_kind": {"<i>": 1},
           "output_tokens_per_s": None, "requests_errored": 1}  # fmt: skip
    page = render_text(SweepHtmlReporter({"sweep_id": "<img src=x>", "points": [row], "knees": {}, "slo_text": "<u>"}))
    assert "<script>" not in page and "<img" not in page and "<b>x" not in page and "<i>" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x&gt;" in page


def test_sweep_runs_come_back_from_the_store_for_the_report(
    fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memgap.analysis.sweep_curves import point_of, sweep_results, sweeps_in_store
    from memgap.report.sweep_html import sweep_section

    db = tmp_path / "s.db"
    assert main([*ARGS, "--store", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with open_store(db) as st:
        runs = st.runs()
        found = sweeps_in_store(st, runs)
        (result,) = sweep_results(st, runs)
    assert list(found) == [out["sweep_id"]]
    rows = found[out["sweep_id"]]
    # the same rows the sweep printed, rebuilt from the stored records alone (no SLO: goodput = throughput)
    assert [(r["concurrency"], r["ctx_size"], r["engine_waiting_peak"]) for r in rows] == [
        (p["concurrency"], p["ctx_size"], p["engine_waiting_peak"]) for p in out["points"]
    ]
    assert point_of(runs[0].record).label == "c=1 ctx=512"
    html = sweep_section(result)
    assert html.startswith(f"<h2>Sweep {out['sweep_id']}</h2>") and html.count("<svg") >= 5
    # the sweep had no SLO (each run stores its own): no goodput curve or knee
    assert "goodput (requests/s" not in html and "goodput_per_s: from" not in html
    assert "engine_waiting_peak: from concurrency 8" in html


def test_ctx_from_run_sweeps_a_stored_runs_kv_budget(
    fake: FakeRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    with open_store(db) as st:
        for run_id, tokens in (("native1", 3072), ("docker1", 1024), ("none1", None)):
            st.add_run({"run_id": run_id, "created_at": "2026-11-27T00:00:00", "status": "ok", "environment": "x",
                        "engine": "llama.cpp", "engine_report": {"kv_cache_tokens": tokens}})  # fmt: skip
    args = ["sweep", "--concurrency", "8", "--prompt-tokens", "96", "--output-tokens", "32", "--store", str(db), "--json"]
    assert main([*args, "--ctx-from-run", "native1", "--ctx-from-run", "docker1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(p["ctx_size"], p["parallel"]) for p in out["points"]] == [(3072, 24), (1024, 8)]
    assert main([*args, "--ctx-from-run", "none1"]) == 2
    assert "reported no KV cache size" in capsys.readouterr().err
