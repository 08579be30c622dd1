"""``memgap`` loads a subcommand's module only when that command runs (STYLE 17)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import memgap
from memgap.cli.main import COMMANDS, LazyGroup, app, load_command, main

SRC = Path(memgap.__file__).resolve().parents[1]
MODELS = Path(__file__).parents[2] / "fixtures" / "models"
HEAVY = ("scipy", "numpy", "httpx", "memgap.runner", "memgap.store", "memgap.cli.run")

# A fresh interpreter: in this one, other tests have imported everything already.
PROBE = """
import json, sys
from memgap.cli.main import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def imported_after(*argv: str) -> tuple[int, set[str], str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60, check=True)
    *printed, last = done.stdout.rstrip("\n").split("\n")
    result = json.loads(last)
    return result["rc"], set(result["modules"]), "\n".join(printed)


def test_help_lists_every_command_without_importing_any() -> None:
    rc, modules, out = imported_after("--help")
    assert rc == 0
    assert [m for m in HEAVY if m in modules] == []
    assert [m for m in modules if m.startswith("memgap.cli.") and m != "memgap.cli.main"] == []
    for name, entry in COMMANDS.items():
        assert f" {name} " in out
        assert entry.summary.split()[0] in out


def test_plan_imports_only_what_it_uses() -> None:
    rc, modules, out = imported_after("plan", "-b", "1GiB", "--model",
                                      str(MODELS / "smollm2-135m"), "--json")
    assert rc == 0
    assert json.loads(out)["bytes_per_token"] == 23040
    assert "memgap.cli.plan" in modules
    assert [m for m in HEAVY if m in modules] == []
    assert "memgap.cli.probe" not in modules


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_summary_is_the_commands_own_help(name: str) -> None:
    command = load_command(name, rich_markup_mode="rich")
    assert command.name == name
    assert command.help is not None
    assert inspect.cleandoc(command.help).split("\n\n")[0] == COMMANDS[name].summary


def test_unknown_command_suggests_a_near_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plna"]) == 2
    assert "Did you mean 'plan'?" in capsys.readouterr().err


def test_app_resolves_commands_through_the_group() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, LazyGroup)
    assert group.list_commands(None) == list(COMMANDS)
    command = group.get_command(None, "parse-log")
    assert command is not None and command.name == "parse-log"
    assert group.get_command(None, "nope") is None
