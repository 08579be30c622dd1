"""The Markdown report carries the same numbers as compare, and the study section."""

from __future__ import annotations

from pathlib import Path

from memgap.analysis.compare import compare_runs
from memgap.analysis.report_data import build_report
from memgap.report.base import render_text
from memgap.report.markdown import MarkdownReporter
from memgap.store import Store


def test_markdown_tables(report_store: Path) -> None:
    with Store(report_store) as st:
        runs = st.runs()
        md = render_text(MarkdownReporter(build_report(st, runs, compare_runs(runs))))
    assert "## Model smol<script>" in md  # Markdown is text; pipes in cells are escaped
    assert "| kv_cache_bytes | native | 5 | 180.00 MiB |" in md
    assert "### sandbox vs native" in md
    assert "| output_tokens_per_s | 70.4 ± 0.5477 (n=5) | 69.4 ± 0.5477 (n=5) | -1 (-1.4%)" in md
    assert "## Findings" in md


def test_pipes_escaped() -> None:
    from memgap.report.markdown import _cell

    assert _cell("a|b\nc") == "a\\|b c"
