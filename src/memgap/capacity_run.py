"""Running a capacity search: one stored run per point, the next point decided from the
store each time (``memgap.capacity``), so a search that was killed continues where the
store says it stopped, without redoing a finished point.

Arms take turns: the next point goes to the unfinished arm with the fewest runs (ties:
the order given), so every arm sees the machine in much the same state over the search,
as a sweep interleaves its budgets (running arm after arm would confound the arm with
time on a machine others share).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from memgap.analysis.capacity_outcome import CapacityOutcome, outcome_of
from memgap.capacity import Arm, CapacitySettings, Step, point_requests, run_label
from memgap.engines.registry import engine_for_run
from memgap.envs.base import Environment
from memgap.errors import UsageError
from memgap.outcome import RunObserver
from memgap.runner import execute_run
from memgap.spec import RunSpec
from memgap.store import Store

CAPACITY_PREFIX = "capacity-"


def new_capacity_id(name: str | None = None) -> str:
    """``capacity-NAME`` (a name the user can give again to resume), or a fresh one."""
    if name is None:
        return CAPACITY_PREFIX + uuid.uuid4().hex[:10]
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"--name {name!r}: a capacity search's name has no spaces")
    return name if name.startswith(CAPACITY_PREFIX) else CAPACITY_PREFIX + name


def open_search(store: Store, settings: CapacitySettings) -> bool:
    """Store a new search's settings; for one already stored, check they are the same.
    Returns True when the search was already there (it resumes)."""
    stored = store.capacity_search(settings.capacity_id)
    if stored is None:
        store.add_capacity_search(settings.capacity_id, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                                  fingerprint=settings.fingerprint(), settings=settings.to_dict())  # fmt: skip
        return False
    if stored["fingerprint"] != settings.fingerprint():
        raise UsageError(
            f"capacity search {settings.capacity_id} is stored with other settings: resume it with --resume "
            f"{settings.capacity_id} (its own settings), or give another --name"
        )
    return True


def point_spec(settings: CapacitySettings, spec: RunSpec, arm: Arm, rung: int) -> RunSpec:
    """The arm's spec at one rung: the load, the number of requests, and the search's
    id, label and SLO."""
    ladder = settings.search.ladder
    load = ladder.load(rung)
    w = spec.workload.to_dict()
    if ladder.kind == "concurrency":
        w.update(concurrency=int(load), request_rate_per_s=None)
    else:
        w.update(concurrency=settings.concurrency_cap or w.get("concurrency") or 1, request_rate_per_s=load)
    w["requests"] = point_requests(settings, load)
    return spec.replace(workload=w, label=run_label(settings.capacity_id, arm, ladder, rung),
                        study_id=settings.capacity_id, slo=settings.slo)  # fmt: skip


def run_capacity(
    settings: CapacitySettings,
    spec_for: Callable[[Arm], RunSpec],
    store: Store,
    *,
    environments: Mapping[str, Environment] | None = None,
    observer: RunObserver | None = None,
    on_point: Callable[[Arm, Step, dict[str, Any]], None] | None = None,
    execute: Callable[..., dict[str, Any]] = execute_run,
    make: Callable[[RunSpec], Any] = engine_for_run,
    max_points: int | None = None,
) -> CapacityOutcome:
    """Run points until every arm's search stops (or ``max_points`` were run here); each
    run is committed when it ends. ``spec_for(arm)``: the arm's spec (environment, KV
    budget) before the load is set. ``make``: the point's engine, made as a run makes it
    (registry.engine_for_run: an attached engine is not launched)."""
    open_search(store, settings)
    done_here = 0
    while True:
        outcome = outcome_of(store, settings)
        todo = [a for a in outcome.arms if not a.step.done]
        if not todo or (max_points is not None and done_here >= max_points):
            return outcome
        nxt = min(todo, key=lambda a: (a.estimate.runs, settings.arms.index(a.arm)))
        assert nxt.step.rung is not None
        spec = point_spec(settings, spec_for(nxt.arm), nxt.arm, nxt.step.rung)
        env = (environments or {}).get(nxt.arm.environment)
        record = execute(spec, store, engine=make(spec), environment=env, observer=observer)
        done_here += 1
        if on_point is not None:
            on_point(nxt.arm, nxt.step, record)
