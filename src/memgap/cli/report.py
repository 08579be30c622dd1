"""``memgap report [SELECTORS] --html FILE --md FILE``: the comparison, charts, findings
and exact configuration, as Markdown and as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memgap.analysis.compare import DEFAULT_MARGIN, build_comparison, parse_margin, selected_runs
from memgap.analysis.metrics import METRICS
from memgap.errors import UsageError
from memgap.report.build import build_report
from memgap.report.html import render_html
from memgap.report.markdown import render_markdown
from memgap.store import open_store


def _write(path: Path, text: str) -> None:
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist (for {path})")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report


def report_command(
    selectors: Annotated[list[str] | None, typer.Argument(help="Run selectors, as for compare: none (every run), one, or two (A vs B).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here (one self-contained file).")] = None,
    md: Annotated[Path | None, typer.Option("--md", help="Write the Markdown report here.")] = None,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    title: Annotated[str, typer.Option(help="Report title.")] = "memgap report",
    margin: Annotated[str, typer.Option(help="Equivalence margin, a fraction of the baseline mean (5% or 0.05).")] = f"{DEFAULT_MARGIN:.0%}",
    alpha: Annotated[float, typer.Option(help="Significance level (Holm-corrected across metrics).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Write a report: per model, memory timelines of the environments overlaid, the memory ledger, KV cache and throughput with intervals, the comparison, findings and configuration."""
    if html is None and md is None:
        raise UsageError("give --html FILE and/or --md FILE")
    if not store.exists():
        raise UsageError(f"--store: {store} does not exist")
    sels = selectors or []
    with open_store(store) as st:
        comparison = build_comparison(st, sels, metrics=list(METRICS), margin=parse_margin(margin),
                                      alpha=alpha, seed=seed)
        runs = {r.run_id: r for group in selected_runs(st, sels) for r in group}
        rep = build_report(st, list(runs.values()), comparison, title=title)
    written = []
    if md is not None:
        _write(md, render_markdown(rep))
        written.append(str(md))
    if html is not None:
        _write(html, render_html(rep))
        written.append(str(html))
    Console(highlight=False).print(f"wrote {', '.join(written)} ({len(runs)} runs, {len(rep['findings'])} findings)",
                                   markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
