"""``memgap run --attach``: a real llama-server that the test starts by hand -- natively,
and in a Docker container -- is measured by memgap: the same workload and record as a run
memgap starts itself, the memory of the attached process (or container) and its cgroup,
and the engine's own figures from ``--engine-log``. memgap leaves the engine running; the
test stops it.

Docker needs root and the services of ``scripts/services.sh`` (``scripts/test.sh`` starts
them); on CI (``CI=true``) a missing piece fails the test instead of skipping it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services_env import services_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MEMGAP = [sys.executable, "-m", "memgap"]
ON_CI = os.environ.get("CI", "").lower() == "true"
MiB = 1 << 20
KV_BYTES = 180 * MiB  # SmolLM2-135M, 8192 cells, f16: what llama.cpp prints and DESIGN.md derives
WORKLOAD = ["--requests", "6", "--concurrency", "2", "--prompt-tokens", "16", "--output-tokens", "8", "--warmup", "1"]


def _missing(why: str) -> None:
    if ON_CI:
        pytest.fail(f"CI must run the attach tests for real: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def engine_files() -> tuple[Path, Path]:
    from memgap.engines.llamacpp import embedded_model_path, find_server
    from memgap.errors import EngineNotFound

    try:
        return find_server(), embedded_model_path()
    except EngineNotFound as e:
        _missing(str(e))
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_argv(server: Path, model: Path, port: int) -> list[str]:
    return [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "8192",
            "--parallel", "4", "-t", "2", "--metrics", "--verbosity", "4", "--log-colors", "off"]


def wait_healthy(url: str, alive: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert alive(), "the engine exited before it was ready"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not healthy after {timeout_s} s")


def memgap(args: list[str], env: dict[str, str] | None = None, timeout_s: float = 300) -> tuple[int, dict[str, Any], str]:
    p = subprocess.run([*MEMGAP, "run", *args, "--json"], capture_output=True, text=True, timeout=timeout_s,
                       env={**os.environ, **(env or {})})
    assert p.stdout.strip(), p.stderr[-3000:]
    return p.returncode, json.loads(p.stdout), p.stderr


def what_was_not_seen(r: dict[str, Any]) -> list[str]:
    return [n["what"] for n in r["environment_info"]["not_measured"]]


# ------------------------------------------------------------------- native


@pytest.fixture
def native_server(engine_files: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    server, model = engine_files
    port = _free_port()
    log = tmp_path / "llama-server.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(server_argv(server, model, port), stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "LD_LIBRARY_PATH": str(server.parent)}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: proc.poll() is None)
        yield proc, url, log
    finally:  # the test started it, the test stops it
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_attach_to_a_native_llama_server(no_leftovers: None, native_server: tuple[subprocess.Popen[bytes], str, Path],
                                         engine_files: tuple[Path, Path], tmp_path: Path) -> None:
    proc, url, log = native_server
    store = tmp_path / "r.db"
    rc, out, err = memgap(["--attach", url, "--pid", str(proc.pid), "--engine-log", str(log), "--engine", "llamacpp",
                           *WORKLOAD, "--store", str(store)])
    assert rc == 0, err[-3000:]
    [r] = out["runs"]
    assert r["status"] == "ok", r["failure"]
    # memgap left the engine running
    assert proc.poll() is None and httpx.get(url + "/health", timeout=5).status_code == 200
    assert r["environment"] == "attached" and r["engine"] == "llamacpp" and r["engine_exit_status"] is None
    # the workload, as in any run (end of sequence ignored: exactly 8 tokens each)
    assert r["requests_ok"] == 6 and r["output_tokens"] == 48 and r["ttft_s"]["p50"] > 0
    info = r["environment_info"]
    a = info["attached"]
    assert a["target"] == "pid" and a["pid"] == proc.pid and a["alive_at_end"] is True
    assert Path(a["cmdline"][0]).name == "llama-server"
    # the memory of the attached process: at least its KV cache, in anonymous memory
    mem = r["memory"]
    assert mem["process_anon_peak_bytes"] >= KV_BYTES and mem["process_rss_peak_bytes"] >= KV_BYTES
    # its cgroup (memgap's own here: both are this test's children), measured and said so
    if a["cgroup"] is not None:
        assert mem["cgroup_usage_peak_bytes"] >= KV_BYTES
        assert any("memgap's own" in c for c in info["caveats"])
    else:
        assert "cgroup layer" in what_was_not_seen(r)
    # the engine's own figures, from --engine-log (printed before memgap attached)
    assert r["engine_report"]["kv_cache_bytes"] == KV_BYTES and r["engine_report"]["kv_cache_tokens"] == 8192
    assert a["engine_log"]["source"] == str(log) and a["engine_log"]["whole_file"] is True
    # what it could not see
    assert what_was_not_seen(r) == ["engine options", "model identity"]
    assert r["model"] is None and r["model_sha256"] is None

    # --model names the file the server runs: then it is identified like any run's model
    _, model = engine_files
    rc, out, err = memgap(["--attach", url, "--pid", str(proc.pid), "--engine-log", str(log), "--model", str(model),
                           *WORKLOAD, "--store", str(store)])
    assert rc == 0, err[-3000:]
    from memgap.engines.modelfile import model_file

    assert out["runs"][0]["model_sha256"] == model_file(model).sha256
    assert "model identity" not in what_was_not_seen(out["runs"][0])
    assert proc.poll() is None


# ------------------------------------------------------------------- docker




@pytest.fixture(scope="module")
def docker_env() -> dict[str, str]:
    if os.geteuid() != 0:
        _missing("docker needs root here")
    env = services_env()
    try:
        p = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=30, check=False)
    except FileNotFoundError:
        _missing("docker is not installed (run scripts/services.sh start)")
    if p.returncode != 0:
        _missing(f"docker does not answer (run `eval \"$(scripts/services.sh start)\"`): {p.stderr.strip()[-200:]}")
    return env


def docker(args: list[str], env: dict[str, str], check: bool = True) -> str:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
                       check=False)
    assert not check or p.returncode == 0, p.stderr
    return p.stdout.strip()


@pytest.fixture
def docker_server(engine_files: tuple[Path, Path], docker_env: dict[str, str],
                  tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """llama-server in a container started the way a user would: memgap's skeleton image
    (empty folders, the host's /usr bind-mounted read-only), the binary and model mounted
    read-only, host networking, its log written to a bind-mounted folder."""
    from memgap.envs.container import ContainerCli
    from memgap.envs.rootfs import ensure_skeleton_image

    server, model = engine_files
    tag, _ = ensure_skeleton_image(ContainerCli("docker", env=docker_env))
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    name = f"attach-test-{uuid.uuid4().hex[:8]}"
    docker(["run", "-d", "--name", name, "--network=host", "-v", "/usr:/usr:ro",
            "-v", f"{server.parent}:{server.parent}:ro", "-v", f"{model}:{model}:ro", "-v", f"{logs}:{logs}",
            "-e", f"LD_LIBRARY_PATH={server.parent}", tag,
            *server_argv(server, model, port), "--log-file", str(logs / "server.log")], docker_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, lambda: docker(["inspect", "-f", "{{.State.Running}}", name], docker_env) == "true")
        yield name, url, logs / "server.log"
    finally:  # the test started it, the test removes it
        docker(["rm", "-f", name], docker_env, check=False)


def test_attach_to_a_llama_server_in_docker(no_leftovers: None, docker_server: tuple[str, str, Path],
                                            docker_env: dict[str, str], tmp_path: Path) -> None:
    name, url, log = docker_server
    store = tmp_path / "r.db"
    rc, out, err = memgap(["--attach", url, "--container", name, "--engine-log", str(log), "--engine", "llamacpp",
                           *WORKLOAD, "--store", str(store)], docker_env)
    assert rc == 0, err[-3000:]
    [r] = out["runs"]
    assert r["status"] == "ok", r["failure"]
    state = json.loads(docker(["inspect", name], docker_env))[0]
    assert state["State"]["Running"] is True  # memgap left the container running
    cid, pid = state["Id"], state["State"]["Pid"]
    assert r["requests_ok"] == 6 and r["output_tokens"] == 48
    a = r["environment_info"]["attached"]
    assert a["target"] == "container" and a["pid"] == pid
    assert a["container"]["tool"] == "docker" and a["container"]["id"] == cid
    # the container's own memory cgroup, found from its main process (never hard-coded)
    assert a["cgroup"].endswith(cid) and r["environment_info"]["cgroup_version"] in (1, 2)
    mem = r["memory"]
    # the engine's KV cache is charged to the container's cgroup, and nothing much else
    assert KV_BYTES <= mem["cgroup_anon_peak_bytes"] and mem["cgroup_usage_peak_bytes"] < 2 << 30
    assert mem["process_anon_peak_bytes"] >= KV_BYTES
    assert r["cgroup_final"] is not None or mem["cgroup_usage_peak_bytes"] is not None
    # the engine's own figures, from the log file the container wrote
    assert r["engine_report"]["kv_cache_bytes"] == KV_BYTES
    assert what_was_not_seen(r) == ["engine options", "model identity"]

    # Without --engine-log, the container's own log (docker logs) is read instead.
    rc, out, err = memgap(["--attach", url, "--container", name, *WORKLOAD, "--store", str(store)], docker_env)
    assert rc == 0, err[-3000:]
    r2 = out["runs"][0]
    assert r2["environment_info"]["attached"]["engine_log"]["source"] == f"docker logs {name}"
    assert r2["engine_report"]["kv_cache_bytes"] == KV_BYTES
    assert docker(["inspect", "-f", "{{.State.Running}}", name], docker_env) == "true"
