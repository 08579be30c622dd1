"""A capacity search in ``memgap report``: the boundary per arm with its interval beside the
prediction, the points tried with the engine's queue, the ratio both ways, runs against a
grid's -- in Markdown, HTML and JSON, from the store alone."""

from __future__ import annotations

import json
from pathlib import Path

from kv_bound_double import KvBoundServer
from memgap.analysis.compare import compare_runs
from memgap.analysis.report_data import build_report
from memgap.capacity import Arm, CapacitySettings, Ladder, SearchSettings
from memgap.capacity_run import run_capacity
from memgap.report.base import render_text
from memgap.report.html import HtmlReporter
from memgap.report.jsondoc import JsonReporter
from memgap.report.markdown import MarkdownReporter
from memgap.spec import LlamaCppSpec, RunSpec
from memgap.store import open_store


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
        run_capacity(settings, spec_for, st, execute=KvBoundServer(), make=lambda s: s)
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
    # load 5: the engine deferred one request, its KV full, none preempted
    assert "| 5 | 2 | no | 0.01 | 3.2 | 0 | 1 | 100% | 0 |" in md
    assert "plan predicts 0.33x the concurrent requests, measured 0.33x (0.33-0.33)" in md
    assert "a fixed grid of the same resolution (16 loads per arm): 32 once each" in md
    page = render_text(HtmlReporter(rep))
    assert "<h2>Capacity capacity-rep: highest concurrency meeting ttft_p99_s&lt;=2,errors&lt;=0%" in page
    assert "<h3>sandbox/ctx=3072: points tried</h3>" in page
    doc = json.loads(render_text(JsonReporter(rep)))
    assert doc["schema"] == "memgap.report/3"
    assert [a["estimate"]["boundary"] for a in doc["capacities"][0]["arms"]] == [4.0, 12.0]
