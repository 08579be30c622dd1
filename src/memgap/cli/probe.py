"""``memgap probe``: the KV budget each engine's rule would give here, now."""

from __future__ import annotations

import typer


def probe() -> None:
    """Work in progress."""
    raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
