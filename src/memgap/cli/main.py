"""``memgap`` entry point: ``main(argv) -> int`` maps typed errors to exit codes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer
from rich.console import Console

from memgap.errors import MemgapError

app = typer.Typer(
    name="memgap",
    help="Where the memory goes when an LLM inference engine runs here, and how much KV "
    "cache each environment really leaves it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per subcommand; each defines ``register(app)``. Add new ones here.
COMMAND_MODULES: tuple[str, ...] = (
    "memgap.cli.run",
    "memgap.cli.plan",
    "memgap.cli.parse_log",
    "memgap.cli.probe",
    "memgap.cli.doctor",
    "memgap.cli.importer",
    "memgap.cli.explain",
    "memgap.cli.watch",
    "memgap.cli.compare",
    "memgap.cli.report",
    "memgap.cli.sweep",
)

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Commands signal a non-zero status with ``typer.Exit(code)`` and
    report problems by raising ``MemgapError``; anything else is a bug and propagates."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="memgap", standalone_mode=True)
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    except MemgapError as e:
        _err.print(f"memgap: error: {e}", markup=False)
        return e.exit_code
    except KeyboardInterrupt:
        _err.print("memgap: interrupted", markup=False)
        return 130
    return 0


def entry() -> None:
    sys.exit(main())
