"""``memgap report [SELECTORS] --html FILE --md FILE --json FILE``: the answer first (explain's
paragraph and verdicts for every pair of environments compared), then the studies, the
comparison, charts, findings and exact configuration; Markdown, one self-contained HTML
file, and JSON, all rendered from one aggregation of the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memgap.analysis.compare import DEFAULT_MARGIN, build_comparison, parse_margin, selected_runs
from memgap.analysis.metrics import METRICS
from memgap.analysis.report_data import build_report
from memgap.errors import UsageError
from memgap.report.base import Reporter, render_text
from memgap.report.html import HtmlReporter
from memgap.report.jsondoc import JsonReporter
from memgap.report.markdown import MarkdownReporter
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
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here (the answer, verdicts and margins as fields).")] = None,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    title: Annotated[str, typer.Option(help="Report title.")] = "memgap report",
    margin: Annotated[str, typer.Option(help="Equivalence margin, a fraction of the baseline mean (5% or 0.05), for the metrics no study declared a margin for.")] = f"{DEFAULT_MARGIN:.0%}",
    alpha: Annotated[float, typer.Option(help="Significance level (Holm-corrected across metrics).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Write a report: the answer and verdicts first, then per model memory timelines of the environments overlaid, the memory ledger, KV cache and throughput with intervals, the comparison, findings and configuration."""
    outputs: list[tuple[Path, type[HtmlReporter] | type[MarkdownReporter] | type[JsonReporter]]] = [
        (p, cls) for p, cls in ((md, MarkdownReporter), (html, HtmlReporter), (json_path, JsonReporter)) if p is not None
    ]
    if not outputs:
        raise UsageError("give --html FILE, --md FILE and/or --json FILE")
    if not store.exists():
        raise UsageError(f"--store: {store} does not exist")
    sels = selectors or []
    with open_store(store) as st:
        comparison = build_comparison(st, sels, metrics=list(METRICS), margin=parse_margin(margin),
                                      alpha=alpha, seed=seed)
        sets = selected_runs(st, sels)
        runs = {r.run_id: r for group in sets for r in group}
        sides = ((sels[0], sets[0]), (sels[1], sets[1])) if len(sets) == 2 else None
        rep = build_report(st, list(runs.values()), comparison, title=title, sides=sides)
    for path, cls in outputs:
        reporter: Reporter = cls(rep)
        _write(path, render_text(reporter))
    Console(highlight=False).print(f"wrote {', '.join(str(p) for p, _ in outputs)} ({len(runs)} runs, "
                                   f"{len(rep['answers'])} answers, {len(rep['findings'])} findings)", markup=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
