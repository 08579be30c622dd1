"""``memgap compare [SELECTORS]``: environments against each other, per model, with
intervals, tests and quality findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memgap.analysis.compare import DEFAULT_MARGIN, build_comparison, parse_margin
from memgap.analysis.metrics import BY_NAME, METRICS, metric
from memgap.errors import UsageError
from memgap.store import open_store


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def render_terminal(out: dict[str, Any], console: Console) -> None:
    for g in out["groups"]:
        if g["b"] is None:
            console.print(f"[bold]{g['model']}[/bold]: only {g['a']} ({g['runs'][g['a']]} runs); nothing to compare")
            continue
        t = Table(title=f"{g['model']}: {g['b']} vs {g['a']}", title_justify="left")
        for col in ("metric", g["a"], g["b"], "difference [95% CI]", "p (Holm)", "g", "verdict"):
            t.add_column(col, overflow="fold")
        for m in g["metrics"]:
            mt = BY_NAME[m["metric"]]
            a, b, d = m["a"], m["b"], m["difference"]
            ci = d["ci95"]
            ci_s = f" [{mt.format(ci[0])}, {mt.format(ci[1])}]" if ci else ""
            rel = f" ({100 * d['relative']:+.1f}%)" if d["relative"] is not None else ""
            colour = {"different": "red", "equivalent": "green"}.get(m["verdict"], "yellow")
            t.add_row(
                f"{m['metric']} ({mt.unit})" if mt.unit not in ("bytes", "s") else m["metric"],
                f"{mt.format(a['mean'])} ± {mt.format(a['sd'])} (n={a['n']})",
                f"{mt.format(b['mean'])} ± {mt.format(b['sd'])} (n={b['n']})",
                f"{mt.format(d['mean'])}{rel}{ci_s}",
                _fmt_p(m["p_holm"]),
                "-" if m["effect_size"] is None else f"{m['effect_size']:+.2f}",
                f"[{colour}]{m['verdict']}[/{colour}]",
            )
        console.print(t)
    if out["findings"]:
        console.print("[bold]Findings[/bold]")
        for f in out["findings"]:
            colour = "red" if f["severity"] == "error" else "yellow"
            console.print(f"[{colour}]{f['severity']}[/{colour}] {f['check']}: {f['message']}", markup=True, highlight=False)
            console.print(f"    advice: {f['advice']}", markup=False, highlight=False)


def compare_command(
    selectors: Annotated[list[str] | None, typer.Argument(help="Run selectors: none (every run, per model), one (narrow), or two (A vs B). RUN_ID or key=value[,key=value].")] = None,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    metric_names: Annotated[list[str] | None, typer.Option("--metric", help=f"Metric to compare, repeatable (default: every metric with data; known: {', '.join(BY_NAME)}).")] = None,
    margin: Annotated[str, typer.Option(help="Equivalence margin, a fraction of the baseline mean (5% or 0.05).")] = f"{DEFAULT_MARGIN:.0%}",
    alpha: Annotated[float, typer.Option(help="Significance level (Holm-corrected across metrics).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare environments per model: n, mean, median, sd; difference with a bootstrap 95% interval; Welch and Mann-Whitney tests, Holm-corrected; Hedges' g; verdicts; quality findings."""
    if not (0 < alpha < 1):
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    metrics = [metric(n) for n in metric_names] if metric_names else list(METRICS)
    if not store.exists():
        raise UsageError(f"--store: {store} does not exist")
    with open_store(store) as st:
        out = build_comparison(st, selectors or [], metrics=metrics, margin=parse_margin(margin), alpha=alpha, seed=seed)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    render_terminal(out, Console(highlight=False, soft_wrap=False, width=200))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
