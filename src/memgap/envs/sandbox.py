"""``sandbox``: the engine in a memory cgroup of its own and its own mount, PID, IPC and
UTS namespaces -- what a container runtime does, without a daemon or an image.

The cgroup is created under memgap's own memory cgroup (cgroup v2: beside it, when
memgap's own cannot delegate the controller; see ``cgroupfs.run_parent``) before the
engine starts, and the
child joins it between fork and exec, before it allocates (cgroup v1 never moves charges
made earlier). It is removed when the launch context exits, whatever happened."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import CgroupRef, memory_cgroup_of
from memgap.envs import cgroupfs
from memgap.envs.base import (
    ChildProcessEngine,
    Environment,
    LaunchSpec,
    RunningEngine,
    child_engine,
)
from memgap.errors import EnvironmentUnavailable, PrivilegeError

NAMESPACES = ("mount", "pid", "ipc", "uts")


class _SandboxEngine(ChildProcessEngine):
    def __init__(self, proc: subprocess.Popen[bytes], cgroup: CgroupRef) -> None:
        super().__init__(proc, cgroup)
        self._own_cgroup = cgroup

    def stop(self, timeout_s: float = 10.0) -> int | None:
        rc = super().stop(timeout_s)
        # The engine is PID 1 of its namespace only through unshare; whatever is left in
        # the cgroup (a daemonised child, say) is killed too.
        cgroupfs.kill_all(self._own_cgroup)
        return rc


class SandboxEnvironment(Environment):
    name = "sandbox"

    def __init__(self, memory_limit_bytes: int | None = None, proc_root: Path = Path("/proc")) -> None:
        self.memory_limit_bytes = memory_limit_bytes
        self.proc_root = proc_root
        self._parent: CgroupRef | None = None
        self._unshare: str | None = None

    def check(self) -> None:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise EnvironmentUnavailable("sandbox: `unshare` not found (install util-linux)")
        if os.geteuid() != 0:
            raise PrivilegeError(
                "sandbox: needs root (CAP_SYS_ADMIN to create mount/PID/IPC/UTS namespaces "
                "and write access to a memory cgroup); run as root or use --env native"
            )
        parent = memory_cgroup_of("self", self.proc_root)
        if parent is None:
            raise EnvironmentUnavailable(
                "sandbox: no memory cgroup controller is mounted (neither cgroup v1 `memory` "
                "nor a cgroup v2 hierarchy with the memory controller)"
            )
        parent = cgroupfs.run_parent(parent)
        if not os.access(parent.path, os.W_OK):
            raise PrivilegeError(f"sandbox: memory cgroup {parent.path} (where runs go) is not writable")
        self._parent = parent
        self._unshare = unshare

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "isolation": "namespaces+cgroup",
            "namespaces": list(NAMESPACES),
            "own_cgroup": True,
            "memory_limit_bytes": self.memory_limit_bytes,
            "parent_cgroup": str(self._parent.path) if self._parent else None,
            "cgroup_version": self._parent.version if self._parent else None,
        }

    @contextlib.contextmanager
    def launch(self, spec: LaunchSpec) -> Iterator[RunningEngine]:
        if self._parent is None or self._unshare is None:
            self.check()
        assert self._parent is not None and self._unshare is not None
        cgroupfs.sweep_stale(self._parent)
        cg = cgroupfs.create_child(self._parent, cgroupfs.child_name(spec.run_id), self.memory_limit_bytes)
        try:
            argv = [
                self._unshare,
                *(f"--{ns}" for ns in NAMESPACES),
                "--fork",
                "--mount-proc",
                # If unshare itself dies, its child (the engine) gets SIGKILL.
                "--kill-child",
                "--",
                *spec.command.argv,
            ]
            procs_file = cg.path / "cgroup.procs"
            with child_engine(spec, argv, engine=lambda proc: _SandboxEngine(proc, cg),
                              before_exec=lambda: cgroupfs.join_self(procs_file)) as engine:
                yield engine
        finally:
            cgroupfs.remove(cg)
