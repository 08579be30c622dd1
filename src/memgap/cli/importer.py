"""``memgap import SOURCE FILE...``: other tools' results into the store as runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from memgap.importers import IMPORTERS, import_files, importer_module
from memgap.store import open_store


def import_command(
    source: Annotated[str, typer.Argument(help=f"What the files are: {', '.join(sorted(IMPORTERS))}.")],
    files: Annotated[list[Path], typer.Argument(help="Files to import.")],
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite runs already in the store.")] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Leave runs already in the store as they are.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was imported as JSON.")] = False,
) -> None:
    """Import another tool's results (e.g. benchmark-spark's JSON) so explain, compare and report can read them."""
    importer_module(source)  # unknown source: a usage error before the store is touched
    with open_store(store) as st:
        summary = import_files(st, source, files, force=force, skip_existing=skip_existing)
    if as_json:
        typer.echo(json.dumps({"source": summary.source, "store": str(store), "files": list(summary.files),
                               "added": list(summary.added), "skipped": list(summary.skipped)}, indent=2))
        return
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"imported {len(summary.added)} {source} run(s) into {store}"
              + (f"; {len(summary.skipped)} already there, left as they were" if summary.skipped else ""),
              markup=False)


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
