"""The driver's plan and bookkeeping over a stand-in for Ray (tasks answered at once, in the
order sent): one run in flight per host, every outcome stored by the driver, a lost node's
run stored as failed and retried on another node of its host, a model that differs
between nodes refused, a host that cannot run a cell given one failed run.

The real cluster, engine and faults are in tests/integration/test_fleet_ray.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray.exceptions as rex

from memgap.errors import UsageError
from memgap.experiment import Experiment, parse_experiment
from memgap.fleet.driver import _drive
from memgap.fleet.faults import failed_record
from memgap.spec import RunSpec
from memgap.store import Store

A, B1, B2 = "a" * 56, "b1" * 28, "b2" * 28
DIGEST = "d" * 64


def _node(node_id: str, label: str) -> dict[str, Any]:
    return {"NodeID": node_id, "Alive": True, "NodeManagerHostname": "vm", "NodeManagerAddress": "10.0.0.1",
            "Resources": {"memgap_slot": 1.0, "CPU": 1.0}, "Labels": {"memgap-host": label}}


@dataclass(eq=False)
class _Ref:
    node: str
    value: Any = None
    error: BaseException | None = None
    last: bool = True  # the task's last item: its node is free once it is read


@dataclass(eq=False)
class _Stream:
    """A streaming task: its items, handed out one by one (Ray's ObjectRefGenerator)."""

    node: str
    items: list[_Ref]

    def __next__(self) -> _Ref:
        if not self.items:
            raise StopIteration
        return self.items.pop(0)


@dataclass
class FakeRay:
    """Ray as the driver uses it: nodes, remote(...).options(...).remote(...), wait, get."""

    table: list[dict[str, Any]]
    lose: set[tuple[str, int]] = field(default_factory=set)  # (node, n-th run on it) dies
    cells: Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None  # check_node's answer per node
    calls: list[tuple[str, str]] = field(default_factory=list)
    in_flight: dict[str, _Ref] = field(default_factory=dict)  # node -> its task
    runs_on: dict[str, int] = field(default_factory=dict)

    def nodes(self) -> list[dict[str, Any]]:
        return self.table

    def remote(self, **opts: Any) -> Callable[[Callable[..., Any]], Any]:
        opts.pop("num_returns", None)
        assert opts == {"num_cpus": 0, "resources": {"memgap_slot": 1}, "max_retries": 0}
        ray = self

        class Remote:
            def __init__(self, fn: Callable[..., Any], node: str | None = None) -> None:
                self.fn, self.node = fn, node

            def options(self, scheduling_strategy: Any) -> Remote:
                assert scheduling_strategy.soft is False
                return Remote(self.fn, scheduling_strategy.node_id)

            def remote(self, *args: Any, **kw: Any) -> _Ref | _Stream:
                assert self.node is not None
                return ray.call(self.fn.__name__, self.node, args, kw)

        return Remote

    def call(self, name: str, node: str, args: tuple[Any, ...], kw: dict[str, Any]) -> _Ref | _Stream:
        assert node not in self.in_flight, f"{name} sent to {node} while another task runs there"
        self.calls.append((name, node))
        if name in ("run_on_node", "prepare_node"):  # the actions before the run
            actions = {"page_cache": {"policy": kw["page_cache"]},
                       **({"cooldown": {"waited_s": 0.0}} if kw["cooldown"] is not None else {})}
            if name == "prepare_node":  # Ray Client: a task of its own, then run_here
                ref = self.in_flight[node] = _Ref(node, actions)
                return ref
            first = self.in_flight[node] = _Ref(node, {"actions": actions}, last=False)
            return _Stream(node, [first, self.answer(name, node, args, kw)])
        ref = self.in_flight[node] = self.answer(name, node, args, kw)
        return ref

    def answer(self, name: str, node: str, args: tuple[Any, ...], kw: dict[str, Any]) -> _Ref:
        if name == "check_node":
            cells = {k: (self.cells(node, s) if self.cells else {"ok": True, "model": "m.gguf",
                                                                  "model_path": "/m.gguf", "model_sha256": DIGEST})
                     for k, s in args[0].items()}
            return _Ref(node, {"host": {"hostname": "vm"}, "ray": {"node_id": node}, "cells": cells})
        assert name in ("run_on_node", "run_here")
        self.runs_on[node] = self.runs_on.get(node, 0) + 1
        if (node, self.runs_on[node]) in self.lose:
            return _Ref(node, error=rex.NodeDiedError("Task failed because the node it was running on is dead."))
        spec = RunSpec.from_dict(dict(args[0]))
        rec = failed_record(spec, run_id=f"r{len(self.calls):03d}{node[:4]}", failure="x", model="m.gguf",
                            host={"hostname": "vm", "name": kw["host"], "ray": {"node_id": node}})
        rec.update(status="ok", failure=None)
        return _Ref(node, {"outcome": {"record": rec, "engine_log": "log", "requests": [], "series": None,
                                 "interrupted": False}})

    def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list[Any], list[Any]]:
        return refs[:1], refs[1:]

    def get(self, ref: _Ref, timeout: float | None = None) -> Any:
        if ref.node in self.in_flight:
            if ref.last or ref.error is not None:
                del self.in_flight[ref.node]
            else:  # the stream's next item holds the node now
                self.in_flight[ref.node] = ref
        if ref.error is not None:
            raise ref.error
        return ref.value

    def cancel(self, ref: _Ref) -> None:
        return None


def _exp(cluster: str, envs: str = '["native"]', iterations: int = 2) -> Experiment:
    return parse_experiment(f'[study]\nname = "f"\nenvironments = {envs}\niterations = {iterations}\nseed = 2\n'
                            f'[cluster]\n{cluster}\n')


@pytest.mark.parametrize("streaming", [True, False])  # False: through Ray Client, two tasks a run
def test_one_run_in_flight_per_host_every_outcome_stored(tmp_path: Path, streaming: bool) -> None:
    ray = FakeRay([_node(A, "node-a"), _node(B1, "node-b")])
    with Store(tmp_path / "s.db") as st:
        out = _drive(ray, _exp("", envs='["native", "sandbox"]'), st, experiment_path=None, on_event=None,
                     streaming=streaming)
        runs = st.runs()
        rows = st.study_runs("study:f")
    assert len(runs) == 8 and {r.status for r in runs} == {"ok"} and out.runs_finished == 8
    assert sorted({(r.record["host"]["name"], r.record["host"]["ray"]["node_id"]) for r in runs}) == [
        ("node-a", A), ("node-b", B1)]
    # discovered hosts became the plan's host axis; each host has its groups' verdicts apart
    assert sorted(g.host or "" for g in out.groups) == ["node-a", "node-b"]
    assert all(r["status"] == "finished" for r in rows)
    # the first run on each host has no cooldown, later ones do (on the node, recorded)
    first = {h: min((r for r in rows if r["cell"]["host"] == h), key=lambda r: r["started_at"]) for h in ("node-a", "node-b")}
    assert all("cooldown" not in r["actions"] for r in first.values())
    assert sum("cooldown" in r["actions"] for r in rows) == 6
    assert [c for c in ray.calls if c[0] == "check_node"] == [("check_node", A), ("check_node", B1)]


@pytest.mark.parametrize("streaming", [True, False])
def test_lost_node_run_is_failed_then_retried_once_on_another_node(tmp_path: Path, streaming: bool) -> None:
    ray = FakeRay([_node(B1, "node-b"), _node(B2, "node-b")], lose={(B1, 1)})
    with Store(tmp_path / "s.db") as st:
        _drive(ray, _exp('hosts = ["node-b"]\nretry_lost = true'), st, experiment_path=None, on_event=None,
               streaming=streaming)
        runs = st.runs()
        rows = st.study_runs("study:f")
    (lost,) = [r for r in runs if r.status == "failed"]
    assert lost.record["failure"].startswith("node lost: node-b (node b1b1b1b1 at 10.0.0.1) died during the run "
                                             "(NodeDiedError: ")
    assert lost.record["host"]["ray"]["node_id"] == B1 and lost.record["model_sha256"] == DIGEST
    ok = [r for r in runs if r.status == "ok"]
    assert len(ok) == 2 and {r.record["host"]["ray"]["node_id"] for r in ok} == {B2}
    lost_row = next(r for r in rows if r["run_id"] == lost.run_id)
    assert [(r["attempt"], r["status"]) for r in rows if r["plan_index"] == lost_row["plan_index"]] == [
        (1, "finished"), (2, "finished")]


def test_without_retry_the_lost_run_stays_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    ray = FakeRay([_node(A, "node-a"), _node(B1, "node-b")], lose={(B1, 1)})
    with Store(tmp_path / "s.db") as st:
        out = _drive(ray, _exp('hosts = ["node-a", "node-b"]'), st, experiment_path=None, on_event=None)
        runs = st.runs()
    assert sorted((r.record["host"]["name"], r.status) for r in runs) == [
        ("node-a", "ok"), ("node-a", "ok"), ("node-b", "failed")]
    assert "host node-b: no live node left; its 1 run(s) wait for a resume" in out.notes


def test_a_model_with_other_bytes_on_a_node_is_refused_before_any_run(tmp_path: Path) -> None:
    def cells(node: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"ok": True, "model": "m.gguf", "model_path": "/m.gguf", "model_sha256": ("e" if node == B1 else "d") * 64}

    ray = FakeRay([_node(A, "node-a"), _node(B1, "node-b")], cells=cells)
    with Store(tmp_path / "s.db") as st, pytest.raises(UsageError, match=r"the model differs between nodes \(dddddddddddd on node-a .*eeeeeeeeeeee on node-b"):
        _drive(ray, _exp(""), st, experiment_path=None, on_event=None)
    assert not [c for c in ray.calls if c[0] != "check_node"]


def test_a_host_that_cannot_run_a_cell_gets_one_failed_run_with_the_cause(tmp_path: Path) -> None:
    def cells(node: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        if node == B1 and spec["environment"]["name"] == "sandbox":
            return {"ok": False, "problem": "the sandbox needs root (or CAP_SYS_ADMIN) to create cgroups"}
        return {"ok": True, "model": "m.gguf", "model_path": "/m.gguf", "model_sha256": DIGEST}

    ray = FakeRay([_node(A, "node-a"), _node(B1, "node-b")], cells=cells)
    with Store(tmp_path / "s.db") as st:
        out = _drive(ray, _exp("", envs='["native", "sandbox"]'), st, experiment_path=None, on_event=None)
        runs = st.runs()
    failed = [r for r in runs if r.status == "failed"]
    assert len(failed) == 1 and failed[0].environment == "sandbox" and failed[0].record["host"]["name"] == "node-b"
    assert failed[0].record["failure"] == ("host node-b cannot run this cell: node-b (node b1b1b1b1 at 10.0.0.1): "
                                           "the sandbox needs root (or CAP_SYS_ADMIN) to create cgroups")
    assert failed[0].record["model"] == "m.gguf"  # grouped with the other runs of its cell
    assert sorted((r.record["host"]["name"], r.environment) for r in runs if r.status == "ok") == [
        ("node-a", "native"), ("node-a", "native"), ("node-a", "sandbox"), ("node-a", "sandbox"),
        ("node-b", "native"), ("node-b", "native")]
    assert any("1 more wait for a resume" in n for n in out.notes)


def test_a_resume_keeps_the_hosts_the_study_was_planned_with(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        _drive(FakeRay([_node(A, "node-a")], lose={(A, 2)}), _exp(""), st, experiment_path=None, on_event=None)
        assert [r.status for r in st.runs()] == ["ok", "failed"]  # the node was lost: the 2nd run is failed
        # the cluster now has another node: the plan (hosts = the ones discovered first) is unchanged
        out = _drive(FakeRay([_node(A, "node-a"), _node(B1, "node-b")]), _exp(""), st, experiment_path=None,
                     on_event=None)
        assert out.resumed and out.runs_this_time == [] and st.study("study:f")["plan"]["cluster"] == {"hosts": ["node-a"]}
        # naming other hosts is another plan, refused naming the change
        with pytest.raises(UsageError, match=r'cluster.hosts: \["node-a"\] -> \["node-a", "node-b"\]'):
            _drive(FakeRay([_node(A, "node-a"), _node(B1, "node-b")]), _exp('hosts = ["node-a", "node-b"]'), st,
                   experiment_path=None, on_event=None)


def test_joining_through_ray_client_tries_again_when_its_server_did_not_start(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from memgap.fleet import driver

    calls: list[str] = []
    failures = ["Initialization failure from server:\nRuntimeError: Starting Ray client server failed. See "
                "ray_client_server_23000.err for detailed logs."] * 2

    def init(address: str, **kw: Any) -> None:
        calls.append(address)
        if failures:
            raise ConnectionError(failures.pop())

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(driver, "CLIENT_RETRY_S", 0.0)
    assert driver.connect("ray://127.0.0.1:10001") == (ray, True)
    assert calls == ["ray://127.0.0.1:10001"] * 3
    assert capsys.readouterr().err.count("did not start; trying again") == 2
    # three failed starts: the one-line error, with what Ray said
    failures[:] = ["Starting Ray client server failed."] * 3
    with pytest.raises(UsageError, match=r"cannot join the Ray cluster at 'ray://h:1': Starting Ray client server"):
        driver.connect("ray://h:1")
    # any other failure, or a direct (not ray://) address, is not tried again
    calls.clear()
    failures[:] = ["Starting Ray client server failed."]
    with pytest.raises(UsageError):
        driver.connect("10.0.0.1:6379")
    failures[:] = ["Could not find any running Ray instance."]
    with pytest.raises(UsageError, match="Could not find any running Ray instance"):
        driver.connect("ray://h:1")
    assert calls == ["10.0.0.1:6379", "ray://h:1"]
