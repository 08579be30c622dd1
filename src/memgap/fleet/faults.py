"""What went wrong with a run on a node, as a cause a stored run carries.

Ray reports a node that died under a task in several ways, depending on which part of it
went first and when the driver asked: ``NodeDiedError`` (the raylet is gone),
``WorkerCrashedError`` (the worker process died with it, or alone), ``LocalRayletDiedError``,
an actor error, ``ObjectLostError`` and its kin (the result was on the node that died) and
``TaskUnschedulableError`` (the node left before the task could start). Each is the same
fact for a study: the node was lost, the run measured nothing that can be trusted. Ray's
own memory monitor killing the worker is not a lost node: memgap reports it apart, since it
is memory pressure on that machine, which is what memgap measures."""

from __future__ import annotations

from typing import Any

from memgap.record import RunRecord
from memgap.record import utc_timestamp as _now
from memgap.spec import RunSpec

NODE_LOST = "node lost"
RAY_OOM = "killed by Ray's memory monitor"
CANCELLED = "interrupted (the driver cancelled the run)"


def _lost_types() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (rex.NodeDiedError, rex.WorkerCrashedError, rex.LocalRayletDiedError, rex.RayActorError,
            rex.ObjectLostError, rex.TaskUnschedulableError)


def classify(exc: BaseException) -> tuple[str, str]:
    """``(kind, detail)``: kind is NODE_LOST, RAY_OOM, CANCELLED or ``"error"`` (the task
    itself raised, or another Ray error); detail is one line for the record."""
    import ray.exceptions as rex

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, rex.OutOfMemoryError):
        return RAY_OOM, f"{name}: {first}"
    if isinstance(exc, rex.TaskCancelledError):
        return CANCELLED, name
    if isinstance(exc, _lost_types()):
        return NODE_LOST, f"{name}: {first}"
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if cause is not None:
            return "error", f"{type(cause).__name__}: {cause}"
    return "error", f"{name}: {first}"


def cause_text(kind: str, detail: str, where: str) -> str:
    """The failure a stored run carries: it starts with the kind (``node lost: ...``), so
    a reader can select on it, and names the node."""
    if kind == NODE_LOST:
        return f"{NODE_LOST}: {where} died during the run ({detail})"
    if kind == RAY_OOM:
        return (f"{RAY_OOM} on {where} ({detail}); memgap measures memory pressure, so turn the "
                "monitor off on memgap nodes (RAY_memory_monitor_refresh_ms=0)")
    return f"on {where}: {detail}"


def failed_record(spec: RunSpec, *, run_id: str, failure: str, host: dict[str, Any] | None,
                  model: str | None = None, model_sha256: str | None = None,
                  created_at: str | None = None) -> dict[str, Any]:
    """The record of a run that produced nothing measurable (its node was lost, or could
    not run it): what was asked, where, and why; every figure unknown (None). ``model``:
    the name the other nodes' runs of the cell carry, so it groups with them."""
    engine = spec.engine
    asked = getattr(engine, "model_path", None) or getattr(engine, "model", None) or None
    return RunRecord(
        run_id=run_id, study_id=spec.study_id, label=spec.label,
        created_at=created_at or _now(), finished_at=_now(),
        environment=spec.environment.name, engine=engine.kind,
        model=model or (str(asked).rsplit("/", 1)[-1] if asked else None), model_sha256=model_sha256,
        status="failed", failure=failure,
        workload=spec.workload.to_dict(), spec=spec.to_dict(), host=dict(host or {}),
    ).to_dict()
