"""``--attach``: an engine someone else started, measured and never stopped; what memgap
could not see is written down. The engine here is a TEST DOUBLE process
(attach_engine_double.py: an OpenAI streaming server, no model); its engine log is the
recorded llama-server log of tests/fixtures/logs. The real llama-server, natively and in
Docker, is in tests/integration/test_attach_real.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memgap.collect.cgroup import memory_cgroup_of
from memgap.envs.attached import AttachedEnvironment, copy_log, resolve_target
from memgap.envs.base import LaunchSpec
from memgap.envs.container import ContainerCli, ContainerState
from memgap.errors import EnvironmentUnavailable, UsageError
from memgap.outcome import describe_failure
from memgap.runner import perform_run
from memgap.spec import AttachSpec, RunSpec

HERE = Path(__file__).resolve().parent
RECORDED_LOG = HERE.parents[1] / "fixtures" / "logs" / "llamacpp-smollm2-c8192-np4.log"
MiB = 1 << 20


@pytest.fixture
def double_engine(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    url_file = tmp_path / "url"
    proc = subprocess.Popen([sys.executable, str(HERE / "attach_engine_double.py"), str(url_file)])
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the double did not start"
            time.sleep(0.05)
        yield proc, url_file.read_text()
    finally:
        proc.kill()
        proc.wait()


def attached(url: str, **attach: Any) -> RunSpec:
    return RunSpec.from_dict({
        "engine": {"kind": "llamacpp"},
        "environment": {"name": "attached", "attach": {"url": url, **attach}},
        "workload": {"requests": 4, "concurrency": 2, "prompt_tokens": 8, "output_tokens": 4, "warmup_requests": 0},
        "sampler": {"rate_hz": 20},
    })


def whats(notes: list[dict[str, str]]) -> list[str]:
    return [n["what"] for n in notes]


def test_attach_by_pid_measures_the_process_and_leaves_it_running(
    double_engine: tuple[subprocess.Popen[bytes], str], tmp_path: Path, no_leftovers: None
) -> None:
    proc, url = double_engine
    log = tmp_path / "engine.log"
    shutil.copy(RECORDED_LOG, log)
    out = perform_run(attached(url, pid=proc.pid, engine_log=str(log)))
    r = out.record
    assert r["status"] == "ok", r["failure"]
    assert proc.poll() is None  # still running: memgap does not stop what it did not start
    assert r["environment"] == "attached" and r["engine_exit_status"] is None
    assert r["requests_ok"] == 4 and r["output_tokens"] == 16  # the same workload as any run
    info = r["environment_info"]
    a = info["attached"]
    assert a["target"] == "pid" and a["pid"] == proc.pid and a["alive_at_end"] is True
    assert a["stopped_by_memgap"] is False and "attach_engine_double.py" in " ".join(a["cmdline"])
    assert a["served_models"] == ["double-model"]
    # the process's memory: the double holds 32 MiB of its own
    assert r["memory"]["process_rss_peak_bytes"] >= 32 * MiB and r["memory"]["samples"] >= 3
    # its cgroup is memgap's own here (it is this test's child): measured, and said so
    own = memory_cgroup_of("self")
    if own is not None and own.relpath != "/":
        assert a["cgroup"] == own.relpath and r["memory"]["cgroup_usage_peak_bytes"] is not None
        assert any("memgap's own" in c for c in info["caveats"])
    # the engine's own figures from --engine-log, copied whole (printed before memgap attached)
    assert r["engine_report"]["kv_cache_bytes"] == 180 * MiB
    assert a["engine_log"]["whole_file"] is True and a["engine_log"]["source"] == str(log)
    assert out.engine_log == RECORDED_LOG.read_text()
    # what it could not see: the model (none given) and the engine's options
    assert whats(info["not_measured"]) == ["engine options", "model identity"]
    assert r["model"] is None and r["model_sha256"] is None
    assert r["engine_options"]["options"] == "unknown" and r["engine_command"] == []
    assert "attached engine" in r["prefix_cache"]
    assert any("'start' mark is the attach time" in c for c in info["caveats"])


def test_url_only_says_what_it_could_not_see(
    double_engine: tuple[subprocess.Popen[bytes], str], tmp_path: Path, no_leftovers: None
) -> None:
    proc, url = double_engine
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    spec = attached(url).replace(engine={"kind": "llamacpp", "model_path": str(model)})
    r = perform_run(spec).record
    assert r["status"] == "ok", r["failure"]
    assert proc.poll() is None
    assert whats(r["environment_info"]["not_measured"]) == [
        "process tree", "cgroup layer", "engine figures", "engine options"]
    assert r["memory"]["process_rss_peak_bytes"] is None and r["memory"]["cgroup_usage_peak_bytes"] is None
    assert r["engine_report"]["found_any"] is False  # a visible miss, not an empty success
    # a local model given: identified (digest and size), as any run's
    assert r["model"] == "model.gguf" and r["model_size_bytes"] == 64 and len(r["model_sha256"]) == 64


def test_an_engine_that_goes_away_is_a_failed_run_with_a_cause(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    env = AttachedEnvironment(AttachSpec(url="http://127.0.0.1:9", pid=sleeper.pid))
    with env.launch(LaunchSpec(command=None, log_path=tmp_path / "log", run_id="x")) as running:
        assert running.poll() is None and running.pid == sleeper.pid
        sleeper.kill()
        sleeper.wait()
        assert running.poll() == -1  # gone; not memgap's child, so its status is not visible
        assert running.stop() is None
        assert running.extra_info()["attached"]["alive_at_end"] is False
    assert describe_failure("during the workload", None, None) == (
        "engine went away during the workload (its exit status is not visible to memgap)")


def test_bad_targets_are_one_clear_error(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(UsageError, match=rf"--pid {gone.pid}: no such process"):
        resolve_target(AttachSpec(url="http://h:1", pid=gone.pid))
    with pytest.raises(UsageError, match="not a memory cgroup here"):
        resolve_target(AttachSpec(url="http://h:1", cgroup=tmp_path))
    with pytest.raises(UsageError, match="not a readable file"):
        AttachedEnvironment(AttachSpec(url="http://h:1", engine_log=tmp_path / "nope.log")).check()
    with pytest.raises(UsageError, match="at most one of pid, container, cgroup"):
        RunSpec.from_dict({"environment": {"name": "attached", "attach": {"url": "http://h:1", "pid": 1,
                                                                            "container": "c"}}})


def test_attach_by_cgroup_takes_its_oldest_process() -> None:
    own = memory_cgroup_of("self")
    if own is None or own.relpath == "/":
        pytest.skip("this process is in no memory cgroup of its own")
    t = resolve_target(AttachSpec(url="http://h:1", cgroup=own.path))
    assert t.kind == "cgroup" and t.cgroup is not None and t.cgroup.path == own.path
    assert t.pid is not None and t.key is not None and t.cgroup_pids is not None and t.cgroup_pids >= 1
    assert any("oldest process" in c for c in t.caveats)
    # the same cgroup named as /proc/PID/cgroup prints it
    assert resolve_target(AttachSpec(url="http://h:1", cgroup=Path(own.relpath))).cgroup == t.cgroup


class FakeContainerCli(ContainerCli):
    """A docker/podman CLI that answers from a table (no daemon here)."""

    def __init__(self, tool: str, states: dict[str, ContainerState], installed: bool = True) -> None:
        super().__init__(tool, binary=Path("/bin/true") if installed else None)
        if not installed:
            self.binary = None
        self.states = states
        self.logs = b""

    def inspect(self, ref: str) -> ContainerState | None:
        return self.states.get(ref)

    def call(self, args: Any, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        assert list(args)[0] == "logs"
        return subprocess.CompletedProcess(list(args), 0, self.logs, b"")


def container(pid: int | None, running: bool = True, exit_code: int | None = None) -> ContainerState:
    return ContainerState(id="c0ffee", name="engine", image_id="sha256:ab", running=running,
                          status="running" if running else "exited", pid=pid, exit_code=exit_code,
                          oom_killed=False, error=None, started_at=None, finished_at=None, cgroup_path=None)


def test_attach_by_container_name(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        states = {"engine": container(sleeper.pid), "c0ffee": container(sleeper.pid)}
        docker = FakeContainerCli("docker", {}, installed=False)
        podman = FakeContainerCli("podman", states)
        podman.logs = RECORDED_LOG.read_bytes()
        clis: dict[str, ContainerCli] = {"docker": docker, "podman": podman}
        env = AttachedEnvironment(AttachSpec(url="http://127.0.0.1:9", container="engine"), clis=clis)
        env.check()
        log = tmp_path / "log"
        with env.launch(LaunchSpec(command=None, log_path=log, run_id="x")) as running:
            assert running.pid == sleeper.pid
            sleeper.kill()
            sleeper.wait()
            states["c0ffee"] = container(None, running=False, exit_code=137)
            assert running.poll() == 137  # the container's exit code, from inspect
            assert running.stop() == 137
            info = running.extra_info()
        a = info["attached"]
        assert a["container"]["tool"] == "podman" and a["container"]["state"]["exit_code"] == 137
        # no --engine-log: the container's own log stands in, and says where it came from
        assert a["engine_log"]["source"] == "podman logs engine" and log.read_bytes() == RECORDED_LOG.read_bytes()
        assert "engine figures" not in whats(info["not_measured"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_container_not_found_or_not_running() -> None:
    clis: dict[str, ContainerCli] = {"docker": FakeContainerCli("docker", {}),
                                     "podman": FakeContainerCli("podman", {}, installed=False)}
    with pytest.raises(EnvironmentUnavailable, match="docker: no such container.*podman: not installed"):
        resolve_target(AttachSpec(url="http://h:1", container="engine"), clis=clis)
    clis["docker"] = FakeContainerCli("docker", {"engine": container(None, running=False, exit_code=0)})
    with pytest.raises(UsageError, match="--container engine: not running"):
        resolve_target(AttachSpec(url="http://h:1", container="engine"), clis=clis)


def test_copy_log_whole_or_its_end(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.log", tmp_path / "dest.log"
    src.write_bytes(b"x" * 60 + b"y" * 40)
    assert copy_log(src, dest)["whole_file"] is True and dest.read_bytes() == src.read_bytes()
    info = copy_log(src, dest, max_bytes=40)
    assert info == {"copied_bytes": 40, "size_bytes_at_end": 100, "copied_from_offset": 60, "whole_file": False}
    assert dest.read_bytes() == b"y" * 40
    os.unlink(src)
    assert copy_log(src, dest)["copied_bytes"] == 0
