"""Running a study: the plan of ``memgap.matrix``, one ``memgap.runner.execute_run`` per
planned run, each attempt recorded in the store's ``study_runs`` table before it starts
and when it ends, so an interrupted study resumes where it stopped.

Resume rules: a planned run with a finished attempt is never run again; an attempt that
was started but never ended (memgap was killed, the machine rebooted) is matched with the
run record the runner committed, if it got that far, else recorded as ``interrupted``
and redone; a run cut off by Ctrl-C (which the runner stores as a failed run) is
recorded as ``interrupted`` and redone. The study's identity is its ``[study] name``; a
study whose plan-relevant settings changed is refused, naming what changed.

With ``iterations = "auto"`` a group (model x variant) gets no more blocks once every
primary metric's sequential verdict (``memgap.analysis.stats.sequential_verdict``) is settled; with
a host axis (``memgap.fleet``) each host's group settles on its own runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, cast

from memgap.analysis.study_outcome import StudyOutcome, finished_runs, group_state, study_outcome
from memgap.engines.base import Engine
from memgap.envs.base import Environment
from memgap.errors import UsageError
from memgap.experiment import Experiment, plan_changes
from memgap.hostinfo import host_name
from memgap.matrix import (
    EMBEDDED_MODEL,
    Cell,
    PlannedRun,
    cells,
    cool_down,
    page_cache_action,
    plan_runs,
)
from memgap.outcome import RunObserver
from memgap.record import utc_timestamp
from memgap.runner import execute_run
from memgap.spec import RunSpec
from memgap.store import Store, StoredRun

INTERRUPTED_PREFIX = "interrupted"

Execute = Callable[..., dict[str, Any]]


def cell_spec(exp: Experiment, cell: Cell) -> RunSpec:
    """The run spec of one cell: the experiment's base spec, the variant's changes, the
    cell's model and environment."""
    return exp.cell_spec(environment=cell.environment, variant=cell.variant if exp.variants else None,
                         model=None if cell.model == EMBEDDED_MODEL else cell.model)


def make_engine(exp: Experiment, model: str, variant: str) -> Engine:
    """The cell's engine as a run makes it (registry.engine_for_run): a self-driven one
    (trtllm-bench) takes its load from the study's workload, not a default."""
    from memgap.engines.registry import engine_for_run

    env = exp.study.environments[0]
    return cast("Engine", engine_for_run(cell_spec(exp, Cell(model, variant, env))))


def make_env(exp: Experiment, cell: Cell) -> Environment:
    from memgap.envs import make_environment

    return make_environment(cell_spec(exp, cell).environment)


def open_study(store: Store, exp: Experiment, experiment_path: str | None) -> bool:
    """Register the study, or check that a stored one has the same plan. True: resuming."""
    old = store.study(exp.study_id)
    if old is None:
        store.add_study(exp.study_id, created_at=utc_timestamp(), experiment_path=experiment_path,
                        fingerprint=exp.fingerprint(), plan=exp.plan_settings())
        return False
    if old["fingerprint"] != exp.fingerprint():
        changes = plan_changes(old["plan"], exp.plan_settings())
        raise UsageError(
            f"study {exp.study.name!r} is already in {store.path} with a different plan; "
            "refusing to resume it:\n  " + "\n  ".join(changes or ["(settings differ)"]) +
            "\nundo the change to resume, or give the study a new [study] name"
        )
    return True


def reconcile(store: Store, study_id: str) -> list[str]:
    """Close attempts left 'started' by a memgap that was killed. Returns notes."""
    rows = store.study_runs(study_id)
    claimed = {r["run_id"] for r in rows if r["run_id"]}
    orphans = [r for r in store.runs({"study_id": study_id}) if r.run_id not in claimed]
    notes = []
    for row in rows:
        if row["status"] != "started":
            continue
        match = [r for r in orphans if _fits(r, row["cell"], row["started_at"])]
        run = match[0] if match else None
        if run is not None:
            orphans.remove(run)
            cut = run.status != "ok" and str(run.record.get("failure") or "").startswith(INTERRUPTED_PREFIX)
            status = "interrupted" if cut else "finished"
            note = "the run was stored; memgap stopped before noting it" if not cut else run.record.get("failure")
        else:
            status, note = "interrupted", "memgap stopped during this run (killed or machine restarted); no record"
        store.end_study_run(study_id, plan_index=row["plan_index"], attempt=row["attempt"], status=status,
                            run_id=run.run_id if run else None, ended_at=utc_timestamp(), note=note)
        notes.append(f"plan entry {row['plan_index']} (attempt {row['attempt']}): {status}: {note}")
        if run is None and row["cell"].get("host") is None:  # a node's engine died with its Ray task
            notes += leftover_engines(row["started_at"])
    return notes


def _fits(run: StoredRun, cell: Mapping[str, Any], started_at: str) -> bool:
    """Whether a stored run nobody noted can be the run of this started attempt. On a
    cluster the run's clock is its node's, which may be behind the driver's; but a host
    runs one attempt at a time, so its environment and host name it there."""
    if cell.get("host") is None:
        return run.created_at >= started_at
    return run.environment == cell.get("environment") and host_name(run.record) == cell["host"]


def leftover_engines(started_at: str) -> list[str]:
    """Engines started since a killed attempt began that still run: they hold memory the
    next runs would see, so say so (they are not ours to kill: another study may own them)."""
    import psutil

    try:
        since = dt.datetime.fromisoformat(started_at).timestamp()
    except ValueError:
        return []
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            cmd = p.info["cmdline"] or []
            if any("llama-server" in c for c in cmd[:1]) and p.info["create_time"] >= since:
                out.append(f"an engine the killed run may have started is still running (pid {p.info['pid']}); "
                           "stop it before measuring: its memory counts against the next runs")
        except (psutil.Error, TypeError):
            continue
    return out


def run_study(
    exp: Experiment,
    store: Store,
    *,
    experiment_path: str | None = None,
    execute: Execute = execute_run,
    engine_factory: Callable[[Experiment, str, str], Engine] = make_engine,
    env_factory: Callable[[Experiment, Cell], Environment] = make_env,
    observer: RunObserver | None = None,
    cooldown: Callable[..., Any] = cool_down,
    page_cache: Callable[..., dict[str, Any]] = page_cache_action,
    on_run: Callable[[PlannedRun, str], None] | None = None,
) -> StudyOutcome:
    if exp.cluster.hosts:
        raise UsageError("a study with [cluster] hosts runs on a Ray cluster: give --ray ADDRESS "
                         "or [cluster] address (memgap.fleet)")
    resumed = open_study(store, exp, experiment_path)
    notes = reconcile(store, exp.study_id) if resumed else []
    plan = plan_runs(exp)
    auto = exp.study.iterations == "auto"
    engines: dict[tuple[str, str], Engine] = {}
    envs: dict[Cell, Environment] = {}
    ran: list[str] = []
    first = not resumed
    for block in sorted({p.block for p in plan}):
        done = finished_runs(store, exp.study_id)
        attempts: dict[int, int] = {}
        for row in store.study_runs(exp.study_id):
            attempts[row["plan_index"]] = max(attempts.get(row["plan_index"], 0), row["attempt"])
        settled = {g for g in {c.group for c in cells(exp)}
                   if auto and group_state(exp, plan, done, g, block - 1).settled}
        for p in (p for p in plan if p.block == block):
            if p.index in done or p.cell.group in settled:
                continue
            cell = p.cell
            if cell.group not in engines:
                engines[cell.group] = engine_factory(exp, cell.model, cell.variant)
            if cell not in envs:
                envs[cell] = env_factory(exp, cell)
            engine = engines[cell.group]
            actions: dict[str, Any] = {}
            if not first:
                actions["cooldown"] = cooldown(exp.cooldown).to_dict()
            first = False
            actions["page_cache"] = page_cache(exp.study.page_cache, [engine.model().path])
            attempt = attempts.get(p.index, 0) + 1
            started = utc_timestamp()
            store.start_study_run(exp.study_id, plan_index=p.index, attempt=attempt, block=p.block,
                                  iteration=p.iteration, cell=cell.to_dict(), started_at=started, actions=actions)
            if on_run is not None:
                on_run(p, "start")
            try:
                record = execute(cell_spec(exp, cell), store, engine=engine, environment=envs[cell],
                                 observer=observer)
            except (KeyboardInterrupt, Exception):
                # Ctrl-C: the runner stored the cut-off run as failed; note it as interrupted.
                reconcile(store, exp.study_id)
                raise
            store.end_study_run(exp.study_id, plan_index=p.index, attempt=attempt, status="finished",
                                run_id=record["run_id"], ended_at=utc_timestamp())
            ran.append(record["run_id"])
            if on_run is not None:
                on_run(p, record["status"])
    return study_outcome(exp, store, resumed=resumed, notes=notes, ran=ran)
