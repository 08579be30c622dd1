"""``memgap plan``: what a KV budget means in tokens and concurrent sequences."""

from __future__ import annotations

import typer


def plan() -> None:
    """Work in progress."""
    raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
