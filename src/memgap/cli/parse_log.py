"""``memgap parse-log``: what an engine's own log says about its memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memgap.engines.logs import ENGINES, canonical_engine, parse_engine_log
from memgap.engines.report import EngineReport
from memgap.errors import UsageError
from memgap.units import format_bytes

_FIELDS: tuple[tuple[str, str], ...] = (
    ("model_bytes", "weights"),
    ("peak_bytes", "peak"),
    ("kv_cache_bytes", "KV cache"),
    ("kv_cache_tokens", "KV tokens"),
    ("kv_cache_blocks", "KV blocks"),
    ("kv_fraction", "fraction"),
    ("device_total_bytes", "device total"),
    ("compute_bytes", "compute / graphs"),
)


def parse_log(
    file: Annotated[Path, typer.Argument(help="The engine's log file ('-' reads stdin).")],
    engine: Annotated[
        str, typer.Option("--engine", "-e", help=f"One of {', '.join(ENGINES)}, or auto.")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    evidence: Annotated[bool, typer.Option("--evidence", help="Also print the lines read.")] = False,
) -> None:
    """Read the memory figures an engine printed: weights, peak, KV cache, compute."""
    name = canonical_engine(engine)
    if name is None:
        raise UsageError(f"--engine: unknown engine {engine!r} (use one of {', '.join(ENGINES)}, auto)")
    text = _read(file)
    report = parse_engine_log(name, text)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print(report, file, show_evidence=evidence)


def _read(file: Path) -> str:
    if str(file) == "-":
        return typer.get_text_stream("stdin").read()
    try:
        return file.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read {file}: {e.strerror or e}") from e


def _value(key: str, value: int | float | None) -> str:
    if value is None:
        return "-"
    if key.endswith("_bytes"):
        return f"{format_bytes(value, precision=2)}  ({int(value):,} B)"
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}"


def _print(report: EngineReport, file: Path, *, show_evidence: bool) -> None:
    out = Console(highlight=False, soft_wrap=True)
    if not report.found_any:
        out.print(f"{file}: no memory lines found for engine {report.engine}"
                  + (f" (not found: {', '.join(report.missing)})" if report.missing else ""), markup=False)
        if report.refusal:
            out.print(f"the engine refused to start: {report.refusal}", markup=False)
        return
    table = Table(title=f"{file} ({report.engine})", show_header=False, box=None)
    table.add_column("what", style="bold")
    table.add_column("value")
    d = report.to_dict()
    for key, label in _FIELDS:
        table.add_row(label, _value(key, d[key]))
    for kv in report.kv_caches:
        table.add_row(
            "  cache",
            f"{format_bytes(kv.size_bytes, precision=2)}: {kv.cells} cells x {kv.streams} "
            f"stream(s), {kv.layers} layers, K {kv.k_type} / V {kv.v_type}",
        )
    for key, value in sorted(report.extra.items()):
        shown = _value(key, value) if not isinstance(value, str) else value
        table.add_row(f"  {key}", shown)
    out.print(table)
    if report.refusal:
        out.print(f"the engine refused to start: {report.refusal}", markup=False)
    if report.missing:
        out.print(f"not found in this log ({report.log_variant or 'unknown'} format): {', '.join(report.missing)}",
                  markup=False)
    if show_evidence:
        out.print("\nlines read:", markup=False)
        for line in report.evidence:
            out.print(f"  {line}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("parse-log")(parse_log)
