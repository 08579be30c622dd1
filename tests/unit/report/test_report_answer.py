"""Reports open with explain's answer and verdicts, in every format alike (issue 12, item 3),
and the ledger shows the run's own memory at a readable scale (item 5)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from memgap.analysis.compare import build_comparison, compare_runs
from memgap.analysis.metrics import METRICS
from memgap.analysis.report_data import build_report
from memgap.memory import memory_summary
from memgap.report.base import render_text
from memgap.report.html import HtmlReporter
from memgap.report.jsondoc import JsonReporter
from memgap.report.markdown import MarkdownReporter
from memgap.series import COLUMNS, MemorySeries
from memgap.store import Store

HOSTILE_MODEL = 'smol<script>alert("x")</script>&"m"'  # as in conftest.py

GIB, MIB = 1 << 30, 1 << 20


def _report(db: Path, **kw: Any) -> dict[str, Any]:
    with Store(db) as st:
        runs = st.runs()
        return build_report(st, runs, compare_runs(runs), **kw)


def test_html_opens_with_the_answer_and_both_questions(report_store: Path) -> None:
    rep = _report(report_store)
    html = render_text(HtmlReporter(rep))
    (a,) = rep["answers"]
    assert (a["a"], a["b"], a["runs"]) == ("native", "sandbox", {"a": 5, "b": 5})
    text = a["answer"]["text"]
    assert text.startswith("KV cache 180.0 MiB in both (no difference).")
    body = html.split("<body>", 1)[1]
    # the first paragraph after the title and the store line is the answer
    first_p = re.findall(r"<p[ >]", body)
    assert first_p[:2] == ["<p>", "<p "] and '<p class="answer">' in body
    answer_at = body.index('<p class="answer">')
    assert answer_at < body.index("<h2>Model") and answer_at < body.index("<h2>Findings")
    assert body.index('<section id="answer">') < body.index("<h2>Model")
    # the hostile model name is the group: escaped in the heading
    assert f"<h3>{HOSTILE_MODEL}" not in html
    assert "<h3>smol&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&quot;m&quot;: sandbox vs native" in html
    # both questions for every hypothesis
    assert "<th>differs?</th><th>explains the KV difference?</th>" in html
    for v in a["verdicts"]:
        assert f"<td>{v['hypothesis']}</td>" in html
    page_cache = next(v for v in a["verdicts"] if v["hypothesis"] == "page_cache")
    assert (page_cache["differs"], page_cache["explains_kv"]) == (False, False)  # equal KV: nothing to explain


def test_markdown_and_json_carry_the_same_answer(report_store: Path) -> None:
    rep = _report(report_store)
    md = render_text(MarkdownReporter(rep))
    data = json.loads(render_text(JsonReporter(rep)))
    (a,) = data["answers"]
    assert data["schema"] == "memgap.report/3"
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## The answer"
    assert a["answer"]["text"] in md
    assert md.index(a["answer"]["text"]) < md.index("## Model")
    assert "| page_cache | no | no | contradicted |" in md
    # structured fields, not only the paragraph
    assert a["answer"]["kv_differs"] is False and a["answer"]["kv_delta_bytes"] == 0
    assert {"hypothesis", "differs", "explains_kv", "verdict", "why"} <= set(a["verdicts"][0])


def test_two_selections_are_answered_against_each_other(report_store: Path) -> None:
    sel_a, sel_b = "environment=native", "environment=sandbox"
    with Store(report_store) as st:
        comparison = build_comparison(st, [sel_a, sel_b], metrics=list(METRICS), margin=0.05, alpha=0.05, seed=0)
        a_runs = [r for r in st.runs() if r.environment == "native"]
        b_runs = [r for r in st.runs() if r.environment == "sandbox"]
        rep = build_report(st, [*a_runs, *b_runs], comparison, sides=((sel_a, a_runs), (sel_b, b_runs)))
    (a,) = rep["answers"]
    assert (a["a"], a["b"]) == (sel_a, sel_b)
    html = render_text(HtmlReporter(rep))
    assert "<h3>environment=sandbox vs environment=native (5 vs 5 runs)</h3>" in html
    # the comparison of the two selections is shown too (it was left out before)
    assert "<h3>environment=sandbox vs environment=native</h3>" in html


def _ledger_store(db: Path) -> None:
    """Two sandboxed runs at a peak where the host's page cache (60 GiB, outside the run)
    dwarfs the run's own memory (~400 MiB), as on a machine that has read big models."""
    with Store(db) as st:
        for i, env in enumerate(["native", "sandbox"] * 2):
            n = 20
            s = MemorySeries(rate_hz=10.0)
            s.columns = {c: [None] * n for c in COLUMNS}
            s.columns["t_s"] = [k / 10 for k in range(n)]
            usage = [int((200 + 10 * k + 20 * (env == "sandbox")) * MIB) for k in range(n)]
            s.columns["cgroup_usage_bytes"] = usage
            s.columns["cgroup_anon_bytes"] = [u - 100 * MIB for u in usage]
            s.columns["cgroup_file_bytes"] = [100 * MIB] * n
            s.columns["cgroup_file_mapped_bytes"] = [97 * MIB] * n
            s.columns["cgroup_shmem_bytes"] = [0] * n
            s.columns["process_file_bytes"] = [97 * MIB] * n
            s.columns["process_shmem_bytes"] = [0] * n
            s.columns["host_cached_bytes"] = [60 * GIB + 100 * MIB] * n
            s.columns["host_free_bytes"] = [100 * GIB - 60 * GIB - 100 * MIB - u - GIB for u in usage]
            s.columns["host_used_bytes"] = [100 * GIB - f for f in s.columns["host_free_bytes"]]
            s.marks = {"start": 0.0, "ready": 0.5, "end": 1.9}
            s.host_total_bytes = 100 * GIB
            st.add_run({"run_id": f"r{i}", "created_at": f"2026-01-01T00:0{i}:00+00:00", "status": "ok",
                        "environment": env, "engine": "llamacpp", "model": "m", "engine_options": {"mmap": True},
                        "engine_report": {"engine": "llamacpp", "kv_cache_bytes": 180 * MIB, "compute_bytes": 20 * MIB},
                        "memory": memory_summary(s)}, series=s.to_dict())


def _bar_widths(svg: str) -> list[float]:
    """Per bar (in order), the summed width of its segments."""
    by_y: dict[str, float] = {}
    for y, w in re.findall(r'<rect x="[\d.]+" y="(\d+)" width="([\d.]+)" height="22"', svg):
        by_y[y] = by_y.get(y, 0.0) + float(w)
    return [by_y[y] for y in sorted(by_y, key=int)]


def test_ledger_shows_the_runs_own_memory_readably_and_the_outside_as_context(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    _ledger_store(db)
    rep = _report(db)
    led = rep["models"][0]["ledger"]
    native, sandbox = led["bars"]
    assert native["outside"]["other page cache (outside the run)"] > 50 * GIB
    assert native["own_bytes"] < 1 * GIB and sandbox["own_bytes"] > native["own_bytes"]
    assert "other page cache (outside the run)" not in native["own"] and "KV cache" in native["own"]
    # the parts add up to the host's used memory
    assert abs(native["own_bytes"] + native["outside_bytes"] + (native["unexplained_bytes"] or 0)
               - native["total_bytes"]) < 1024
    html = render_text(HtmlReporter(rep))
    charts = re.findall(r"<svg[^>]*aria-label=\"([^\"]*)\".*?</svg>", html, re.S)
    svgs = dict(zip(charts, re.findall(r"<svg.*?</svg>", html, re.S), strict=True))
    own = svgs["the run&#x27;s own memory"]
    context = next(v for k, v in svgs.items() if k.startswith("host used memory"))
    # on its own scale the larger run fills the chart's 530 px; in context it is a sliver
    assert _bar_widths(own)[1] > 525
    ctx_own = [float(w) for w in re.findall(r'width="([\d.]+)" height="22" fill="#1f77b4"', context)]
    assert ctx_own and max(ctx_own) < 10
    assert "<title>KV cache: 180.0 MiB</title>" in own
    assert "other page cache (outside the run)" in context and "lay outside the run" in html
    md = render_text(MarkdownReporter(rep))
    assert "| the run's own memory |" in md and "| outside the run: other page cache (outside the run) |" in md
