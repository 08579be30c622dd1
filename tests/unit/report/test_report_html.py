"""The HTML report: self-contained, escaped, with the charts and sections it promises."""

from __future__ import annotations

import re
from pathlib import Path

from memgap.analysis.compare import compare_runs
from memgap.analysis.report_data import build_report
from memgap.report.base import render_text
from memgap.report.html import CSP, HtmlReporter
from memgap.store import Store

EXTERNAL = re.compile(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def _html(db: Path) -> tuple[str, dict]:  # type: ignore[type-arg]
    with Store(db) as st:
        runs = st.runs()
        rep = build_report(st, runs, compare_runs(runs), title="t <&>")
    return render_text(HtmlReporter(rep)), rep


def test_self_contained_and_escaped(report_store: Path) -> None:
    html, _ = _html(report_store)
    assert f'content="{CSP.replace(chr(39), "&#x27;")}"' in html
    assert not EXTERNAL.search(html)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "<title>t &lt;&amp;&gt;</title>" in html
    assert "b1 &lt;v&gt;" in html


def test_sections_and_charts(report_store: Path) -> None:
    html, rep = _html(report_store)
    (m,) = rep["models"]
    assert set(m["timelines"]) >= {"process_rss_bytes", "host_used_bytes"}
    assert len(m["timelines"]["process_rss_bytes"]) == 10  # one line per run
    assert html.count("<svg") >= 4
    assert html.count("<polyline") >= 20  # 10 runs x 2 timelines
    assert "engine process RSS" in html and "KV cache, throughput" in html
    kv = {r["environment"]: r for r in m["intervals"]["kv_cache_bytes"]}
    assert kv["native"]["mean"] == 180 * 2**20 and kv["native"]["n"] == 5
    tps = {r["environment"]: r for r in m["intervals"]["output_tokens_per_s"]}
    lo, hi = tps["native"]["ci95"]
    assert lo < 70.4 < hi
    assert "sandbox vs native" in html and "Configuration" in html and "Findings" in html


def test_ledger_bars_when_the_ledger_can_be_built(report_store: Path) -> None:
    html, rep = _html(report_store)
    led = rep["models"][0]["ledger"]
    if led is not None:  # memgap.analysis.ledger present and the runs measured
        envs = [b["environment"] for b in led["bars"]]
        assert envs == ["native", "sandbox"]
        assert "Memory ledger" in html
