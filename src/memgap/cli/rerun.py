"""``memgap rerun RUN_ID``: run a stored run's spec again."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from memgap.cli.run import run_specs
from memgap.errors import UsageError
from memgap.spec import RunSpec
from memgap.store import open_store


def rerun_command(
    run_id: Annotated[str, typer.Argument(help="A stored run's id: its spec is run again.")],
    env: Annotated[list[str] | None, typer.Option("--env", help="Run it in these environments instead (repeatable).")] = None,
    print_spec: Annotated[bool, typer.Option("--print-spec", help="Print the stored spec as JSON and run nothing.")] = False,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> int:
    """Run a stored run's spec again (same engine, options, environment, workload, sampler)."""
    with open_store(store) as st:
        run = st.get(run_id)
    stored = run.record.get("spec")
    if not isinstance(stored, dict):
        raise UsageError(f"run {run_id} was stored by a memgap without run specs (record version "
                         f"{run.record.get('record_version')}); it cannot be rerun exactly")
    spec = RunSpec.from_dict(stored, origin=f"run {run_id}'s spec")
    specs = [spec] if not env else [spec.with_environment(name) for name in env]
    if print_spec:
        sys.stdout.write(json.dumps([s.to_dict() for s in specs], indent=2) + "\n")
        return 0
    return run_specs(specs, store=store, as_json=as_json)


def register(app: typer.Typer) -> None:
    app.command("rerun")(rerun_command)
