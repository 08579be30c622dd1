"""``memgap probe --json`` natively and inside the sandbox environment (own memory
cgroup, own mount/PID/IPC/UTS namespaces): both agree with /proc/meminfo read around
them, and each reports the memory cgroup it is really in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memgap.collect.cgroup import memory_cgroup_of
from memgap.collect.meminfo import MemInfo, read_meminfo
from memgap.engines.base import EngineCommand
from memgap.envs.base import LaunchSpec, wait_until
from memgap.envs.sandbox import SandboxEnvironment
from memgap.errors import EnvironmentUnavailable, PrivilegeError

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"
SLACK = 256 << 20  # other processes on a busy 2-core machine
ARGV = (sys.executable, "-m", "memgap", "probe", "--json", "--no-nvml", "--no-torch", "--weights-bytes", "0")


def _consistent(out: dict, before: MemInfo, after: MemInfo) -> None:  # type: ignore[type-arg]
    mi = out["measured"]["meminfo"]
    assert mi["total_bytes"] == before.total_bytes == after.total_bytes
    for key in ("free_bytes", "available_bytes", "cached_bytes"):
        lo = min(getattr(before, key), getattr(after, key)) - SLACK
        hi = max(getattr(before, key), getattr(after, key)) + SLACK
        assert lo <= mi[key] <= hi, key
    uni = out["scenarios"][0]
    assert uni["name"] == "unified" and uni["readings"]["free_bytes"] == mi["free_bytes"]


def _json_of(text: str) -> dict:  # type: ignore[type-arg]
    return json.loads(text[text.index("{"):])


def test_native_and_sandbox(tmp_path: Path) -> None:
    env = SandboxEnvironment()
    try:
        env.check()
    except (PrivilegeError, EnvironmentUnavailable) as e:
        pytest.skip(f"sandbox unavailable here: {e}")
    pyenv = {"PYTHONPATH": str(SRC)}

    before = read_meminfo()
    native = subprocess.run(ARGV, capture_output=True, text=True, timeout=120,  # noqa: S603
                            env={**os.environ, **pyenv}, check=True)
    after = read_meminfo()
    native_out = _json_of(native.stdout)
    _consistent(native_out, before, after)
    own = memory_cgroup_of("self")
    assert own is not None and native_out["measured"]["cgroup"]["path"] == str(own.path)

    log = tmp_path / "probe.log"
    before = read_meminfo()
    with env.launch(LaunchSpec(command=EngineCommand(argv=ARGV, env=pyenv), log_path=log,
                               run_id="probe-sandbox")) as running:
        assert wait_until(lambda: running.poll() is not None, 120)
        assert running.poll() == 0, log.read_text()[-2000:]
        sandbox_cgroup = running.cgroup
    after = read_meminfo()
    sandbox_out = _json_of(log.read_text())
    _consistent(sandbox_out, before, after)
    # The probe saw the sandbox's own memory cgroup, a child of memgap's.
    assert sandbox_cgroup is not None
    assert sandbox_out["measured"]["cgroup"]["path"] == str(sandbox_cgroup.path)
    assert sandbox_out["measured"]["cgroup"]["path"] != native_out["measured"]["cgroup"]["path"]
