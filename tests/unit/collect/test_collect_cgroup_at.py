"""A memory cgroup a user names (``memgap run --attach --cgroup PATH``): its folder, or
its path as /proc/PID/cgroup prints it, resolved through our own mounts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import CgroupRef, memory_cgroup_at

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

SCOPE = "/system.slice/docker-2bb2c94b0c39.scope"


def test_v1_folder_or_proc_path(host: Any) -> None:
    host.add_process("v1host", pid="self")
    d = host.cgroup_dir("memory/docker/abc", "v1")
    want = CgroupRef(version=1, path=d, relpath="/docker/abc")
    assert memory_cgroup_at(d, host.proc) == want
    assert memory_cgroup_at("/docker/abc", host.proc) == want
    assert memory_cgroup_at("docker/abc/", host.proc) == want
    # the hierarchy's root is a cgroup too (the host's), and a folder outside any is none
    assert memory_cgroup_at(host.sys / "sys/fs/cgroup/memory", host.proc).relpath == "/"
    assert memory_cgroup_at("/docker/missing", host.proc) is None
    assert memory_cgroup_at(host.sys, host.proc) is None
    # a cpu-only hierarchy does not hold memory charges
    cpu = host.cgroup_dir("cpu/docker/abc")
    assert memory_cgroup_at(cpu, host.proc) is None


def test_v2_only_where_memory_is_enabled(host: Any) -> None:
    host.add_process("v2host_docker", pid="self")
    root = host.sys / "sys/fs/cgroup"
    root.mkdir(parents=True)
    d = host.cgroup_dir(SCOPE, "v2")
    assert memory_cgroup_at(d, host.proc) is None  # no cgroup.controllers: memory not enabled
    shutil.copy(FIXTURES / "cgroup" / "v2_root_cgroup.controllers", root / "cgroup.controllers")
    want = CgroupRef(version=2, path=d, relpath=SCOPE)
    assert memory_cgroup_at(d, host.proc) == want
    assert memory_cgroup_at(SCOPE, host.proc) == want


def test_no_mount_table(tmp_path: Path) -> None:
    assert memory_cgroup_at("/docker/abc", tmp_path) is None
