"""Docker, Podman and chroot for real: the same engine and model as native, each
container's cgroup measured from the host, an OOM-killed container recorded as a failed
run with its evidence, and nothing (container, mount, cgroup, process, temp folder) left
behind after any test.

Needs root and the services of ``scripts/services.sh`` (``scripts/test.sh`` starts them).
On CI (``CI=true``) a missing piece fails the test instead of skipping it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memgap_cli import MEMGAP, run_memgap
from services_env import services_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ON_CI = os.environ.get("CI", "").lower() == "true"


def _missing(why: str) -> None:
    if ON_CI:
        pytest.fail(f"CI must run the container tests for real: {why}")
    pytest.skip(why)




@pytest.fixture(scope="module")
def services() -> dict[str, str]:
    if os.geteuid() != 0:
        _missing("the container environments need root")
    env = services_env()
    full = {**os.environ, **env}
    for tool, args in (("docker", ["version", "--format", "{{.Server.Version}}"]), ("podman", ["info"])):
        try:
            p = subprocess.run([tool, *args], capture_output=True, text=True, env=full, timeout=30, check=False)
        except FileNotFoundError:
            _missing(f"{tool} is not installed (run scripts/services.sh start)")
        if p.returncode != 0:
            _missing(f"{tool} does not answer (run `eval \"$(scripts/services.sh start)\"`): {p.stderr.strip()[-200:]}")
    return env


def _labelled(tool: str, env: dict[str, str]) -> set[str]:
    p = subprocess.run([tool, "ps", "-a", "-q", "--no-trunc", "--filter", "label=memgap.owner"],
                       capture_output=True, text=True, env={**os.environ, **env}, check=True, timeout=60)
    return set(p.stdout.split())


def _memgap_mounts() -> set[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return {line.split()[4] for line in text.splitlines() if "memgap-rootfs-" in line}


def _rootfs_dirs() -> set[str]:
    return {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("memgap-rootfs-*")}


@pytest.fixture
def nothing_left(services: dict[str, str], no_leftovers: None) -> Iterator[None]:
    """No container, mount or rootfs folder outlives the test (no_leftovers adds cgroups,
    engine processes and run folders)."""
    before = (_labelled("docker", services), _labelled("podman", services), _memgap_mounts(), _rootfs_dirs())
    yield
    after = (_labelled("docker", services), _labelled("podman", services), _memgap_mounts(), _rootfs_dirs())
    for what, b, a in zip(("docker containers", "podman containers", "mounts", "rootfs folders"), before, after,
                          strict=True):
        assert a - b == set(), f"{what} left behind: {a - b}"


def memgap(args: list[str], env: dict[str, str], timeout_s: float = 600) -> tuple[int, dict[str, Any] | None, str]:
    return run_memgap(args, env, timeout_s)


SHORT = ["--prompt-tokens", "32", "--warmup", "1", "--concurrency", "4"]


@pytest.mark.timeout(1200)  # five engine starts; on a 2-core CI machine about 2-3 min in all
def test_five_environments_same_engine_and_model(tmp_path: Path, services: dict[str, str], nothing_left: None) -> None:
    rc, out, err = memgap(
        ["run", "--env", "native", "--env", "sandbox", "--env", "docker", "--env", "podman", "--env", "chroot",
         "--requests", "8", "--output-tokens", "16", *SHORT, "--store", str(tmp_path / "r.db"), "--json"],
        services,
        timeout_s=1100,
    )
    assert rc == 0, err[-3000:]
    assert out is not None
    runs = {r["environment"]: r for r in out["runs"]}
    assert list(runs) == ["native", "sandbox", "docker", "podman", "chroot"]
    for name, r in runs.items():
        assert r["status"] == "ok", (name, r["failure"], r.get("failure_log_tail"))
        assert r["requests_ok"] == 8 and r["output_tokens"] == 8 * 16, name
        # llama.cpp printed the same KV cache in every environment: 180 MiB for 8192 cells.
        assert r["engine_report"]["kv_cache_bytes"] == 180 * 2**20, name
    # The same engine build and model bits everywhere.
    assert len({r["engine_version"] for r in runs.values()}) == 1
    assert len({r["model_sha256"] for r in runs.values()}) == 1
    assert len({tuple(r["engine_command"][:1]) for r in runs.values()}) == 1
    # Own cgroup readings where the environment has one, none where it has not.
    for name in ("sandbox", "docker", "podman"):
        mem = runs[name]["memory"]
        # The engine's anonymous memory (KV 180 MiB + buffers) is charged to its cgroup...
        assert 180 * 2**20 <= mem["cgroup_anon_peak_bytes"] < 2 * 2**30, name
        # ...and nothing else: the cgroup is the container's own, not a parent's.
        assert mem["cgroup_usage_peak_bytes"] < 2 * 2**30, name
    for name in ("native", "chroot"):
        assert runs[name]["memory"]["cgroup_usage_peak_bytes"] is None, name
        assert runs[name]["environment_info"]["own_cgroup"] is False
    docker, podman = runs["docker"]["environment_info"], runs["podman"]["environment_info"]
    assert docker["container"]["cgroup"].startswith("/docker/")
    assert docker["container"]["cgroup"].endswith(docker["container"]["id"])
    assert podman["container"]["cgroup"].endswith(podman["container"]["id"])
    assert docker["container"]["image_id"].startswith("sha256:")
    assert docker["flags"] == ["--network=host"] and docker["options"]["network"] == "host"
    for info in (docker, podman):
        assert info["versions"]["client"]
        assert info["container"]["run_command"][1:3] == ["run", "-d"]
        assert info["container"]["state"]["exit_code"] is not None
        assert info["oom_killed"] is not True
        stats = info["engine_stats"]
        assert stats["readings"], stats["errors"]
        # The engine's own figure, labelled: within what the cgroup held at its peak.
        assert 0 < stats["usage_peak_bytes"] <= runs[info["name"]]["memory"]["cgroup_usage_peak_bytes"] * 1.1
    assert "inactive_file" in docker["engine_stats"]["meaning"]
    assert "page cache" in podman["engine_stats"]["meaning"]
    assert runs["chroot"]["environment_info"]["mount_check"]["mounts_left"] == []


def test_memory_limited_containers_are_oom_killed_runs_and_the_study_goes_on(
    tmp_path: Path, services: dict[str, str], nothing_left: None
) -> None:
    rc, out, err = memgap(
        ["run", "--env", "docker", "--env", "podman", "--memory", "100m", "--memory-swap", "100m",
         "--requests", "2", "--output-tokens", "4", *SHORT, "--store", str(tmp_path / "r.db"), "--json"],
        services,
    )
    assert rc == 1, err[-2000:]
    assert out is not None and [r["environment"] for r in out["runs"]] == ["docker", "podman"]
    for r in out["runs"]:
        assert r["status"] == "failed"
        assert "OOM-killed" in r["failure"], r["failure"]
        assert r["engine_exit_status"] == 137
        cg = r["cgroup_final"]
        assert cg["limit_bytes"] == 100 * 2**20
        # The evidence: the container engine's flag, the cgroup's own OOM-kill counter, or
        # (the counter gone with the cgroup) its watermark at or near the limit in the last reading.
        kills = r["environment_info"].get("kernel_oom_kills")
        assert (r["environment_info"]["oom_killed"] or (cg["oom_kill_count"] or 0) >= 1 or kills
                or cg["peak_bytes"] >= 0.9 * cg["limit_bytes"]), cg
        if kills is not None:  # the kernel's log was read: it names the container's cgroup
            assert kills and all(r["environment_info"]["container"]["id"] in k["oom_memcg"] for k in kills), kills
        assert r["environment_info"]["flags"][1:3] == ["--memory=100m", "--memory-swap=100m"]
    assert "State.OOMKilled=true" in out["runs"][0]["failure"]


def test_missing_daemon_and_image_are_clear_errors(tmp_path: Path, services: dict[str, str], nothing_left: None) -> None:
    rc, _, err = memgap(["run", "--env", "docker", "--store", str(tmp_path / "r.db")],
                        {**services, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"}, timeout_s=120)
    assert rc == 3 and "daemon is not running" in err, err
    rc, _, err = memgap(["run", "--env", "docker", "--image", "memgap-no-such-image:0", "--store",
                         str(tmp_path / "r.db")], services, timeout_s=120)
    assert rc == 3 and "image missing" in err, err
    assert not (tmp_path / "r.db").exists() or _runs_in(tmp_path / "r.db") == 0


def _runs_in(db: Path) -> int:
    from memgap.store import Store

    return len(Store(db).runs())


def test_stale_container_of_a_dead_memgap_is_removed(services: dict[str, str], nothing_left: None) -> None:
    from memgap.envs.container import ContainerCli
    from memgap.envs.docker import DockerEnvironment
    from memgap.envs.rootfs import ensure_skeleton_image

    cli = ContainerCli("docker", env=services)
    tag, _ = ensure_skeleton_image(cli)
    # A crashed memgap's container: its owner label names a PID that no longer runs.
    dead = subprocess.Popen(["true"])
    dead.wait()
    cid = cli.text(["run", "-d", "--label", f"memgap.owner={dead.pid}:1", "--label", "memgap.run=stale",
                    "--network=none", "-v", "/usr:/usr:ro", tag, "/usr/bin/sleep", "300"], action="run").strip()
    try:
        removed = DockerEnvironment(cli=cli).sweep_stale()
        assert cid in removed
        assert cli.inspect(cid) is None
    finally:
        cli.remove(cid)


@pytest.mark.parametrize("env_name", ["docker", "podman", "chroot"])
def test_ctrl_c_removes_everything(env_name: str, tmp_path: Path, services: dict[str, str], nothing_left: None) -> None:
    proc = subprocess.Popen(
        [*MEMGAP, "run", "--env", env_name, "--requests", "50", "--output-tokens", "64", *SHORT,
         "--store", str(tmp_path / "r.db")],
        env={**os.environ, **services}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _engine_started(env_name, proc.pid, services):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the engine never started")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    from memgap.store import Store

    runs = Store(tmp_path / "r.db").runs()
    assert len(runs) == 1 and runs[0].status == "failed" and "interrupted" in runs[0].record["failure"]


def _engine_started(env_name: str, memgap_pid: int, services: dict[str, str]) -> bool:
    """This test's own engine (other llama-servers may run on the machine)."""
    import psutil

    if env_name in ("docker", "podman"):
        return any(_owner_pid(env_name, c, services) == memgap_pid for c in _labelled(env_name, services))
    try:
        children = psutil.Process(memgap_pid).children(recursive=True)
    except psutil.Error:
        return False
    # the engine itself, not `llama-server --help` that memgap runs while building the command
    return any(c.name() == "llama-server" and "--port" in c.cmdline() for c in children)


def _owner_pid(tool: str, cid: str, env: dict[str, str]) -> int | None:
    p = subprocess.run([tool, "inspect", "-f", '{{index .Config.Labels "memgap.owner"}}', cid],
                       capture_output=True, text=True, env={**os.environ, **env}, check=False, timeout=30)
    head = p.stdout.strip().partition(":")[0]
    return int(head) if head.isdigit() else None


def test_chroot_in_an_exported_image_rootfs(services: dict[str, str], nothing_left: None) -> None:
    from memgap.envs.container import ContainerCli
    from memgap.envs.rootfs import ensure_skeleton_image, exported_image

    cli = ContainerCli("docker", env=services)
    tag, _ = ensure_skeleton_image(cli)
    with exported_image(cli, tag) as root:
        assert (root / "usr").is_dir() and (root / "lib64").is_symlink()
        where = root.parent
    assert not where.exists()


def test_doctor_sees_the_services(services: dict[str, str]) -> None:
    rc, out, err = memgap(["doctor", "--json"], services, timeout_s=120)
    assert rc == 0, err
    assert out is not None
    assert out["facts"]["containers"]["docker"]["daemon_answers"] is True
    assert out["facts"]["containers"]["podman"]["answers"] is True
    envs = out["facts"]["environments"]
    assert all(envs[n]["available"] for n in ("native", "sandbox", "docker", "podman", "chroot")), envs
