"""The container environment's logic over a stand-in CLI and fake /proc trees: where a
container's cgroup is, who owns a container, stale sweeps, failed starts, OOM evidence."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from memgap.collect.cgroup import existing_memory_cgroup_of
from memgap.engines.base import EngineCommand
from memgap.envs.base import LaunchSpec
from memgap.envs.container import ContainerCli, ContainerOptions, ContainerStartFailed
from memgap.envs.container_run import ContainerEngine, owner_alive
from memgap.envs.docker import DockerEnvironment
from memgap.errors import EnvironmentUnavailable, UsageError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "containers"
CID = "36c563cc7c9ec8de034ad185d6440b5a78022a02c082a325bfb142dbbe37ab03"

HOST_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# What the container itself sees: its cgroup mount is rooted at its own cgroup, so
# resolving through it would name the host's root memory cgroup.
CONTAINER_MOUNTINFO = f"""\
700 690 0:32 /docker/{CID} /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
"""
CONTAINER_CGROUP = f"4:memory:/docker/{CID}\n1:cpu:/docker/{CID}\n0::/docker/{CID}\n"


def stat_line(pid: int, start_ticks: int, state: str = "S") -> str:
    rest = [state, "1"] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 10
    return f"{pid} (llama-server) {' '.join(rest)}\n"


def fake_proc(tmp_path: Path, pid: int, *, start_ticks: int = 1000, state: str = "S") -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "self" / "mountinfo").write_text(HOST_MOUNTINFO.replace("/sys/fs/cgroup", str(tmp_path / "cg")))
    d = proc / str(pid)
    d.mkdir()
    (d / "cgroup").write_text(CONTAINER_CGROUP)
    (d / "mountinfo").write_text(CONTAINER_MOUNTINFO)
    (d / "stat").write_text(stat_line(pid, start_ticks, state))
    return proc


def test_container_cgroup_is_resolved_through_memgaps_own_mounts(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 4242)
    cg_dir = tmp_path / "cg" / "memory" / "docker" / CID
    cg_dir.mkdir(parents=True)
    ref = existing_memory_cgroup_of(4242, proc)
    assert ref is not None
    assert ref.version == 1 and ref.path == cg_dir and ref.relpath == f"/docker/{CID}"


def test_container_cgroup_that_is_gone_reads_as_none(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 4242)
    assert existing_memory_cgroup_of(4242, proc) is None  # the folder does not exist
    assert existing_memory_cgroup_of(999, proc) is None  # nor the process


def test_owner_label_notices_pid_reuse(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 77, start_ticks=5000)
    assert owner_alive("77:5000", proc)
    assert not owner_alive("77:4999", proc)  # same PID, another process
    assert not owner_alive("78:5000", proc)
    assert not owner_alive("garbage", proc)


# ------------------------------------------------------------------- a stand-in CLI


class FakeCli(ContainerCli):
    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None, inspect_text: str = "[]") -> None:
        super().__init__("docker", binary=Path("/usr/bin/docker"))
        self.answers = answers or {}
        self.inspect_text = inspect_text
        self.calls: list[list[str]] = []

    def call(self, args: Sequence[str], *, action: str, timeout_s: float = 60.0, stdin: bytes | None = None,
             check: bool = True, merge_stderr: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        self.calls.append(list(args))
        key = args[0]
        if key == "inspect":
            rc, out, err = 0, self.inspect_text, ""
        else:
            rc, out, err = self.answers.get(key, (0, "", ""))
        proc = subprocess.CompletedProcess(list(args), rc, out.encode(), err.encode())
        if check and rc != 0:
            from memgap.envs.container import classify_cli_error

            raise classify_cli_error(self.tool, action, err)
        return proc


def spec(tmp_path: Path) -> LaunchSpec:
    cmd = EngineCommand(argv=("/bin/llama-server", "--host", "127.0.0.1", "--port", "4000"),
                        env={"LD_LIBRARY_PATH": "/bin"}, read_paths=(Path("/bin"),))
    return LaunchSpec(command=cmd, log_path=tmp_path / "engine.log", run_id="abc123")


def test_daemon_not_running_is_a_clear_error() -> None:
    cli = FakeCli({"version": (1, "", "Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?")})
    with pytest.raises(EnvironmentUnavailable, match="daemon is not running"):
        DockerEnvironment(cli=cli).check()


def test_missing_image_is_found_before_anything_starts() -> None:
    cli = FakeCli({"version": (0, "28.2.2 20.10.24", ""), "image": (1, "", "Error: No such image: trtllm:1")})
    with pytest.raises(EnvironmentUnavailable, match="image missing"):
        DockerEnvironment(ContainerOptions(image="trtllm:1"), cli=cli).check()
    assert not any(c[0] == "run" for c in cli.calls)


def test_docker_refuses_a_rootfs_folder() -> None:
    with pytest.raises(UsageError):
        DockerEnvironment(ContainerOptions(rootfs=Path("/")), cli=FakeCli()).check()


def test_failed_run_is_a_failed_start_and_the_container_is_removed(tmp_path: Path) -> None:
    cli = FakeCli({
        "version": (0, "28.2.2 20.10.24", ""),
        "ps": (0, "", ""),
        "run": (125, "", "docker: Error response from daemon: driver failed programming external connectivity: "
                         "Bind for 127.0.0.1:4000 failed: port is already allocated."),
    })
    env = DockerEnvironment(ContainerOptions(image="img:1"), cli=cli)
    env.check()
    with pytest.raises(ContainerStartFailed, match="port is already allocated"), env.launch(spec(tmp_path)):
        pass
    assert cli.calls[-1][:2] == ["rm", "-f"] and cli.calls[-1][-1] == "memgap-abc123"
    assert "port is already allocated" in (tmp_path / "engine.log").read_text()


def test_stale_containers_of_dead_owners_are_removed() -> None:
    import json

    items = json.loads((FIX / "docker-inspect-stopped.json").read_text())
    dead = {**items[0], "Id": "dead1", "Config": {**items[0]["Config"], "Labels": {"memgap.owner": "999999999:1"}}}
    mine = {**items[0], "Id": "alive1", "Config": {**items[0]["Config"], "Labels": {"memgap.owner": _my_label()}}}
    cli = FakeCli({"ps": (0, "dead1\nalive1\n", "")}, inspect_text=json.dumps([dead, mine]))
    removed = DockerEnvironment(cli=cli).sweep_stale()
    assert removed == ["dead1"]
    assert ["rm", "-f", "-v", "dead1"] in cli.calls and ["rm", "-f", "-v", "alive1"] not in cli.calls


def _my_label() -> str:
    from memgap.envs.container_run import owner_label

    return owner_label()


def test_an_oom_killed_container_reports_exit_status_and_flag() -> None:
    from memgap.envs.container import parse_inspect

    oom_text = (FIX / "docker-inspect-oom.json").read_text()
    (state,) = parse_inspect(oom_text)
    cli = FakeCli({"stats": (1, "", "Error: No such container")}, inspect_text=oom_text)
    engine = ContainerEngine(cli, "mgoom", state, ["docker", "run"])
    try:
        assert engine.pid == 0 and engine.cgroup is None  # exited before we looked
        assert engine.poll() == 137
        assert engine.stop() == 137
        info: dict[str, Any] = engine.extra_info()
    finally:
        engine.stop()
    assert info["oom_killed"] is True
    assert info["container"]["state"]["exit_code"] == 137
    assert info["engine_stats"]["source"] == "docker stats --no-stream"
    assert not any(c[0] == "stop" for c in cli.calls)  # nothing to stop: it already exited


# ------------------------------------------------------------------- failure descriptions


def test_container_oom_flag_with_the_last_cgroup_reading_is_the_evidence() -> None:
    from memgap.outcome import DIED_BEFORE_READY, describe_failure

    cg = {"limit_bytes": 100 * 2**20, "failcnt": 3, "oom_kill_count": 1, "peak_bytes": 100 * 2**20}
    msg = describe_failure(DIED_BEFORE_READY, 137, cg, {"oom_killed": True})
    assert msg.startswith("engine was OOM-killed before it was ready")
    for part in ("State.OOMKilled=true", "exit status 137", "limit 100.0 MiB", "failcnt 3", "oom_kill count 1"):
        assert part in msg


def test_sigkill_at_the_limit_reads_as_oom_when_the_counter_is_gone() -> None:
    from memgap.outcome import DIED_DURING_WORKLOAD, describe_failure

    at_limit = {"limit_bytes": 2**27, "peak_bytes": 2**27, "oom_kill_count": None}
    assert "OOM-killed during the workload" in describe_failure(DIED_DURING_WORKLOAD, 137, at_limit)
    below = {"limit_bytes": 2**27, "peak_bytes": 2**26, "oom_kill_count": None}
    assert describe_failure(DIED_DURING_WORKLOAD, 137, below) == "engine exited with status 137 during the workload"
    # the cgroup gone with its container: its last reading 96 of 100 MiB (seen with podman)
    near = {"limit_bytes": 100 * 2**20, "peak_bytes": 100823040, "oom_kill_count": 0,
            "read": "last reading before the engine exited"}
    assert describe_failure(DIED_DURING_WORKLOAD, 137, near) == (
        "engine was most likely OOM-killed during the workload (SIGKILL, exit status 137, with its cgroup at 96.2 MiB "
        "of its limit 100.0 MiB in the last reading before it exited; the cgroup went with it, so its OOM counter "
        "could not be read)")
    # the same figures read from a live cgroup are no such evidence
    assert describe_failure(DIED_DURING_WORKLOAD, 137, {**near, "read": None}).startswith("engine exited with status 137")
    # A container that was stopped normally is no failure to describe.
    assert describe_failure(DIED_DURING_WORKLOAD, 0, None, {"oom_killed": False}) == "engine exited with status 0 during the workload"


def test_the_kernel_logs_oom_kill_is_the_evidence_when_the_container_engine_missed_it() -> None:
    from memgap.collect.kmsg import parse_oom_kills, read_kernel_log
    from memgap.outcome import DIED_BEFORE_READY, describe_failure

    # podman left State.OOMKilled false and its cgroup was gone: the last reading said 60 MiB
    lines = read_kernel_log(Path(__file__).resolve().parents[2] / "fixtures" / "kmsg" / "podman-oom-v1.kmsg")
    kills = [k.to_dict() for k in parse_oom_kills(lines or [])]
    podman = {"oom_killed": False, "kernel_oom_kills": kills}
    last = {"limit_bytes": 100 * 2**20, "peak_bytes": 60 * 2**20, "oom_kill_count": 0,
            "read": "last reading before the engine exited"}
    assert describe_failure(DIED_BEFORE_READY, 137, last, {"oom_killed": False}) == (
        "engine exited with status 137 before it was ready")
    assert describe_failure(DIED_BEFORE_READY, 137, last, podman) == (
        "engine was OOM-killed before it was ready (kernel log: the OOM killer killed llama-server (PID 26355, "
        "98.9 MiB anonymous) in cgroup /libpod_parent/libpod-cf3b3d685a0dfe2a427160e38a75c908a9b8a059fcaa93b2d87c818c596493d3; "
        "limit 100.0 MiB; exit status 137)")
    # every piece of evidence there is, the container engine's flag first; no kill logged is no evidence
    both = describe_failure(DIED_BEFORE_READY, 137, {**last, "oom_kill_count": 1}, {**podman, "oom_killed": True})
    assert both.startswith("engine was OOM-killed before it was ready (container State.OOMKilled=true; kernel log: ")
    assert both.endswith("; cgroup oom_kill count 1; limit 100.0 MiB; exit status 137)")
    assert describe_failure(DIED_BEFORE_READY, 137, last, {"kernel_oom_kills": []}).startswith("engine exited with status 137")
    many = [{**kills[0], "pid": 26355 + i, "anon_rss_bytes": None} for i in range(5)]
    assert "llama-server (PID 26357) and 2 more in cgroup" in describe_failure(
        DIED_BEFORE_READY, 137, None, {"kernel_oom_kills": many})


@pytest.mark.parametrize(
    ("log", "taken"),
    [
        ("srv  llama_server: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080\n", True),
        ("docker: Error response from daemon: Bind for 127.0.0.1:8080 failed: port is already allocated.", True),
        ("OSError: [Errno 98] Address already in use", True),
        ("main: server is listening on http://127.0.0.1:8080", False),
    ],
)
def test_port_in_use_is_recognised_in_the_log(log: str, taken: bool) -> None:
    from memgap.outcome import port_in_use

    assert port_in_use(log) is taken


def test_container_cgroup_on_a_v2_only_host(tmp_path: Path) -> None:
    # Ubuntu 24.04 / DGX Spark: one cgroup2 mount, docker's systemd driver scope.
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(f"35 23 0:30 / {tmp_path}/cg rw,nosuid - cgroup2 cgroup2 rw\n")
    (proc / "77").mkdir()
    scope = f"/system.slice/docker-{CID}.scope"
    (proc / "77" / "cgroup").write_text(f"0::{scope}\n")
    (tmp_path / "cg" / "system.slice" / f"docker-{CID}.scope").mkdir(parents=True)
    # a v2 root lists its controllers; memory must be among them
    (tmp_path / "cg" / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    ref = existing_memory_cgroup_of(77, proc)
    assert ref is not None and ref.version == 2
    assert ref.path == tmp_path / "cg" / "system.slice" / f"docker-{CID}.scope" and ref.relpath == scope
