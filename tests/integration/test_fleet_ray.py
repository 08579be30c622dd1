"""Studies on a real Ray cluster (``ray.cluster_utils.Cluster``: every node a raylet of its
own on this machine, each declaring one ``memgap_slot`` and a ``memgap-host`` label) with
the real engine: one store written by the driver, the host as an axis, one run per node
at a time, a node lost mid-run, a driver killed and resumed, a node without the engine.

Runs are tiny (2 requests, a few output tokens) and the object store small (80 MiB a
node): the machine is shared with the rest of the suite."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from memgap_cli import study_rows

from memgap.cli.main import main
from memgap.store import Store, StoredRun

ray = pytest.importorskip("ray", reason="Ray is memgap's fleet extra (scripts/setup.sh installs it)")
from ray._private import ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.integration

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; a run's outcome is kilobytes
# One engine thread: two nodes on this 2-core machine run at once, and llama.cpp's threads
# spin at each barrier, so two 2-thread engines would slow each other down many times over.
TINY = """
[engine]
threads = 1

[workload]
requests = 2
concurrency = 2
prompt_tokens = 16
output_tokens = {tokens}
warmup_requests = 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_args(label: str, *, head: bool = False, env: dict[str, str] | None = None,
               client_port: int | None = None) -> dict[str, Any]:
    args: dict[str, Any] = {"num_cpus": 1, "resources": {"memgap_slot": 1}, "labels": {"memgap-host": label},
                            "object_store_memory": OBJECT_STORE_BYTES}
    if client_port is not None:  # Ray Client's server, for ray:// addresses
        args["ray_client_server_port"] = client_port
    if head:
        # a dead node is noticed within about a second, not Ray's default half minute
        args.update(include_dashboard=False, _system_config={
            "health_check_period_ms": 500, "health_check_failure_threshold": 3,
            "health_check_initial_delay_ms": 0})
    if env:
        args["env_vars"] = env
    return args


@contextmanager
def _cluster(*nodes: tuple[str, dict[str, str] | None], client_port: int | None = None) -> Iterator[Cluster]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    (label, env), rest = nodes[0], nodes[1:]
    c = Cluster(initialize_head=True, head_node_args=_node_args(label, head=True, env=env, client_port=client_port))
    try:
        for label, env in rest:
            c.add_node(**_node_args(label, env=env))
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three memgap nodes, kept for the tests that kill no node: node-a (the head, with Ray
    Client's server), node-b, and node-c, whose workers find no engine
    (MEMGAP_LLAMA_SERVER names a missing file)."""
    missing = {"MEMGAP_LLAMA_SERVER": str(tmp_path_factory.mktemp("node-c") / "no-llama-server")}
    port = _free_port()
    with _cluster(("node-a", None), ("node-b", None), ("node-c", missing), client_port=port) as c:
        c.client_port = port  # type: ignore[attr-defined]
        yield c


def _experiment(tmp: Path, name: str, envs: Sequence[str], *, iterations: int = 2, tokens: int = 4,
                cluster: str = "") -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(f'[study]\nname = "{name}"\nenvironments = {json.dumps(list(envs))}\niterations = {iterations}\n'
                 f'seed = 11\n{cluster}\n' + TINY.format(tokens=tokens))
    return p


def _driver(exp: Path, address: str, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "memgap", "run", str(exp), "--ray", address, "--store", str(db), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _host(r: StoredRun) -> str:
    return str(r.record["host"]["name"])


def _assert_one_run_at_a_time(runs: Sequence[StoredRun], key: Any) -> None:
    """From the runs' own clocks: on each node, each run began after the one before ended."""
    spans: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in runs:
        spans[key(r)].append((r.record["created_at"], r.record["finished_at"]))
    for node, ss in spans.items():
        ss.sort()
        for (_, end), (start, _) in zip(ss, ss[1:], strict=False):
            assert start >= end, f"two runs overlapped on {node}: {ss}"


def _scratch() -> set[Path]:
    """The temp folders of runs in progress (a run removes its own when it ends)."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    return {p for pattern in ("memgap-run-*", "memgap-scratch-*") for p in tmp.glob(pattern)}


def _clean_after_kill(before_test: set[Path], killed_at: float) -> None:
    """Remove what the runs cut off by the kill left (what a reboot of their machine would
    have cleaned up): run folders made since the test began, up to a moment after the kill
    (a task still starting then dies a little later), that are still there once every
    later run has ended (each removes its own)."""
    for d in _scratch() - before_test:
        try:
            if d.stat().st_ctime <= killed_at + 3.0:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def _raylet_pids(c: Cluster) -> dict[int, Any]:
    return {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n for n in c.list_all_nodes()}


def _engine_under(raylets: dict[int, Any]) -> tuple[psutil.Process, Any] | None:
    """A llama-server started by a Ray worker that has been up for half a second (in its
    workload, not a run ending), and the node whose raylet started that worker."""
    for p in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if not (p.info["cmdline"] or [""])[0].endswith("llama-server") or time.time() - p.info["create_time"] < 0.5:
                continue
            for parent in p.parents():
                if parent.pid in raylets:
                    return p, raylets[parent.pid]
        except psutil.Error:
            continue
    return None


def test_node_lost_mid_run_is_a_failed_run_retried_on_another_node(tmp_path: Path, no_leftovers: None) -> None:
    exp = _experiment(tmp_path, "lost", ["native"], tokens=48,
                      cluster='[cluster]\nhosts = ["node-b"]\nretry_lost = true')
    db = tmp_path / "s.db"
    before_test = _scratch()
    # the head stays (the driver is connected through it); two interchangeable nodes of host node-b
    with _cluster(("head", None), ("node-b", None), ("node-b", None)) as c:
        raylets = {pid: n for pid, n in _raylet_pids(c).items() if n is not c.head_node}
        driver = subprocess.Popen(_driver(exp, c.address, db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=_env())
        found = None
        deadline = time.monotonic() + 120
        while found is None and time.monotonic() < deadline and driver.poll() is None:
            found = _engine_under(raylets)
            time.sleep(0.05)
        assert found is not None, "no run started on a node-b node"
        engine, node = found
        killed_at = time.time()
        node.kill_raylet()
        out, err = driver.communicate(timeout=240)
        psutil.wait_procs([engine], timeout=10)  # the worker died with its raylet, the engine with it
        assert not engine.is_running(), "the engine outlived its node"
        _clean_after_kill(before_test, killed_at)
    assert driver.returncode == 0, err[-3000:]
    with Store(db) as st:
        runs = st.runs({"study_id": "study:lost"})
        rows = st.study_runs("study:lost")
    lost = [r for r in runs if r.status == "failed"]
    assert len(lost) == 1, [(r.status, r.record["failure"]) for r in runs]
    assert lost[0].record["failure"].startswith("node lost: node-b (node "), lost[0].record["failure"]
    assert lost[0].record["host"]["ray"]["node_id"] == node.node_id and lost[0].record["model_sha256"]
    ok = [r for r in runs if r.status == "ok"]
    assert len(ok) == 2 and all(r.record["host"]["ray"]["node_id"] != node.node_id for r in ok)
    # the lost attempt and its retry are two attempts of one planned run; the study finished
    i = next(r["plan_index"] for r in rows if r["run_id"] == lost[0].run_id)
    assert sorted((r["plan_index"], r["attempt"], r["status"]) for r in rows) == sorted(
        [(i, 1, "finished"), (i, 2, "finished"), (1 - i, 1, "finished")])
    _assert_one_run_at_a_time(runs, lambda r: r.record["host"]["ray"]["node_id"])


def test_two_hosts_two_environments_one_store_split_by_host(
    cluster: Cluster, tmp_path: Path, no_leftovers: None
) -> None:
    exp = _experiment(tmp_path, "fleet", ["native", "sandbox"], cluster='[cluster]\nhosts = ["node-a", "node-b"]')
    db = tmp_path / "s.db"
    done = subprocess.run(_driver(exp, cluster.address, db), capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "8 run(s) this time" in done.stdout and "on node-a" in done.stdout and "on node-b" in done.stdout
    with Store(db) as st:
        runs = st.runs({"study_id": "study:fleet"})
        rows = st.study_runs("study:fleet")
    failed = [(r.environment, _host(r), r.record["failure"]) for r in runs if r.status != "ok"]
    assert not failed, failed
    # every cell once per block on each host, each run stored with the host it ran on
    cells = sorted((_host(r), r.environment) for r in runs)
    assert cells == sorted([(h, e) for h in ("node-a", "node-b") for e in ("native", "sandbox")] * 2)
    by_id = {r.run_id: r for r in runs}
    for row in rows:
        assert row["status"] == "finished" and by_id[row["run_id"]].record["host"]["name"] == row["cell"]["host"]
        assert row["actions"]["page_cache"] == {"policy": "keep"} and "node-" in row["actions"]["node"]
    node_ids = {r.record["host"]["ray"]["node_id"] for r in runs}
    assert len(node_ids) == 2 and all(r.record["host"]["hostname"] for r in runs)
    _assert_one_run_at_a_time(runs, _host)
    # each host's runs, in time, go block by block (randomized blocks per host)
    for h in ("node-a", "node-b"):
        mine = sorted((r for r in rows if r["cell"]["host"] == h), key=lambda r: r["started_at"])
        assert [r["block"] for r in mine] == [1, 1, 2, 2]

    out = subprocess.run([sys.executable, "-m", "memgap", "compare", "study_id=study:fleet", "--store", str(db),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    groups = {g["model"]: g for g in json.loads(out.stdout)["groups"]}
    assert sorted(groups) == ["SmolLM2-135M-Instruct.Q4_1.gguf @ node-a", "SmolLM2-135M-Instruct.Q4_1.gguf @ node-b"]
    assert all(g["runs"] == {"native": 2, "sandbox": 2} for g in groups.values())
    md = tmp_path / "r.md"
    assert main(["report", "--store", str(db), "--md", str(md), "study_id=study:fleet"]) == 0
    text = md.read_text()
    assert "@ node-a" in text and "@ node-b" in text


def test_killed_driver_resumes_losing_and_doubling_nothing(
    cluster: Cluster, tmp_path: Path, no_leftovers: None
) -> None:
    exp = _experiment(tmp_path, "killed", ["native"], cluster='[cluster]\nhosts = ["node-a", "node-b"]')
    db = tmp_path / "s.db"
    before_test = _scratch()
    c = cluster
    raylets = _raylet_pids(c)
    driver = subprocess.Popen(_driver(exp, c.address, db), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=_env())
    engine = None
    deadline = time.monotonic() + 120
    try:
        # kill the driver once a run is stored and another one is running on a node
        while time.monotonic() < deadline and driver.poll() is None:
            rows = study_rows(db)
            if any(r[2] == "finished" for r in rows) and any(r[2] == "started" for r in rows):
                found = _engine_under(raylets)
                if found is not None:
                    engine = found[0]
                    break
            time.sleep(0.05)
        assert engine is not None, f"no second run started: {study_rows(db)}"
        killed_at = time.time()
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
    before = study_rows(db)
    # Ray ends a dead driver's tasks: the worker goes, and the engine with it
    psutil.wait_procs([engine], timeout=30)
    assert not engine.is_running(), "the engine outlived the driver that started its run"
    again = subprocess.run(_driver(exp, c.address, db, "--resume"), capture_output=True, text=True,
                           timeout=240, env=_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stdout
    once_more = subprocess.run(_driver(exp, c.address, db, "--resume"), capture_output=True, text=True,
                               timeout=240, env=_env())
    assert once_more.returncode == 0 and "0 run(s) this time" in once_more.stdout, once_more.stderr[-2000:]
    _clean_after_kill(before_test, killed_at)  # the resumed runs have ended (and removed theirs)
    started = [(i, a) for i, a, s in before if s == "started"]
    assert started, before
    after = study_rows(db)
    for i, a in started:  # cut off with its driver: noted interrupted, then done again
        assert (i, a, "interrupted") in after and (i, a + 1, "finished") in after, after
    with Store(db) as st:
        runs = st.runs({"study_id": "study:killed"})
        finished = {r["run_id"] for r in st.study_runs("study:killed") if r["status"] == "finished"}
    assert len(runs) == 4 and {r.status for r in runs} == {"ok"}  # none lost, none doubled
    assert finished == {r.run_id for r in runs}
    assert sorted(i for i, _, s in after if s == "finished") == [0, 1, 2, 3]


def test_a_node_without_the_engine_is_found_before_the_study_and_fails_its_cell(
    cluster: Cluster, tmp_path: Path, no_leftovers: None
) -> None:
    exp = _experiment(tmp_path, "noengine", ["native"], cluster='[cluster]\nhosts = ["node-a", "node-c"]')
    db = tmp_path / "s.db"
    done = subprocess.run(_driver(exp, cluster.address, db), capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "host node-c: embedded / base / native cannot run there" in done.stdout
    with Store(db) as st:
        runs = st.runs({"study_id": "study:noengine"})
    assert sorted((_host(r), r.status) for r in runs) == [("node-a", "ok"), ("node-a", "ok"), ("node-c", "failed")]
    (bad,) = [r for r in runs if r.status == "failed"]
    assert bad.record["failure"].startswith("host node-c cannot run this cell: node-c (node ")
    assert "llama-server not found" in bad.record["failure"] and "no-llama-server" in bad.record["failure"]
    assert bad.record["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"  # grouped with node-a's runs


def test_a_ray_client_address_runs_the_study_too(cluster: Cluster, tmp_path: Path, no_leftovers: None) -> None:
    # Ray Client streams no task: each run is a prepare task and then the run's own task
    exp = _experiment(tmp_path, "client", ["native"], iterations=1, cluster='[cluster]\nhosts = ["node-a", "node-b"]')
    db = tmp_path / "s.db"
    address = f"ray://127.0.0.1:{cluster.client_port}"  # type: ignore[attr-defined]
    done = subprocess.run(_driver(exp, address, db), capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    with Store(db) as st:
        runs = st.runs({"study_id": "study:client"})
        rows = st.study_runs("study:client")
    assert sorted((_host(r), r.status) for r in runs) == [("node-a", "ok"), ("node-b", "ok")]
    assert all(r["status"] == "finished" and r["actions"]["page_cache"] == {"policy": "keep"} for r in rows)
