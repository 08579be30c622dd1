"""``memgap run EXPERIMENT.toml``: run a study from an experiment file, or resume it.

Options given on the command line override the file's settings (an override that changes
the plan of a stored study is refused like an edit of the file would be)."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.console import Console

from memgap.errors import Interrupted
from memgap.experiment import Experiment, load_experiment
from memgap.matrix import Cell, PlannedRun, plan_runs
from memgap.store import open_store
from memgap.study import make_env, run_study

# run option -> (experiment section, key); values pass through a converter where needed
_OVERRIDES: dict[str, tuple[str, str]] = {
    "env": ("study", "environments"),
    "label": ("study", "label"),
    "requests": ("workload", "requests"),
    "concurrency": ("workload", "concurrency"),
    "rate": ("workload", "request_rate_per_s"),
    "arrival": ("workload", "arrival"),
    "prompt_tokens": ("workload", "prompt_tokens"),
    "output_tokens": ("workload", "output_tokens"),
    "warmup": ("workload", "warmup_requests"),
    "api": ("workload", "api"),
    "request_timeout": ("workload", "timeout_s"),
    "seed": ("workload", "seed"),
    "ctx_size": ("engine", "ctx_size"),
    "parallel": ("engine", "parallel"),
    "threads": ("engine", "threads"),
    "mmap": ("engine", "mmap"),
    "kv_type": ("engine", "kv_type"),
    "kv_unified": ("engine", "kv_unified"),
    "model": ("engine", "models"),
    "server_path": ("engine", "server_path"),
    "engine_arg": ("engine", "extra_args"),
    "memory_limit": ("environment", "memory_limit"),
}
_CONTAINER = {"image": "image", "rootfs": "rootfs", "memory": "memory", "memory_swap": "memory_swap",
              "cgroup_parent": "cgroup_parent", "network": "network", "cpuset_cpus": "cpuset_cpus",
              "privileged": "privileged", "shm_size": "shm_size", "ipc": "ipc", "ulimit": "ulimits",
              "gpus": "gpus", "seed_flags": "seed_flags", "container_flag": "extra_flags"}


def _given(ctx: typer.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")


def apply_overrides(exp: Experiment, params: Mapping[str, Any], given: set[str]) -> Experiment:
    by_section: dict[str, dict[str, Any]] = {}
    for opt, (section, key) in _OVERRIDES.items():
        if opt in given:
            v = params[opt]
            if opt == "model":
                v = [str(v)]
            elif isinstance(v, Path):
                v = str(v)
            by_section.setdefault(section, {})[key] = v
    container = {key: (str(params[o]) if isinstance(params[o], Path) else params[o])
                 for o, key in _CONTAINER.items() if o in given}
    if container:
        env = by_section.setdefault("environment", {})
        env["container"] = {**exp.environment.container, **container}
    for section, values in by_section.items():
        exp = exp.updated(section, **values)
    return exp


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class _LineObserver:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.prefix = ""

    def phase(self, environment: str, phase: str) -> None:
        self.console.print(f"memgap: {self.prefix}{environment}: {phase}", markup=False, highlight=False)

    def request_done(self, environment: str, record: Any, done: int, total: int) -> None:
        return None


def run_experiment(ctx: typer.Context, path: Path, params: Mapping[str, Any]) -> int:
    exp = load_experiment(path)
    given = {name for name in params if name not in ("ctx", "experiment") and _given(ctx, name)}
    exp = apply_overrides(exp, params, given)
    if "store" in given or not exp.study.store:
        store = Path(params["store"])
    else:
        store = path.parent / exp.study.store
    for env in exp.study.environments:  # fail before the first run, naming what is missing
        make_env(exp, Cell("-", exp.variants[0].name if exp.variants else "base", env)).check()
    err = Console(stderr=True, highlight=False)
    obs = _LineObserver(err)
    total = len(plan_runs(exp))

    def on_run(p: PlannedRun, what: str) -> None:
        obs.prefix = f"[block {p.block}, run {p.index + 1}/{total}] "

    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with open_store(store) as st:
            out = run_study(exp, st, experiment_path=str(path), observer=obs, on_run=on_run)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; the run in progress was recorded as interrupted. Resume with: memgap run {path}"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if params.get("as_json"):
        sys.stdout.write(json.dumps({"store": str(store), **out.to_dict()}, indent=2, default=str) + "\n")
        return 0
    con = Console(highlight=False, soft_wrap=True)
    con.print(f"study {exp.study.name} ({'resumed' if out.resumed else 'new'}) in {store}: "
              f"{len(out.runs_this_time)} run(s) this time, {out.runs_finished} finished in all", markup=False)
    for note in out.notes:
        con.print(f"  resumed: {note}", markup=False)
    for g in out.groups:
        status = "settled" if g.settled else "not settled"
        con.print(f"{g.model} / {g.variant}: {status} after {g.blocks_run} block(s)", markup=False)
        for name, v in g.verdicts.items():
            con.print(f"  {name}: {v['verdict']} (n={v['n']} pairs)", markup=False)
    if exp.study.iterations == "auto":
        con.print(f"{out.runs_finished} runs instead of {out.runs_planned_fixed} "
                  f"({exp.study.max_iterations} per cell)", markup=False)
    con.print(f"compare: memgap compare study_id={exp.study_id} --store {store}", markup=False)
    return 0
