"""``memgap`` entry point: ``main(argv) -> int`` maps typed errors to exit codes.

Subcommands load on demand (STYLE 17): ``memgap --help`` lists them from ``COMMANDS``
below, and a command's module is imported only when that command runs. Importing every
module at start pulled in scipy.stats, numpy, httpx and the runner: 1.2-1.5 s before any
command could answer (``benchmarks/cli_startup.py`` measures it)."""

from __future__ import annotations

import copy
import importlib
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from typer.core import MarkupMode, TyperCommand, TyperGroup

from memgap.errors import MemgapError


@dataclass(frozen=True)
class CommandEntry:
    """Where a subcommand lives and the line ``memgap --help`` shows for it: the first
    paragraph of the command function's docstring (tests/unit/cli/test_main.py keeps the
    two equal)."""

    module: str  # defines ``register(app)``, which adds exactly this one command
    summary: str


# One module per subcommand, in the order ``--help`` lists them. Add new ones here.
COMMANDS: dict[str, CommandEntry] = {
    "run": CommandEntry(
        "memgap.cli.run",
        "Run the engine and workload in each environment, measure memory at every layer, "
        "store and compare."),
    "rerun": CommandEntry(
        "memgap.cli.rerun",
        "Run a stored run's spec again (same engine, options, environment, workload, "
        "sampler)."),
    "plan": CommandEntry(
        "memgap.cli.plan",
        "KV bytes per token, tokens that fit, concurrent sequences and longest context, "
        "per budget."),
    "parse-log": CommandEntry(
        "memgap.cli.parse_log",
        "Read the memory figures an engine printed: weights, peak, KV cache, compute."),
    "probe": CommandEntry(
        "memgap.cli.probe",
        "Read host memory, this cgroup and the GPUs now, and apply each engine's KV rule."),
    "doctor": CommandEntry(
        "memgap.cli.doctor",
        "What this machine offers memgap: cgroups, privileges, container engines, GPUs, "
        "engines."),
    "import": CommandEntry(
        "memgap.cli.importer",
        "Import another tool's results (e.g. benchmark-spark's JSON) so explain, compare "
        "and report can read them."),
    "explain": CommandEntry(
        "memgap.cli.explain",
        "Compare two runs (or groups, by their median) category by category and give a "
        "verdict on each hypothesis."),
    "watch": CommandEntry(
        "memgap.cli.watch",
        "Sample a running process, cgroup or container like a run is sampled, live; write "
        "the series."),
    "compare": CommandEntry(
        "memgap.cli.compare",
        "Compare environments per model: n, mean, median, sd; difference with a bootstrap "
        "95% interval; Welch and Mann-Whitney tests, Holm-corrected; Hedges' g; verdicts; "
        "quality findings."),
    "report": CommandEntry(
        "memgap.cli.report",
        "Write a report: the answer and verdicts first, then per model memory timelines of "
        "the environments overlaid, the memory ledger, KV cache and throughput with "
        "intervals, the comparison, findings and configuration."),
    "sweep": CommandEntry(
        "memgap.cli.sweep",
        "Sweep load (concurrency or rate) at one or more KV budgets: one stored run per "
        "point,\nthroughput, goodput, latency and the engine's own queue, and where the "
        "curves part."),
    "capacity": CommandEntry(
        "memgap.cli.capacity",
        "Search the highest load meeting an SLO per environment and KV budget, with an "
        "interval,\nbeside plan's predicted concurrency; every point a stored run, resumable."),
}


def load_command(name: str, *, rich_markup_mode: MarkupMode) -> TyperCommand:
    """Import ``name``'s module and build its click command, as ``app`` did when every
    module registered on it at start (same options, help and markup)."""
    entry = COMMANDS[name]
    sub = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      rich_markup_mode=rich_markup_mode)
    importlib.import_module(entry.module).register(sub)
    command = typer.main.get_command(sub)
    if command.name != name or not isinstance(command, TyperCommand):
        raise RuntimeError(f"{entry.module}.register() must add exactly the command {name!r}")
    return command


class _LoadedOnDemand(MutableMapping[str, Any]):
    """The group's ``commands``: every name is there, a command is built when first looked
    up. Iterating gives names only, so typer's "Did you mean 'plan'?" imports nothing."""

    def __init__(self, rich_markup_mode: MarkupMode) -> None:
        self._rich_markup_mode = rich_markup_mode
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name, rich_markup_mode=self._rich_markup_mode)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        raise TypeError("memgap's commands are listed in COMMANDS, not added to the group")

    def __delitem__(self, name: str) -> None:
        raise TypeError("memgap's commands are listed in COMMANDS, not removed from the group")

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


class LazyGroup(TyperGroup):
    """The ``memgap`` group: resolves a command by importing only its module, and renders
    ``--help`` from ``COMMANDS`` (typer's help asks the group for every command object).

    Contexts, formatters and commands are typed ``Any``: they are click's classes, which
    typer 0.2x vendors as the private ``typer._click`` and older typer takes from click."""

    def __init__(self, **attrs: Any) -> None:
        attrs.pop("commands", None)  # typer passes {}: nothing registers on ``app``
        super().__init__(**attrs)
        self.commands = _LoadedOnDemand(self.rich_markup_mode)

    def list_commands(self, ctx: Any) -> list[str]:
        # TyperGroup lists ``commands.items()``, which would build every command.
        return list(COMMANDS)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # A copy whose commands are bare stand-ins: names and summaries, no modules.
        listing = copy.copy(self)
        listing.commands = {name: TyperCommand(name=name, help=entry.summary)
                            for name, entry in COMMANDS.items()}
        TyperGroup.format_help(listing, ctx, formatter)


app = typer.Typer(
    name="memgap",
    cls=LazyGroup,
    help="Where the memory goes when an LLM inference engine runs here, and how much KV "
    "cache each environment really leaves it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    # Makes ``app`` a group although no command registers on it (typer builds a group only
    # from a callback or registered commands); the help is ``app``'s.
    pass


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
