"""Ray's errors for a node that died under a run map to one cause, 'node lost'; failed
records of runs that produced nothing validate and store."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.exceptions as rex

from memgap.fleet.faults import CANCELLED, NODE_LOST, RAY_OOM, cause_text, classify, failed_record
from memgap.spec import RunSpec
from memgap.store import Store


@pytest.mark.parametrize("exc", [
    rex.NodeDiedError("Task failed because the node it was running on is dead or unavailable."),
    rex.WorkerCrashedError(),
    rex.LocalRayletDiedError(),
    rex.ActorDiedError(),
    rex.ObjectLostError("ab" * 14, None, ""),
    rex.OwnerDiedError("ab" * 14, None, ""),
    rex.TaskUnschedulableError("the node specified via NodeAffinitySchedulingStrategy doesn't exist"),
])
def test_every_way_ray_says_a_node_died_is_node_lost(exc: BaseException) -> None:
    kind, detail = classify(exc)
    assert kind == NODE_LOST and detail.startswith(type(exc).__name__)
    text = cause_text(kind, detail, "node-b (node 69871 at 192.0.2.2)")
    assert text.startswith("node lost: node-b (node 69871 at 192.0.2.2) died during the run (")


def test_ray_memory_monitor_and_cancel_are_not_lost_nodes() -> None:
    kind, detail = classify(rex.OutOfMemoryError("Task was killed due to the node running low on memory."))
    assert kind == RAY_OOM and "RAY_memory_monitor_refresh_ms=0" in cause_text(kind, detail, "n")
    assert classify(rex.TaskCancelledError())[0] == CANCELLED


def test_an_error_raised_in_the_task_names_its_own_type() -> None:
    err = rex.RayTaskError("run_on_node", "Traceback ...", PermissionError("no cgroup"))
    assert classify(err) == ("error", "PermissionError: no cgroup")
    assert cause_text("error", "PermissionError: no cgroup", "node-a") == "on node-a: PermissionError: no cgroup"


def test_failed_record_validates_stores_and_keeps_what_was_asked(tmp_path: Path) -> None:
    spec = RunSpec.from_dict({"environment": {"name": "sandbox"}, "workload": {"requests": 3},
                              "study_id": "study:s", "label": "x"})
    rec = failed_record(spec, run_id="abc123abc123", failure="node lost: node-b died during the run (NodeDiedError: x)",
                        host={"hostname": "vm", "name": "node-b"}, model="SmolLM2.gguf", model_sha256="f" * 64)
    assert rec["status"] == "failed" and rec["environment"] == "sandbox" and rec["engine"] == "llamacpp"
    assert rec["model"] == "SmolLM2.gguf" and rec["study_id"] == "study:s" and rec["workload"]["requests"] == 3
    assert rec["spec"] == spec.to_dict() and rec["output_tokens_per_s"] is None  # unknown, not 0
    with Store(tmp_path / "s.db") as st:
        st.add_run(rec)
        (run,) = st.runs({"status": "failed"})
        assert run.record["failure"].startswith("node lost") and run.record["host"]["name"] == "node-b"
