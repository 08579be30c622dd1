"""Wall time of short memgap commands, this tree against a base commit, side by side.

Each command is timed as a whole process (``python -m memgap ...``, from fork to exit), so
interpreter start, imports and the command's own work are all in it; that is what a user
waits for. The base commit is checked out in a temporary git worktree, removed at exit;
each tree is selected by ``PYTHONPATH=<tree>/src`` (checked: ``memgap`` must import from
there). Both trees read the same input files, this tree's fixtures. Runs alternate base,
this tree, base, this tree... so a drift of the machine's speed hits both alike; one
untimed run of each first writes the bytecode caches. Printed: the median and the fastest
run per command and tree, and the ratio of the medians, base / this tree.

The commands: ``--help``; ``plan`` for the SmolLM2-135M fixture config at two budgets;
``parse-log`` of the llama.cpp fixture log; ``probe --no-torch`` (importing torch, where
installed, is a reading probe takes, not start-up, and would cost seconds in both trees).

The default base is the commit before the lazy subcommands (the parent of the commit that
added this script; HEAD while the script is not committed yet).

    .venv/bin/python benchmarks/cli_startup.py [--base COMMIT] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "plan": ["plan", "-b", "37.26GiB", "-b", "512MiB", "--model",
             str(FIXTURES / "models" / "smollm2-135m"), "--context", "8192"],
    "parse-log": ["parse-log", str(FIXTURES / "logs" / "llamacpp-smollm2-c8192-np4.log")],
    "probe": ["probe", "--no-torch"],
}


@dataclass(frozen=True)
class Tree:
    label: str
    src: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.src)}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def default_base() -> str:
    added = git("log", "--diff-filter=A", "--format=%H", "--", "benchmarks/cli_startup.py")
    first = added.splitlines()[-1] if added else None
    return git("rev-parse", f"{first}^" if first else "HEAD")


def check_tree(tree: Tree) -> None:
    where = subprocess.run([sys.executable, "-c", "import memgap; print(memgap.__file__)"],
                           env=tree.env(), check=True, capture_output=True, text=True).stdout
    if not Path(where.strip()).resolve().is_relative_to(tree.src.resolve()):
        raise SystemExit(f"{tree.label}: memgap imports from {where.strip()}, not {tree.src}")


def run_once(tree: Tree, args: list[str]) -> float:
    """Seconds from start to exit of ``python -m memgap ARGS`` in ``tree``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "memgap", *args], env=tree.env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree.label}: memgap {' '.join(args)} exited {done.returncode}:\n"
                         f"{done.stderr}")
    return elapsed


def measure(trees: tuple[Tree, Tree], runs: int) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {
        name: {t.label: [] for t in trees} for name in COMMANDS}
    for args in COMMANDS.values():  # warm-up: bytecode caches, page cache
        for tree in trees:
            run_once(tree, args)
    for _ in range(runs):
        for name, args in COMMANDS.items():
            for tree in trees:
                times[name][tree.label].append(run_once(tree, args))
    return times


def report(times: dict[str, dict[str, list[float]]], base: Tree, head: Tree) -> None:
    header = (f"{'command':<10} {'base median':>12} {'base min':>9} {'this median':>12} "
              f"{'this min':>9} {'base/this':>10}")
    print(header)
    print("-" * len(header))
    for name, by_tree in times.items():
        b, h = by_tree[base.label], by_tree[head.label]
        mb, mh = statistics.median(b), statistics.median(h)
        print(f"{name:<10} {mb * 1e3:>10.0f}ms {min(b) * 1e3:>7.0f}ms {mh * 1e3:>10.0f}ms "
              f"{min(h) * 1e3:>7.0f}ms {mb / mh:>9.1f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--base", help="commit to compare with (default: before lazy subcommands)")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per command and tree")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    base_commit = git("rev-parse", a.base) if a.base else default_base()
    with tempfile.TemporaryDirectory(prefix="memgap-cli-startup-") as tmp:
        worktree = Path(tmp) / "base"
        base, head = Tree("base", worktree / "src"), Tree("this", ROOT / "src")
        git("worktree", "add", "--detach", str(worktree), base_commit)
        try:
            for tree in (base, head):
                check_tree(tree)
            print(f"base {base_commit[:12]} against this tree ({ROOT}); python "
                  f"{sys.version.split()[0]}; {a.runs} runs each, alternating\n")
            times = measure((base, head), a.runs)
        finally:
            git("worktree", "remove", "--force", str(worktree))
    report(times, base, head)
    return 0


if __name__ == "__main__":
    sys.exit(main())
