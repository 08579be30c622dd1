"""A study's outcome, from the store alone: for each group (model x variant, on each host of
a study with a host axis) the sequential verdict of every primary metric, each
environment against the baseline, over the blocks finished so far (pure but for the
store's reads). ``memgap.study`` runs the plan and asks this when a group is settled;
reports rebuild it from the plan the store keeps (``studies.plan``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memgap.analysis.compare import baseline_first
from memgap.analysis.metrics import BY_NAME
from memgap.analysis.stats import SequentialDesign, paired_differences, sequential_verdict
from memgap.experiment import Experiment
from memgap.matrix import PlannedRun, cells, plan_runs
from memgap.store import Store, StoredRun


@dataclass(frozen=True)
class GroupState:
    model: str
    variant: str
    blocks_run: int
    settled: bool
    verdicts: dict[str, dict[str, Any]]  # "env_b vs env_a: metric" -> SequentialResult dict
    host: str | None = None  # a study with a host axis: each host's group on its own


def finished_runs(store: Store, study_id: str) -> dict[int, tuple[dict[str, Any], StoredRun]]:
    """plan_index -> (study_runs row, run) for finished attempts."""
    by_id = {r.run_id: r for r in store.runs({"study_id": study_id})}
    out = {}
    for row in store.study_runs(study_id):
        if row["status"] == "finished" and row["run_id"] in by_id:
            out[row["plan_index"]] = (row, by_id[row["run_id"]])
    return out


def group_state(exp: Experiment, plan: list[PlannedRun], done: Mapping[int, tuple[dict[str, Any], StoredRun]],
                group: tuple[str, str], upto_block: int, host: str | None = None) -> GroupState:
    """Sequential verdicts of one group (on one host) from the blocks up to ``upto_block``."""
    envs = baseline_first(exp.study.environments)
    base, others = envs[0], envs[1:]
    runs: dict[tuple[int, str], StoredRun] = {}
    blocks_run = 0
    for p in plan:
        if p.cell.group == group and p.cell.host == host and p.block <= upto_block and p.index in done:
            runs[(p.block, p.cell.environment)] = done[p.index][1]
            blocks_run = max(blocks_run, p.block)
    design = SequentialDesign(alpha=exp.study.alpha, min_n=exp.study.min_iterations,
                              max_n=exp.study.max_iterations, shape=exp.study.boundary,
                              n_metrics=max(1, len(exp.metrics) * len(others)))
    verdicts: dict[str, dict[str, Any]] = {}
    for other in others:
        blocks = sorted(b for (b, e) in runs if e == base and (b, other) in runs
                        and runs[(b, base)].status == "ok" and runs[(b, other)].status == "ok")
        for pm in exp.metrics:
            m = BY_NAME[pm.name]
            a = [m.read(runs[(b, base)].record) for b in blocks]
            bb = [m.read(runs[(b, other)].record) for b in blocks]
            rel = pm.relative
            diffs = paired_differences(a, bb, log_scale=rel is not None)  # type: ignore[arg-type]
            margin = math.log1p(rel) if rel is not None else float(pm.margin)
            res = sequential_verdict(diffs, margin, design).to_dict()
            res.update({"metric": pm.name, "a": base, "b": other, "margin": pm.margin,
                        "scale": "log ratio" if rel is not None else "difference"})
            verdicts[f"{other} vs {base}: {pm.name}"] = res
    settled = bool(verdicts) and all(v["verdict"] != "continue" for v in verdicts.values())
    return GroupState(group[0], group[1], blocks_run, settled, verdicts, host)


@dataclass(frozen=True)
class StudyOutcome:
    study_id: str
    resumed: bool
    notes: list[str]
    runs_this_time: list[str]
    groups: list[GroupState]
    runs_finished: int
    runs_planned_fixed: int  # what max_iterations (or iterations) per cell would take

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id, "resumed": self.resumed, "notes": self.notes,
            "runs_this_time": self.runs_this_time, "runs_finished": self.runs_finished,
            "runs_planned_fixed": self.runs_planned_fixed,
            "groups": [g.__dict__ for g in self.groups],
        }


def study_outcome(exp: Experiment, store: Store, *, resumed: bool = False, notes: list[str] | None = None,
                  ran: list[str] | None = None) -> StudyOutcome:
    plan = plan_runs(exp)
    done = finished_runs(store, exp.study_id)
    last = max((p.block for p in plan), default=0)
    groups = sorted({(c.group, c.host or "") for c in cells(exp)})
    return StudyOutcome(
        study_id=exp.study_id, resumed=resumed, notes=notes or [], runs_this_time=ran or [],
        groups=[group_state(exp, plan, done, g, last, h or None) for g, h in groups],
        runs_finished=len(done), runs_planned_fixed=len(plan),
    )
