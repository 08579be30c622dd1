"""``memgap explain A B``: two runs or groups side by side, and which explanation the numbers support.

The answer comes first (one paragraph), then one line per hypothesis with both of its
questions, then the ledger tables, then the evidence behind each hypothesis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memgap.analysis.capacity_outcome import capacity_citation
from memgap.analysis.explain import (
    CONTRADICTED,
    EXPLAIN_VERSION,
    SUPPORTED,
    Explanation,
    Row,
    RunInput,
    Side,
    explain,
    make_side,
    median,
)
from memgap.analysis.ledger import CATEGORIES
from memgap.analysis.selectors import HELP as SELECTOR_HELP
from memgap.analysis.selectors import select_runs
from memgap.store import Store, StoredRun, open_store
from memgap.units import format_bytes

_VERDICT_STYLE = {SUPPORTED: "bold green", CONTRADICTED: "bold red"}


def _inputs(store: Store, runs: list[StoredRun]) -> list[RunInput]:
    return [RunInput(r.record, store.series(r.run_id)) for r in runs]


def _select(store: Store, selector: str) -> list[StoredRun]:
    return select_runs(store, selector, default_status="ok")


def explain_command(
    a: Annotated[str, typer.Argument(help=f"One side: {SELECTOR_HELP}; several runs are summarised by their median.")],
    b: Annotated[str | None, typer.Argument(help="The other side, the same way. Without it: the ledger of A alone.")] = None,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: answer, a, b, categories, "
                                          "hypotheses, notes.")] = False,
    peak: Annotated[bool, typer.Option("--peak/--no-peak", help="Also show the ledgers at the run's peak.")] = True,
) -> None:
    """Compare two runs (or groups, by their median) category by category and give a verdict on each hypothesis."""
    if b is None:
        with open_store(store) as st:
            side = make_side(a, _inputs(st, _select(st, a)))
        if as_json:
            typer.echo(json.dumps({"explain_version": EXPLAIN_VERSION, "a": side.describe(),
                                   "ledgers": {m: [led.to_dict() for led in side.ledgers[m]] for m in ("ready", "peak")}},
                                  indent=2))
            return
        _print_one(side, show_peak=peak)
        return
    with open_store(store) as st:
        runs_a, runs_b = _select(st, a), _select(st, b)
        ex = explain(a, _inputs(st, runs_a), b, _inputs(st, runs_b), capacity=capacity_citation(st, runs_a, runs_b))
    if as_json:
        typer.echo(json.dumps(ex.to_dict(), indent=2))
        return
    _print(ex, show_peak=peak)


def _yes(v: bool | None) -> str:
    return "unknown" if v is None else "yes" if v else "no"


def _fmt(n: int | None) -> str:
    return format_bytes(n, precision=1)


def _delta(n: int | None) -> str:
    if n is None:
        return "-"
    return ("+" if n > 0 else "") + format_bytes(n, precision=1) if n else "0"


def _table(title: str, rows: tuple[Row, ...] | list[Row], a: str, b: str) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False)
    t.add_column("category")
    t.add_column("A", justify="right")
    t.add_column("B", justify="right")
    t.add_column("B - A", justify="right")
    t.add_column("source", overflow="fold", style="dim")
    for r in rows:
        style = "bold" if r.key in ("total", "run_total", "unexplained") else None
        t.add_row(r.title, _fmt(r.a_bytes), _fmt(r.b_bytes), _delta(r.delta_bytes), r.source, style=style)
    return t


def _print(ex: Explanation, *, show_peak: bool) -> None:
    out = Console(highlight=False, soft_wrap=True, width=max(Console().width, 120))
    out.print(ex.answer.text, markup=False)
    out.print()
    for tag, side in (("A", ex.a), ("B", ex.b)):
        d = side.describe()
        ids = ", ".join(d["run_ids"][:4]) + (f" +{len(d['run_ids']) - 4}" if len(d["run_ids"]) > 4 else "")
        out.print(f"[bold]{tag}[/bold] {side.label}: {d['runs']} run(s) ({ids}); environment "
                  f"{', '.join(d['environment'])}, engine {', '.join(d['engine'])}, model {', '.join(d['model'])}"
                  + (" - medians" if d["runs"] > 1 else ""))
    out.print("[bold]Hypotheses[/bold] (does it differ? does it explain the KV difference through the engine's rule?)")
    width = max(len(h.name) for h in ex.hypotheses)
    for h in ex.hypotheses:
        style = _VERDICT_STYLE.get(h.verdict, "yellow")
        out.print(f"  [bold]{h.name:<{width}}[/bold]  differs: {_yes(h.differs):<7} explains KV: "
                  f"{_yes(h.explains_kv):<7} [{style}]{h.verdict}[/{style}]"
                  + (f"  [dim]{escape(h.kv_evidence)}[/dim]" if h.kv_evidence else ""))
    out.print()
    ledger_rows = [r for r in ex.categories if r.kind == "ledger"]
    engine_rows = [r for r in ex.categories if r.kind == "engine" and (r.a_bytes is not None or r.b_bytes is not None)]
    measured = any(r.a_bytes is not None or r.b_bytes is not None for r in ledger_rows if r.key != "kv_cache")
    if measured:
        out.print(_table("Ledger at engine ready", ledger_rows, ex.a.label, ex.b.label))
        if show_peak:
            out.print(_table("Ledger at peak", list(ex.categories_at_peak), ex.a.label, ex.b.label))
    else:
        out.print("No memory-layer readings on either side: the ledger is not measured; engine figures follow.")
    if engine_rows:
        out.print(_table("What the engine reported", engine_rows, ex.a.label, ex.b.label))
    out.print("[bold]Evidence[/bold]")
    for h in ex.hypotheses:
        style = _VERDICT_STYLE.get(h.verdict, "yellow")
        out.print(f"  [{style}]{h.verdict:<13}[/{style}] [bold]{h.name}[/bold]: {escape(h.claim)}")
        out.print(f"                {h.evidence}", markup=False)
    if ex.notes:
        out.print("[bold]What these runs can and cannot establish[/bold]")
        for n in ex.notes:
            out.print(f"  - {n}", markup=False)


def _print_one(side: Side, *, show_peak: bool) -> None:
    """One run's (or one group's median) ledger, without a comparison."""
    out = Console(highlight=False, soft_wrap=True, width=max(Console().width, 120))
    d = side.describe()
    out.print(f"{side.label}: {d['runs']} run(s) ({', '.join(d['run_ids'][:4])}"
              + (f" +{d['runs'] - 4}" if d["runs"] > 4 else "") + ")" + (" - medians" if d["runs"] > 1 else ""))
    for mark in ("ready", "peak") if show_peak else ("ready",):
        ledgers = side.ledgers[mark]
        if not any(led.measured for led in ledgers):
            out.print(f"at {mark}: the memory layers were not measured ({ledgers[0].notes[0] if ledgers[0].notes else ''})",
                      markup=False)
            continue
        t = Table(title=f"Ledger at {'engine ready' if mark == 'ready' else 'peak'}", title_justify="left")
        t.add_column("category")
        t.add_column("bytes", justify="right")
        t.add_column("share", justify="right")
        t.add_column("source", overflow="fold", style="dim")
        total = median([led.total_bytes for led in ledgers])
        for key, title in CATEGORIES:
            v = median([led.bytes(key) for led in ledgers])
            share = f"{100 * v / total:.1f}%" if v is not None and total else "-"
            src = "; ".join(sorted({led.get(key).source for led in ledgers}))
            t.add_row(title, _fmt(v), share, src, style="bold" if key == "unexplained" else None)
        t.add_row("total", _fmt(total), "100%", ledgers[0].total_source, style="bold")
        run_total = median([led.run_total_bytes for led in ledgers])
        t.add_row("the run's own memory", _fmt(run_total), "", ledgers[0].run_total_source)
        out.print(t)
        for n in sorted({n for led in ledgers for n in led.notes}):
            out.print(f"  - {n}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)
