"""The driver of a study on a Ray cluster: the plan per host, one run in flight per host,
every finished run committed here, in its own transaction, with the study's bookkeeping.

For each host, the driver takes that host's planned runs in plan order (randomized blocks
on each host, ``memgap.matrix``) and keeps one in flight: one Ray task that holds the
node's ``memgap_slot`` from start to end, so no other memgap run (of this study or another)
shares the machine, pinned to the node (``NodeAffinitySchedulingStrategy``, never soft)
with ``max_retries=0`` (Ray must not quietly run a measurement again elsewhere). The task
streams two items: what the cooldown and the page-cache action did on the node, when the
driver notes the attempt as started in ``study_runs``, and then the run's outcome. Ray
Client (``ray://``) cannot stream: there the actions and the run are two tasks, and
another study's run could take the node's slot between them.

A node that dies under a run: the run is stored as failed (``node lost: ...``), and with
``[cluster] retry_lost`` run once more on another node of the same host, if it has one; a
host with no live node left keeps its remaining runs for a later ``--resume``. Nothing is
written to the store from a node."""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memgap.analysis.study_outcome import StudyOutcome, finished_runs, group_state, study_outcome
from memgap.errors import UsageError
from memgap.experiment import Experiment
from memgap.fleet import SLOT_RESOURCE
from memgap.fleet.faults import NODE_LOST, cause_text, classify, failed_record
from memgap.fleet.nodes import FleetNode, memgap_nodes, nodes_of, study_hosts
from memgap.fleet.task import check_node, outcome_from_dict, prepare_node, run_here, run_on_node
from memgap.matrix import Cell, PlannedRun, plan_runs
from memgap.record import utc_timestamp as _now
from memgap.runner import new_run_id
from memgap.spec import RunSpec
from memgap.store import Store
from memgap.study import cell_spec, open_study, reconcile

# on_event(planned run, host, what): what is "start" or the run's status ("ok", "failed")
OnEvent = Callable[[PlannedRun, str, str], None]


def cell_key(cell: Cell) -> str:
    """A cell without its host: what the nodes are checked for."""
    return f"{cell.model}|{cell.variant}|{cell.environment}"


def connect(address: str) -> tuple[Any, bool]:
    """Join the cluster at ``address`` ("auto", "HOST:PORT", "ray://HOST:10001"). Returns
    Ray and whether this call connected (then the caller disconnects)."""
    import ray

    if ray.is_initialized():
        return ray, False
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            # log_to_driver off: the nodes' task output is theirs; the driver prints only its own.
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            return ray, True
        except (ConnectionError, RuntimeError, ValueError) as e:
            if attempt < CLIENT_ATTEMPTS and _transient(address, e):
                print(f"memgap: the Ray client server at {address} did not start; trying again in "
                      f"{CLIENT_RETRY_S:.0f} s ({attempt} of {CLIENT_ATTEMPTS})", file=sys.stderr, flush=True)
                time.sleep(CLIENT_RETRY_S)
                continue
            raise UsageError(f"cannot join the Ray cluster at {address!r}: {e}\n"
                             "start one with: ray start --head --resources '{\"memgap_slot\": 1}'") from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


# Ray Client's proxy starts one server process per client; that start sometimes fails
# ("Starting Ray client server failed", the process gone before it served) while the
# cluster is fine, and the next connection gets a fresh one.
CLIENT_ATTEMPTS = 3
CLIENT_RETRY_S = 2.0
_TRANSIENT = "Starting Ray client server failed"


def _transient(address: str, e: BaseException) -> bool:
    return address.startswith("ray://") and _TRANSIENT in str(e)


def resolve_hosts(exp: Experiment, store: Store, nodes: Sequence[FleetNode]) -> list[str]:
    """The host axis: the experiment's, else the one a stored study was planned with (so a
    resume plans the same runs whatever nodes are up now), else every memgap node's host."""
    if exp.cluster.hosts:
        return list(exp.cluster.hosts)
    stored = store.study(exp.study_id)
    planned = ((stored or {}).get("plan") or {}).get("cluster", {}).get("hosts")
    return list(planned) if planned else study_hosts(nodes)


@dataclass(frozen=True)
class NodeCheck:
    """What ``check_node`` found on each node: node id -> its answer."""

    answers: Mapping[str, Mapping[str, Any]]

    def cell(self, node: FleetNode, key: str) -> Mapping[str, Any]:
        return (self.answers.get(node.node_id) or {}).get("cells", {}).get(key) or {
            "ok": False, "problem": "the node did not answer the check (lost during it)"}

    def host_facts(self, node: FleetNode) -> dict[str, Any]:
        a = self.answers.get(node.node_id) or {}
        return {**(a.get("host") or {}), "name": node.host, "ray": a.get("ray") or {"node_id": node.node_id}}

    def model(self, key: str) -> tuple[str | None, str | None]:
        """The model's name and digest as the nodes that can run the cell report them."""
        for a in self.answers.values():
            c = a.get("cells", {}).get(key) or {}
            if c.get("ok"):
                return c.get("model"), c.get("model_sha256")
        return None, None


def digest_conflicts(check: NodeCheck, nodes: Sequence[FleetNode], keys: Sequence[str]) -> list[str]:
    """Cells whose model has different bytes on different nodes: runs on them would not
    compare the same model. One line per cell, naming each node's digest."""
    out = []
    for key in keys:
        seen: dict[str, list[str]] = {}
        for n in nodes:
            c = check.cell(n, key)
            if c.get("ok"):
                seen.setdefault(str(c.get("model_sha256")), []).append(n.describe())
        if len(seen) > 1:
            parts = "; ".join(f"{d[:12]} on {', '.join(ns)}" for d, ns in sorted(seen.items()))
            out.append(f"{key.replace('|', ' / ')}: the model differs between nodes ({parts})")
    return out


@dataclass
class _Flight:
    kind: str  # "prepare" or "run"
    planned: PlannedRun
    node: FleetNode
    attempt: int = 0
    created_at: str | None = None


@dataclass
class _State:
    exp: Experiment
    store: Store
    plan: list[PlannedRun]
    check: NodeCheck
    eligible: dict[tuple[str, str], list[FleetNode]]  # (host, cell key) -> nodes that passed
    resumed: bool
    queues: dict[str, deque[PlannedRun]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)  # node ids lost in this session
    retried: set[int] = field(default_factory=set)  # plan indices given their one retry
    excluded: dict[int, set[str]] = field(default_factory=dict)  # plan index -> nodes it was lost on
    ran_on: set[str] = field(default_factory=set)  # hosts that have run this session (cooldown)
    notes: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def next_attempt(self, index: int) -> int:
        rows = [r["attempt"] for r in self.store.study_runs(self.exp.study_id) if r["plan_index"] == index]
        return max(rows, default=0) + 1

    def spec(self, p: PlannedRun) -> RunSpec:
        return cell_spec(self.exp, Cell(p.cell.model, p.cell.variant, p.cell.environment))

    def pick(self, p: PlannedRun) -> FleetNode | None:
        assert p.cell.host is not None
        skip = self.dead | self.excluded.get(p.index, set())
        live = [n for n in self.eligible.get((p.cell.host, cell_key(p.cell)), []) if n.node_id not in skip]
        return live[0] if live else None

    def commit(self, p: PlannedRun, attempt: int, record: dict[str, Any], *, engine_log: str | None = None,
               requests: Sequence[Mapping[str, Any]] = (), series: Mapping[str, Any] | None = None,
               status: str = "finished", note: str | None = None) -> None:
        """One finished run: its record and data in one transaction, then its attempt."""
        self.store.add_run(record, engine_log=engine_log, requests=requests, series=series)
        self.store.end_study_run(self.exp.study_id, plan_index=p.index, attempt=attempt, status=status,
                                 run_id=record["run_id"], ended_at=_now(), note=note)
        self.ran.append(record["run_id"])

    def fail(self, p: PlannedRun, node: FleetNode | None, failure: str, *, attempt: int | None = None,
             created_at: str | None = None) -> dict[str, Any]:
        """Store a run that produced nothing as failed, with its cause (STYLE.md, 7)."""
        if attempt is None:
            attempt = self.next_attempt(p.index)
            self.store.start_study_run(self.exp.study_id, plan_index=p.index, attempt=attempt, block=p.block,
                                       iteration=p.iteration, cell=p.cell.to_dict(), started_at=_now(),
                                       actions=None)
        model, digest = self.check.model(cell_key(p.cell))
        host = self.check.host_facts(node) if node is not None else {"name": p.cell.host}
        record = failed_record(self.spec(p), run_id=new_run_id(), failure=failure, host=host, model=model,
                               model_sha256=digest, created_at=created_at)
        self.commit(p, attempt, record)
        return record


def run_fleet_study(
    exp: Experiment,
    store: Store,
    *,
    address: str,
    experiment_path: str | None = None,
    on_event: OnEvent | None = None,
) -> StudyOutcome:
    """Run (or resume) the study on the Ray cluster at ``address``."""
    ray, owned = connect(address)
    try:
        return _drive(ray, exp, store, experiment_path=experiment_path, on_event=on_event)
    finally:
        if owned:
            ray.shutdown()


def _remote(ray: Any, fn: Callable[..., Any], *, streaming: bool = False) -> Any:
    # num_cpus=0: the slot, not Ray's CPU count, decides what runs where; max_retries=0:
    # a measurement is never silently repeated by Ray. A run is one task that streams two
    # items (its actions, then its outcome), so it holds the node's slot from the cooldown
    # to the end of the run.
    opts: dict[str, Any] = {"num_cpus": 0, "resources": {SLOT_RESOURCE: 1}, "max_retries": 0}
    if streaming:
        opts["num_returns"] = "streaming"
    return ray.remote(**opts)(fn)


def _on(node: FleetNode) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)


def preflight(ray: Any, exp: Experiment, hosts: Sequence[str], nodes: Sequence[FleetNode],
              keys: Mapping[str, RunSpec]) -> tuple[NodeCheck, list[str]]:
    """Ask every node of the study's hosts whether it can run each cell; refuse a study
    whose model is not the same bytes on every node. Returns the answers and notes."""
    check_remote = _remote(ray, check_node)
    wanted = {n.node_id: n for h in hosts for n in nodes_of(nodes, h)}
    refs = {check_remote.options(scheduling_strategy=_on(n)).remote({k: s.to_dict() for k, s in keys.items()}): n
            for n in wanted.values()}
    answers: dict[str, Mapping[str, Any]] = {}
    notes = []
    for ref, node in refs.items():
        try:
            answers[node.node_id] = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - Ray's errors: this node answers nothing
            kind, detail = classify(e)
            notes.append(f"{node.describe()} could not be checked ({kind}: {detail}); it runs nothing")
    check = NodeCheck(answers)
    conflicts = digest_conflicts(check, list(wanted.values()), list(keys))
    if conflicts:
        raise UsageError("the nodes do not hold the same model, so their runs would not compare:\n  "
                         + "\n  ".join(conflicts) + "\ncopy the same file to every node (or name one host)")
    return check, notes


def client_mode() -> bool:
    """Whether this driver joined through Ray Client (ray://), which streams no task."""
    try:
        from ray.util.client import ray as client

        return bool(client.is_connected())
    except Exception:  # noqa: BLE001 - no client module: not a client
        return False


def _drive(ray: Any, exp: Experiment, store: Store, *, experiment_path: str | None,
           on_event: OnEvent | None, streaming: bool | None = None) -> StudyOutcome:
    nodes = memgap_nodes(ray.nodes())
    if not nodes:
        raise UsageError("no memgap node in the Ray cluster: start each with "
                         "ray start ... --resources '{\"memgap_slot\": 1}'")
    hosts = resolve_hosts(exp, store, nodes)
    if list(exp.cluster.hosts) != hosts:
        exp = exp.updated("cluster", hosts=hosts)
    base_cells = {cell_key(p.cell): p.cell for p in plan_runs(exp)}
    keys = {k: cell_spec(exp, Cell(c.model, c.variant, c.environment)) for k, c in base_cells.items()}
    check, notes = preflight(ray, exp, hosts, nodes, keys)
    eligible: dict[tuple[str, str], list[FleetNode]] = {}
    for h in hosts:
        for k in keys:
            eligible[(h, k)] = [n for n in nodes_of(nodes, h) if check.cell(n, k).get("ok")]

    resumed = open_study(store, exp, experiment_path)
    notes += reconcile(store, exp.study_id) if resumed else []
    plan = plan_runs(exp)
    st = _State(exp=exp, store=store, plan=plan, check=check, eligible=eligible, resumed=resumed, notes=notes)
    done = finished_runs(store, exp.study_id)
    for h in hosts:
        st.queues[h] = deque(p for p in plan if p.cell.host == h and p.index not in done)
        if not nodes_of(nodes, h):
            n = len(st.queues[h])
            st.notes.append(f"host {h}: no memgap node in the cluster; its {n} run(s) wait for a resume")
            st.queues[h].clear()
    _refuse_unrunnable(st, nodes)
    _loop(ray, st, on_event, streaming=not client_mode() if streaming is None else streaming)
    return study_outcome(exp, store, resumed=resumed, notes=st.notes, ran=st.ran)


def _refuse_unrunnable(st: _State, nodes: Sequence[FleetNode]) -> None:
    """A host whose nodes cannot run a cell (no engine, no model, no environment): one
    failed run with the cause, before anything runs; its other runs wait for a resume."""
    for h, queue in st.queues.items():
        blocked: dict[str, list[PlannedRun]] = {}
        for p in queue:
            if not st.eligible.get((h, cell_key(p.cell))):
                blocked.setdefault(cell_key(p.cell), []).append(p)
        for key, runs in blocked.items():
            hn = nodes_of(nodes, h)
            why = "; ".join(f"{n.describe()}: {st.check.cell(n, key).get('problem')}" for n in hn)
            rec = st.fail(runs[0], hn[0] if hn else None, f"host {h} cannot run this cell: {why}")
            st.notes.append(f"host {h}: {key.replace('|', ' / ')} cannot run there ({why}); run {rec['run_id']} "
                            f"stored as failed, {len(runs) - 1} more wait for a resume")
            for p in runs:
                queue.remove(p)


def _settled(st: _State, p: PlannedRun) -> bool:
    if st.exp.study.iterations != "auto":
        return False
    done = finished_runs(st.store, st.exp.study_id)
    return group_state(st.exp, st.plan, done, p.cell.group, p.block - 1, p.cell.host).settled


def _loop(ray: Any, st: _State, on_event: OnEvent | None, *, streaming: bool) -> None:
    if streaming:
        start = _remote(ray, run_on_node, streaming=True)
    else:
        start, then = _remote(ray, prepare_node), _remote(ray, run_here)
    # the run's task (a stream: its actions, then its outcome), or its prepare_node and then
    # its run_here task
    flights: dict[Any, _Flight] = {}

    def go_on(task: Any, f: _Flight) -> None:
        """The actions are in: in streaming mode the same task runs on, else send the run."""
        if streaming:
            flights[task] = f
        else:
            del flights[task]
            run = then.options(scheduling_strategy=_on(f.node)).remote(st.spec(f.planned).to_dict(),
                                                                          host=f.planned.cell.host)
            flights[run] = f

    def busy(host: str) -> bool:
        return any(f.planned.cell.host == host for f in flights.values())

    def dispatch() -> None:
        for host, queue in st.queues.items():
            while queue and not busy(host):
                p = queue[0]
                if _settled(st, p):
                    queue.popleft()
                    continue
                node = st.pick(p)
                if node is None:
                    st.notes.append(f"host {host}: no live node left; its {len(queue)} run(s) wait for a resume")
                    queue.clear()
                    break
                cooldown = st.exp.cooldown.model_dump() if (host in st.ran_on or st.resumed) else None
                files = [str(st.check.cell(node, cell_key(p.cell)).get("model_path"))]
                kw = {"cooldown": cooldown, "page_cache": st.exp.study.page_cache, "files": files}
                task = (start.options(scheduling_strategy=_on(node)).remote(st.spec(p).to_dict(), host=host, **kw)
                        if streaming else start.options(scheduling_strategy=_on(node)).remote(**kw))
                flights[task] = _Flight("prepare", p, node)
                st.ran_on.add(host)

    try:
        dispatch()
        while flights:
            # a timeout, so Ctrl-C (and SIGTERM, raised as KeyboardInterrupt) is seen each second
            ready, _ = ray.wait(list(flights), num_returns=1, timeout=1.0)
            for task in ready:
                _land(ray, st, task, flights, on_event, go_on)
            dispatch()
    except KeyboardInterrupt:
        _cancel(ray, st, flights)
        raise


def _next(ray: Any, task: Any, timeout: float | None = None) -> Any:
    """The task's next item (a stream's), or its result. Ray raises a task's error here,
    or from the item's ref."""
    if hasattr(task, "__next__"):
        return ray.get(next(task), timeout=timeout)
    result = ray.get(task, timeout=timeout)
    # prepare_node's result is the actions themselves; run_here's is the outcome
    return result if "outcome" in result or "error" in result else {"actions": result}


def _land(ray: Any, st: _State, task: Any, flights: dict[Any, _Flight], on_event: OnEvent | None,
          go_on: Callable[[Any, _Flight], None]) -> None:
    """The task sent its next item: the actions before the run (note the attempt as
    started), or the run's outcome (store it); or Ray says it failed (store why)."""
    f = flights[task]
    p, node, host = f.planned, f.node, f.planned.cell.host
    assert host is not None
    try:
        item = _next(ray, task)
    except Exception as e:  # noqa: BLE001 - Ray's errors, mapped to causes
        del flights[task]
        kind, detail = classify(e)
        if kind == NODE_LOST:
            st.dead.add(node.node_id)
        if f.kind == "prepare":
            if kind != NODE_LOST:  # the node could not even prepare: a failed run, with why
                st.fail(p, node, cause_text(kind, detail, node.describe()))
                st.queues[host].popleft()
            return  # lost before the run began: nothing ran; the run goes to another node or waits
        record = st.fail(p, node, cause_text(kind, detail, node.describe()), attempt=f.attempt,
                         created_at=f.created_at)
        if kind == NODE_LOST and st.exp.cluster.retry_lost and p.index not in st.retried:
            st.retried.add(p.index)
            st.excluded.setdefault(p.index, set()).add(node.node_id)
            st.notes.append(f"run {record['run_id']} lost with {node.describe()}; retried on another node of {host}")
        else:
            st.queues[host].popleft()
        if on_event:
            on_event(p, host, "failed")
        return
    if f.kind == "prepare":
        attempt = st.next_attempt(p.index)
        created = _now()
        st.store.start_study_run(st.exp.study_id, plan_index=p.index, attempt=attempt, block=p.block,
                                 iteration=p.iteration, cell=p.cell.to_dict(), started_at=created,
                                 actions={**item["actions"], "node": node.describe()})
        go_on(task, _Flight("run", p, node, attempt, created))
        if on_event:
            on_event(p, host, "start")
        return
    del flights[task]
    st.queues[host].popleft()
    status = _store_result(st, f, item)
    if on_event:
        on_event(p, host, status)


def _store_result(st: _State, f: _Flight, item: Mapping[str, Any], *, cut: bool = False) -> str:
    """Commit what a run's task sent back; returns the run's status."""
    p, node = f.planned, f.node
    if "error" in item:
        st.fail(p, node, f"on {node.describe()}: {item['error']}", attempt=f.attempt, created_at=f.created_at)
        return "failed"
    out = outcome_from_dict(item["outcome"])
    interrupted = cut or out.interrupted
    st.commit(p, f.attempt, out.record, engine_log=out.engine_log, requests=out.requests, series=out.series,
              status="interrupted" if interrupted else "finished",
              note=(out.record.get("failure") or "interrupted") if interrupted else None)
    return str(out.record["status"])


def _cancel(ray: Any, st: _State, flights: dict[Any, _Flight]) -> None:
    """Ctrl-C: each run in flight is cancelled (its node's runner stops the engine and
    cleans up, and sends back what it measured, stored as an interrupted attempt), so a
    resume redoes it."""
    for task in flights:
        ray.cancel(task)
    for task, f in flights.items():
        if f.kind != "run":
            continue
        try:
            _store_result(st, f, _next(ray, task, timeout=st.spec(f.planned).timeouts.stop_s + 20), cut=True)
        except Exception:  # noqa: BLE001 - cancelled, lost or too slow: no record, noted as such
            st.store.end_study_run(st.exp.study_id, plan_index=f.planned.index, attempt=f.attempt,
                                   status="interrupted", run_id=None, ended_at=_now(),
                                   note="memgap was interrupted during this run; it was cancelled on its node")
