"""Imports point down the layers (DESIGN.md "Shape of the code", STYLE.md 16).

The analysis layer (``memgap.analysis``) reads only the store, and ``memgap.report``
only renders what it aggregated: neither may reach, directly or through any chain of
imports, the code that runs engines (the runner, the environments, the engines' launch
modules, the load client, sweep and study running, the Ray fleet). Reachability is
computed from the source with ``ast`` (no module is imported), counting function-local
imports (they run when the function does) and the package ``__init__`` every import
executes; only imports under ``if TYPE_CHECKING:`` are left out. A function-local import
in these packages that points upward (to the CLI, or from analysis to report) fails too:
it would hide the arrow from a reader of the module's head."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import memgap

SRC = Path(memgap.__file__).resolve().parent
LOWER = ("memgap.analysis", "memgap.report")  # the packages whose imports are checked

# Reaching one of these from analysis or report is an upward arrow.
FORBIDDEN = (
    "memgap.runner", "memgap.envs", "memgap.load.client", "memgap.load.http1", "memgap.load.request",
    "memgap.sweep", "memgap.study", "memgap.fleet", "memgap.sampler", "memgap.cli", "memgap.capacity_run",
    "memgap.diagnose.run", "memgap.outcome", "memgap.selfdriven",
)  # fmt: skip
# Of the engines package only the pure parsers and types may be reached: anything else
# there is an adapter that launches an engine (llamacpp, vllm, sglang, trtllm, registry, ...).
ENGINES_PURE = ("memgap.engines", "memgap.engines.logs", "memgap.engines.report", "memgap.engines.trtllm_report",
                "memgap.engines.base", "memgap.engines.modelfile")


def forbidden(module: str) -> bool:
    if any(module == f or module.startswith(f + ".") for f in FORBIDDEN):
        return True
    if module == "memgap.engines" or module.startswith("memgap.engines."):
        return not any(module == p or (p != "memgap.engines" and module.startswith(p + ".")) for p in ENGINES_PURE)
    return False


def upward(importer: str, target: str) -> bool:
    """An arrow that points up from ``importer``: forbidden code, the CLI, or (from the
    analysis layer) the renderers above it."""
    if forbidden(target):
        return True
    return importer.startswith("memgap.analysis") and (target == "memgap.report" or target.startswith("memgap.report."))


@dataclass(frozen=True)
class Edge:
    target: str
    line: int
    local: bool  # inside a function


def module_files(root: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for sub in child.orelse:
                yield from _walk_one(sub, local)
            continue
        yield from _walk_one(child, local)


def _walk_one(node: ast.AST, local: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, local
        return
    inner = local or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    yield from _walk(node, inner)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def edges(module: str, path: Path, known: set[str]) -> list[Edge]:
    """Every memgap module that importing ``module`` (or calling its functions) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Edge] = []
    for node, local in _walk(tree, False):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [base]
            # ``from memgap.x import y``: y may be a module of its own
            names += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
        for name in names:
            if not (name == "memgap" or name.startswith("memgap.")):
                continue
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            for target in [*_parents(name), name]:
                if target in known and target != module:
                    out.append(Edge(target, node.lineno, local))
    return out


def import_graph() -> dict[str, list[Edge]]:
    files = module_files()
    known = set(files)
    return {m: edges(m, p, known) for m, p in files.items()}


def chain_to_forbidden(graph: dict[str, list[Edge]], start: str) -> list[str] | None:
    """The shortest import chain from ``start`` to forbidden code, or None."""
    seen = {start: [start]}
    queue = [start]
    while queue:
        cur = queue.pop(0)
        for e in graph.get(cur, []):
            if e.target in seen:
                continue
            path = [*seen[cur], f"{e.target} (line {e.line}{', in a function' if e.local else ''})"]
            if forbidden(e.target):
                return path
            seen[e.target] = path
            queue.append(e.target)
    return None


def lower_modules(graph: dict[str, list[Edge]]) -> list[str]:
    return sorted(m for m in graph if any(m == p or m.startswith(p + ".") for p in LOWER))


def test_the_checked_packages_exist() -> None:
    graph = import_graph()
    mods = lower_modules(graph)
    # the layer holds explain, the ledger, the comparison, the study outcome, the sweep curves
    for name in ("memgap.analysis.explain", "memgap.analysis.ledger", "memgap.analysis.compare",
                 "memgap.analysis.study_outcome", "memgap.analysis.sweep_curves", "memgap.analysis.metrics",
                 "memgap.report.html", "memgap.report.markdown", "memgap.report.jsondoc"):
        assert name in mods


def test_analysis_and_report_never_reach_the_code_that_runs_engines() -> None:
    graph = import_graph()
    bad = {m: chain for m in lower_modules(graph) if (chain := chain_to_forbidden(graph, m))}
    assert bad == {}, "\n".join(" -> ".join(c) for c in bad.values())


def test_no_function_local_import_points_upward() -> None:
    graph = import_graph()
    bad = [f"{m}:{e.line} imports {e.target}" for m in lower_modules(graph) for e in graph[m]
           if upward(m, e.target) and (e.local or m.startswith("memgap.analysis"))]
    assert bad == []


# -- the check itself can fail ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "chain_end"), [
    ("from memgap.runner import execute_run\n", "memgap.runner"),
    ("def f():\n    from memgap.sweep import knees\n", "memgap.sweep"),
    ("from memgap import study\n", "memgap.study"),
    ("from memgap.load.slo import parse_slo\n", "memgap.load.client"),  # through load/__init__, if it imports the client
])
def test_a_planted_arrow_is_found(tmp_path: Path, text: str, chain_end: str) -> None:
    graph = import_graph()
    planted = tmp_path / "planted.py"
    planted.write_text(text)
    known = set(graph) | {"memgap.analysis.planted"}
    graph["memgap.analysis.planted"] = edges("memgap.analysis.planted", planted, known)
    chain = chain_to_forbidden(graph, "memgap.analysis.planted")
    if chain_end == "memgap.load.client":
        # only a chain when memgap.load's __init__ imports the client: it must not
        assert chain is None
        return
    assert chain is not None and chain[-1].startswith(chain_end)


def test_a_type_checking_import_is_not_an_arrow(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from memgap.runner import x\n")
    assert edges("memgap.analysis.planted", planted, {"memgap.runner"}) == []


def test_a_function_local_upward_import_is_named(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from memgap.report.html import HtmlReporter\n")
    es = edges("memgap.analysis.planted", planted, {"memgap.report", "memgap.report.html"})
    assert [e.target for e in es if e.local and upward("memgap.analysis.planted", e.target)] == [
        "memgap.report", "memgap.report.html"]
