"""Creating and removing a run's own memory cgroup (v1 and v2).

Write-side companion of the read-only ``memgap.collect.cgroup``. Everything works on
the directory a ``CgroupRef`` names, so tests drive it over a fake tree."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from pathlib import Path

import psutil

from memgap.collect.cgroup import CgroupRef
from memgap.errors import EnvironmentUnavailable, PrivilegeError

PREFIX = "memgap-"
_NAME_RE = re.compile(r"^memgap-(\d+)-[0-9a-zA-Z]+$")


def child_name(run_id: str, owner_pid: int | None = None) -> str:
    # The owner's PID is in the name so a later run can tell a stale cgroup (owner dead)
    # from one that a concurrent memgap is using.
    return f"{PREFIX}{owner_pid or os.getpid()}-{run_id}"


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # as `echo > file` does; cgroupfs accepts it
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _permission_error(parent: CgroupRef, e: OSError) -> PrivilegeError:
    return PrivilegeError(
        f"sandbox: cannot create a memory cgroup under {parent.path}: {e.strerror} "
        "(needs root, or write access to that cgroup delegated to this user)"
    )


def run_parent(own: CgroupRef) -> CgroupRef:
    """Where a run's own memory cgroup goes, given the cgroup memgap itself is in.

    v1: under our own. v2: under our own when that can hand the memory controller to
    children -- the root cgroup, or one that already delegates it. Otherwise our own
    cgroup holds processes (memgap itself), and cgroup v2's "no internal processes" rule
    forbids enabling the controller below it; then the run goes beside us, under our
    parent, which (having memory enabled for its children, us included) holds none. This
    is where systemd puts a login session's scopes too."""
    if own.version == 1 or own.relpath in ("", "/"):
        return own
    if "memory" in _words(own.path / "cgroup.subtree_control"):
        return own
    parent_rel = own.relpath.rstrip("/").rsplit("/", 1)[0] or "/"
    parent = CgroupRef(version=2, path=own.path.parent, relpath=parent_rel)
    if "memory" in _words(parent.path / "cgroup.subtree_control") and os.access(parent.path, os.W_OK):
        return parent
    return own  # create_child will say why nothing can be created here


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def create_child(parent: CgroupRef, name: str, memory_limit_bytes: int | None = None) -> CgroupRef:
    """mkdir a child memory cgroup under ``parent``; set its limit. Raises typed errors."""
    if parent.version == 2:
        _enable_memory_controller_v2(parent)
    path = parent.path / name
    try:
        path.mkdir()
    except PermissionError as e:
        raise _permission_error(parent, e) from e
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise _permission_error(parent, e) from e
        raise EnvironmentUnavailable(f"sandbox: cannot create cgroup {path}: {e.strerror}") from e
    ref = CgroupRef(version=parent.version, path=path, relpath=parent.relpath.rstrip("/") + "/" + name)
    if memory_limit_bytes is not None:
        try:
            _write(path / ref.files.limit, str(memory_limit_bytes))
            swap_limit = ref.files.swap_limit
            if swap_limit is not None and (path / swap_limit).exists():
                # A memory limit that swap can absorb measures the disk, not the limit.
                _write(path / swap_limit, "0")
        except OSError as e:
            remove(ref)
            raise EnvironmentUnavailable(f"sandbox: cannot set memory limit on {path}: {e.strerror}") from e
    return ref


def _enable_memory_controller_v2(parent: CgroupRef) -> None:
    subtree = parent.path / "cgroup.subtree_control"
    try:
        enabled = subtree.read_text().split()
    except OSError as e:
        raise EnvironmentUnavailable(f"sandbox: cannot read {subtree}: {e.strerror}") from e
    if "memory" in enabled:
        return
    try:
        _write(subtree, "+memory")
    except OSError as e:
        if e.errno == errno.EBUSY:
            # cgroup v2's "no internal processes" rule: a cgroup holding processes cannot
            # hand the memory controller to children.
            raise EnvironmentUnavailable(
                f"sandbox: cgroup v2 will not enable the memory controller below {parent.path} "
                "because memgap's own cgroup holds processes; start memgap in a delegated scope, "
                "e.g. `systemd-run --scope -p Delegate=yes memgap run ...`"
            ) from e
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _permission_error(parent, e) from e
        raise EnvironmentUnavailable(f"sandbox: cannot write {subtree}: {e.strerror}") from e


def pids(ref: CgroupRef) -> list[int]:
    try:
        text = (ref.path / "cgroup.procs").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split() if x.strip().isdigit()]


def kill_all(ref: CgroupRef, sig: int = signal.SIGKILL) -> None:
    if ref.version == 2 and (ref.path / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            _write(ref.path / "cgroup.kill", "1")
            return
    for pid in pids(ref):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def remove(ref: CgroupRef, timeout_s: float = 10.0) -> None:
    """Kill whatever is left in the cgroup, release its page cache (v1), rmdir it.
    Raises EnvironmentUnavailable if it cannot be removed within timeout_s."""
    if not ref.path.exists():
        return
    deadline = time.monotonic() + timeout_s
    while pids(ref) and time.monotonic() < deadline:
        kill_all(ref)
        time.sleep(0.05)
    force_empty = ref.files.force_empty
    if force_empty is not None and (ref.path / force_empty).exists():
        # v1 keeps page cache charged to a cgroup after its processes exit; without
        # this, the next run would find the model warm in a cgroup that no longer exists.
        with contextlib.suppress(OSError):
            _write(ref.path / force_empty, "0")
    last: OSError | None = None
    while True:
        try:
            ref.path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            last = e
            if time.monotonic() >= deadline:
                break
            kill_all(ref)
            time.sleep(0.1)
    raise EnvironmentUnavailable(f"sandbox: could not remove cgroup {ref.path}: {last.strerror if last else '?'}")


def sweep_stale(parent: CgroupRef) -> list[Path]:
    """Remove memgap cgroups left by a memgap process that no longer exists (a crash
    or SIGKILL). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(parent.path.iterdir())
    except OSError:
        return removed
    for d in entries:
        m = _NAME_RE.match(d.name)
        if not m or not d.is_dir():
            continue
        owner = int(m.group(1))
        if owner != os.getpid() and psutil.pid_exists(owner):
            continue
        ref = CgroupRef(version=parent.version, path=d, relpath=parent.relpath.rstrip("/") + "/" + d.name)
        with contextlib.suppress(EnvironmentUnavailable):
            remove(ref, timeout_s=5.0)
            removed.append(d)
    return removed


def join_self(procs_file: Path) -> None:
    """Called in the child between fork and exec: move this process into the cgroup
    before it allocates anything (v1 never moves existing charges)."""
    fd = os.open(procs_file, os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
