"""What runs on a memgap node, inside a Ray task that holds the node's slot.

Two tasks, each returning plain JSON-able data (Ray carries it back through its object
store; the driver alone writes the store):

- ``check_node``: before the study, for every cell: can this node make the engine, find
  the model (and what is its digest), and use the environment? (``memgap doctor``'s
  questions, asked where the runs will happen.)
- ``run_on_node``: the cooldown and the page-cache action (``prepare_node``) on the
  machine they are about, then ``memgap.runner.perform_run`` and its outcome, with the
  node's name in the study added to the run's host facts; one task, so the node's slot is
  held from the cooldown to the end of the run.

Ray is imported only to ask the worker which node it is on."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from memgap.engines.registry import engine_for_run, make_engine
from memgap.envs import make_environment
from memgap.errors import MemgapError
from memgap.experiment import CooldownSection
from memgap.hostinfo import host_facts
from memgap.matrix import cool_down, page_cache_action
from memgap.outcome import RunOutcome
from memgap.runner import perform_run
from memgap.spec import RunSpec


def node_identity() -> dict[str, Any]:
    """The Ray node this worker runs on: its id, address and labels (empty outside Ray:
    asking an uninitialised Ray would start a local instance)."""
    import ray

    if not ray.is_initialized():
        return {}
    ctx = ray.get_runtime_context()
    labels = ctx.get_node_labels() if hasattr(ctx, "get_node_labels") else {}
    return {"node_id": ctx.get_node_id(), "address": ray.util.get_node_ip_address(),
            "labels": {k: v for k, v in dict(labels or {}).items() if not k.startswith("ray.io/")}}


def host_of_node(host: str) -> dict[str, Any]:
    """Host facts of this node, with its name in the study and its Ray identity."""
    return {**host_facts(), "name": host, "ray": node_identity()}


def check_node(cells: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``cells``: key -> run spec (dict). For each key: ``ok`` and the model (name, path,
    digest) and engine version, or the ``problem`` that keeps this node from running it."""
    results: dict[str, dict[str, Any]] = {}
    engines: dict[str, Any] = {}  # one engine (one model digest) per engine spec
    for key, spec_dict in cells.items():
        try:
            spec = RunSpec.from_dict(dict(spec_dict))
            ekey = json.dumps(spec.engine.model_dump(mode="json"), sort_keys=True)
            if ekey not in engines:
                engines[ekey] = make_engine(spec.engine)
            engine = engines[ekey]
            model = engine.model()
            make_environment(spec.environment).check()
            results[key] = {"ok": True, "model": model.name, "model_path": str(model.path),
                            "model_sha256": model.sha256, "engine_version": engine.version()}
        except Exception as e:  # noqa: BLE001 - whatever stops it, this node cannot run the cell
            results[key] = {"ok": False, "problem": str(e) if isinstance(e, MemgapError) else f"{type(e).__name__}: {e}"}
    return {"host": host_facts(), "ray": node_identity(), "cells": results}


def prepare_node(*, cooldown: Mapping[str, Any] | None, page_cache: str, files: Sequence[str]) -> dict[str, Any]:
    """The actions before a run, as a local study records them (``study_runs.actions``)."""
    actions: dict[str, Any] = {}
    if cooldown is not None:
        actions["cooldown"] = cool_down(CooldownSection.model_validate(dict(cooldown))).to_dict()
    actions["page_cache"] = page_cache_action(page_cache, [Path(f) for f in files])
    return actions


def outcome_to_dict(outcome: RunOutcome) -> dict[str, Any]:
    return asdict(outcome)


def outcome_from_dict(d: Mapping[str, Any]) -> RunOutcome:
    return RunOutcome(record=dict(d["record"]), engine_log=str(d["engine_log"]), requests=list(d["requests"]),
                      series=d["series"], interrupted=bool(d.get("interrupted")))


def run_on_node(spec: Mapping[str, Any], *, host: str, cooldown: Mapping[str, Any] | None, page_cache: str,
                files: Sequence[str]) -> Iterator[dict[str, Any]]:
    """One run here, as a stream of two items: ``{"actions": ...}`` once the cooldown and the
    page-cache action are done (the driver notes the attempt as started), then what
    ``run_here`` returns."""
    yield {"actions": prepare_node(cooldown=cooldown, page_cache=page_cache, files=files)}
    yield run_here(spec, host=host)


def run_here(spec: Mapping[str, Any], *, host: str) -> dict[str, Any]:
    """``{"outcome": ...}``, or ``{"error": ..., "host": ...}`` when memgap refused to start
    the run (a missing privilege, tool or file: nothing was created). A task of its own
    (after a ``prepare_node`` task) where Ray cannot stream: through Ray Client (ray://)."""
    try:
        run_spec = RunSpec.from_dict(dict(spec))
        engine = engine_for_run(run_spec)  # self-driven and attached runs too
        environment = make_environment(run_spec.environment)
        outcome = perform_run(run_spec, engine=engine, environment=environment)
    except MemgapError as e:
        return {"error": str(e), "host": host_of_node(host)}
    outcome.record["host"] = {**(outcome.record.get("host") or {}), "name": host, "ray": node_identity()}
    return {"outcome": outcome_to_dict(outcome)}
