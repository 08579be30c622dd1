"""``memgap run EXPERIMENT.toml``: run a study from an experiment file, or resume it.

Options given on the command line override the file's settings (an override that changes
the plan of a stored study is refused like an edit of the file would be). With ``--ray
ADDRESS`` (or ``[cluster] address``) the study runs on a Ray cluster (``memgap.fleet``);
``--resume`` insists that the study is already in the store."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from memgap.cli.interrupt import interrupt_on_sigterm
from memgap.cli.spec_flags import apply_overrides as spec_overrides
from memgap.cli.spec_flags import overrides_from_flags
from memgap.errors import Interrupted, UsageError
from memgap.experiment import Experiment, load_experiment
from memgap.matrix import Cell, PlannedRun, plan_runs
from memgap.spec import dotted, validation_errors
from memgap.store import open_store
from memgap.study import make_env, run_study


def apply_overrides(exp: Experiment, given: Mapping[str, Any]) -> Experiment:
    """The experiment with the flags given on the command line applied to its base spec
    (the same flag -> spec path table as ``memgap run``), validated again."""
    doc = exp.model_dump(mode="json")
    if "env" in given:
        doc["study"]["environments"] = list(given["env"])
    if "label" in given:
        doc["study"]["label"] = given["label"]
    flags = {k: v for k, v in given.items() if k not in ("env", "label", "set_", "store", "as_json",
                                                         "experiment", "spec_file", "print_spec", "ray", "resume")}
    overrides = overrides_from_flags(flags, given.get("set_") or ())
    if "engine.model" in overrides:
        doc["engine"]["models"] = [overrides.pop("engine.model")[0]]
    base = {k: doc[k] for k in ("engine", "environment", "workload", "sampler", "timeouts", "slo")}
    if "memory_limit" in base["environment"]:
        base["environment"]["memory_limit_bytes"] = base["environment"].pop("memory_limit")
    models = base["engine"].pop("models", None)
    spec_doc, _ = spec_overrides(base, overrides)
    if models is not None:
        spec_doc["engine"]["models"] = models
    doc.update({k: spec_doc.get(k, doc[k]) for k in base})
    try:
        return Experiment.model_validate(doc)
    except ValidationError as e:
        loc, msg = validation_errors(e)[0]
        raise UsageError(f"{dotted(loc)}: {msg}") from None


class _LineObserver:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.prefix = ""

    def phase(self, environment: str, phase: str) -> None:
        self.console.print(f"memgap: {self.prefix}{environment}: {phase}", markup=False, highlight=False)

    def request_done(self, environment: str, record: Any, done: int, total: int) -> None:
        return None


def run_experiment(ctx: typer.Context, path: Path, params: Mapping[str, Any], given: Mapping[str, Any]) -> int:
    exp = load_experiment(path)
    exp = apply_overrides(exp, given)
    # the spec of every cell, checked now (flags may have changed it)
    for env in exp.study.environments:
        names: list[str | None] = [v.name for v in exp.variants] or [None]
        for name in names:
            exp.cell_spec(environment=env, variant=name)
    if "store" in given or not exp.study.store:
        store = Path(params["store"])
    else:
        store = path.parent / exp.study.store
    address = given.get("ray") or exp.cluster.address
    if params.get("resume"):
        with open_store(store) as st:
            if st.study(exp.study_id) is None:
                raise UsageError(f"--resume: study {exp.study.name!r} is not in {store}; nothing to resume "
                                 "(run it without --resume to start it)")
    if address is None:  # on a cluster, each node is checked through Ray (memgap.fleet)
        for env in exp.study.environments:  # fail before the first run, naming what is missing
            make_env(exp, Cell("-", exp.variants[0].name if exp.variants else "base", env)).check()
    err = Console(stderr=True, highlight=False)
    obs = _LineObserver(err)
    total = len(plan_runs(exp))

    def on_run(p: PlannedRun, what: str) -> None:
        obs.prefix = f"[block {p.block}, run {p.index + 1}/{total}] "

    def on_fleet_run(p: PlannedRun, host: str, what: str) -> None:
        obs.prefix = f"[{host}, block {p.block}, plan entry {p.index + 1}] "
        obs.phase(p.cell.environment, "started" if what == "start" else f"done ({what})")

    try:
        with interrupt_on_sigterm(), open_store(store) as st:
            if address is not None:
                from memgap.fleet.driver import run_fleet_study

                out = run_fleet_study(exp, st, address=address, experiment_path=str(path), on_event=on_fleet_run)
            else:
                out = run_study(exp, st, experiment_path=str(path), observer=obs, on_run=on_run)
    except KeyboardInterrupt:
        again = f"memgap run {path}" + (f" --ray {address} --resume" if address else "")
        raise Interrupted(
            f"interrupted; the run in progress was recorded as interrupted. Resume with: {again}"
        ) from None
    if params.get("as_json"):
        sys.stdout.write(json.dumps({"store": str(store), **out.to_dict()}, indent=2, default=str) + "\n")
        return 0
    con = Console(highlight=False, soft_wrap=True)
    con.print(f"study {exp.study.name} ({'resumed' if out.resumed else 'new'}) in {store}: "
              f"{len(out.runs_this_time)} run(s) this time, {out.runs_finished} finished in all", markup=False)
    for note in out.notes:
        con.print(f"  {'resumed' if out.resumed else 'note'}: {note}", markup=False)
    for g in out.groups:
        status = "settled" if g.settled else "not settled"
        on = f" on {g.host}" if g.host else ""
        con.print(f"{g.model} / {g.variant}{on}: {status} after {g.blocks_run} block(s)", markup=False)
        for name, v in g.verdicts.items():
            con.print(f"  {name}: {v['verdict']} (n={v['n']} pairs)", markup=False)
    if exp.study.iterations == "auto":
        con.print(f"{out.runs_finished} runs instead of {out.runs_planned_fixed} "
                  f"({exp.study.max_iterations} per cell)", markup=False)
    con.print(f"compare: memgap compare study_id={exp.study_id} --store {store}", markup=False)
    return 0
