"""A capacity search in ``memgap report``: the boundary per arm with its interval beside the
prediction, the points tried with the engine's queue, the ratio both ways, runs against a
grid's -- in Markdown, HTML and JSON, from the store alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memgap.analysis.compare import compare_runs
from memgap.analysis.report_data import build_report
from memgap.capacity import Arm, CapacitySettings, Ladder, SearchSettings
from memgap.capacity_run import run_capacity
from memgap.load.records import RequestRecord
from memgap.report.base import render_text
from memgap.report.html import HtmlReporter
from memgap.report.jsondoc import JsonReporter
from memgap.report.markdown import MarkdownReporter
from memgap.spec import LlamaCppSpec, RunSpec
from memgap.store import Store, open_store


def fake_run(spec: RunSpec, store: Store, *, engine: Any, **kw: Any) -> dict[str, Any]:
    """slots = --parallel; a request beyond them in its wave waits a generation (3 s)."""
    assert isinstance(spec.engine, LlamaCppSpec)
    c, n, slots = spec.workload.concurrency, spec.workload.requests, spec.engine.parallel
    ttfts = [0.05 * min(c, slots) + (3.0 if i % c >= slots else 0.0) for i in range(n)]
    k = len(store.runs())
    record = {
        "run_id": f"run{k:03d}", "created_at": f"2026-12-01T00:{k // 60:02d}:{k % 60:02d}", "status": "ok",
        "environment": spec.environment.name, "engine": "llamacpp", "model": "smol", "label": spec.label,
        "study_id": spec.study_id, "spec": spec.to_dict(), "workload": spec.workload.to_dict(),
        "workload_duration_s": 4.0, "requests_ok": n, "requests_errored": 0,
        "engine_options": {"parallel": slots, "ctx_size": spec.engine.ctx_size},
        "engine_report": {"kv_cache_tokens": spec.engine.ctx_size},
    }  # fmt: skip
    waiting = float(max(0, c - slots))
    series = {"rate_hz": 1.0, "columns": {"t_s": [0.0, 1.0, 2.0], "requests_waiting": [0.0, waiting, 0.0]},
              "marks": {"ready": 0.0, "end": 2.0}}  # fmt: skip
    reqs = [RequestRecord(i, False, 0.0, 0.0, t, (0.02,) * 7, t + 1, 8, 8, 64, 200, None) for i, t in enumerate(ttfts)]
    store.add_run(record, requests=[r.to_dict() for r in reqs], series=series)
    return record


def searched(tmp_path: Path) -> Path:
    db = tmp_path / "cap.db"
    base = RunSpec.from_dict({"workload": {"prompt_tokens": 64, "output_tokens": 192}})
    settings = CapacitySettings("capacity-rep", base.to_dict(), (Arm("native", 1024), Arm("sandbox", 3072)),
                                "ttft_p99_s<=2,errors<=0%", SearchSettings(Ladder("concurrency", 1, 16, 1)))  # fmt: skip

    def spec_for(arm: Arm) -> RunSpec:
        assert arm.ctx_tokens is not None
        return base.with_environment(arm.environment).replace(
            engine=LlamaCppSpec(ctx_size=arm.ctx_tokens, parallel=arm.ctx_tokens // 256))

    with open_store(db) as st:
        run_capacity(settings, spec_for, st, execute=fake_run, make=lambda s: s)
    return db


def test_capacity_section_in_every_format(tmp_path: Path) -> None:
    db = searched(tmp_path)
    with open_store(db) as st:
        runs = st.runs()
        rep = build_report(st, runs, compare_runs(runs))
    assert [c["capacity_id"] for c in rep["capacities"]] == ["capacity-rep"]
    md = render_text(MarkdownReporter(rep))
    assert "## Capacity capacity-rep: highest concurrency meeting ttft_p99_s<=2,errors<=0% (256 tokens per request)" in md
    assert "| native/ctx=1024 | 1024 | 4 | 4 .. 4 |" in md and "| sandbox/ctx=3072 | 3072 | 12 | 12 .. 12 |" in md
    assert "### native/ctx=1024: points tried" in md
    assert "| 5 | 2 | no | 0.01 | 3.2 | 0 | 1 | - | - |" in md  # load 5: the engine deferred one request
    assert "plan predicts 0.33x the concurrent requests, measured 0.33x (0.33-0.33)" in md
    assert "a fixed grid of the same resolution (16 loads per arm): 32 once each" in md
    page = render_text(HtmlReporter(rep))
    assert "<h2>Capacity capacity-rep: highest concurrency meeting ttft_p99_s&lt;=2,errors&lt;=0%" in page
    assert "<h3>sandbox/ctx=3072: points tried</h3>" in page
    doc = json.loads(render_text(JsonReporter(rep)))
    assert doc["schema"] == "memgap.report/3"
    assert [a["estimate"]["boundary"] for a in doc["capacities"][0]["arms"]] == [4.0, 12.0]
