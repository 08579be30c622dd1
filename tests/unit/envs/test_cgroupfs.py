"""Creating and removing a run's cgroup, over fake v1 and v2 trees (plain folders: the
kernel's cgroupfs files are stand-ins written as the kernel would have them)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memgap.collect.cgroup import CgroupRef
from memgap.envs import cgroupfs
from memgap.errors import EnvironmentUnavailable, PrivilegeError


def parent(tmp: Path, version: int, subtree: str = "") -> CgroupRef:
    d = tmp / "parent"
    d.mkdir()
    if version == 2:
        (d / "cgroup.subtree_control").write_text(subtree + "\n")
    return CgroupRef(version=version, path=d, relpath="/user.slice")  # type: ignore[arg-type]


def fake_kernel_files(ref: CgroupRef) -> None:
    # mkdir in a real cgroupfs creates these; a plain folder does not
    (ref.path / "cgroup.procs").write_text("")
    if ref.version == 1:
        (ref.path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    else:
        (ref.path / "memory.max").write_text("max\n")


def test_v1_child_with_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = parent(tmp_path, 1)
    real_mkdir = Path.mkdir

    def mkdir_like_kernel(self: Path, *a: object, **k: object) -> None:
        real_mkdir(self)
        (self / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        (self / "cgroup.procs").write_text("")

    monkeypatch.setattr(Path, "mkdir", mkdir_like_kernel)
    ref = cgroupfs.create_child(p, "memgap-1-abc", 64 * 2**20)
    assert ref.version == 1 and ref.relpath == "/user.slice/memgap-1-abc"
    assert (ref.path / "memory.limit_in_bytes").read_text() == str(64 * 2**20)


def test_v2_enables_memory_controller_and_sets_max_and_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = parent(tmp_path, 2, subtree="cpu")
    real_mkdir = Path.mkdir

    def mkdir_like_kernel(self: Path, *a: object, **k: object) -> None:
        real_mkdir(self)
        for f in ("memory.max", "memory.swap.max"):
            (self / f).write_text("max\n")

    monkeypatch.setattr(Path, "mkdir", mkdir_like_kernel)
    ref = cgroupfs.create_child(p, "memgap-1-abc", 10**9)
    # the write asked the kernel to enable memory for children ("+memory")
    assert (p.path / "cgroup.subtree_control").read_text() == "+memory"
    assert (ref.path / "memory.max").read_text() == str(10**9)
    assert (ref.path / "memory.swap.max").read_text() == "0"


def test_v2_no_internal_processes_rule_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = parent(tmp_path, 2, subtree="")

    def busy(path: Path, value: str) -> None:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(cgroupfs, "_write", busy)
    with pytest.raises(EnvironmentUnavailable, match="no internal processes|holds processes"):
        cgroupfs.create_child(p, "memgap-1-abc")


def test_permission_denied_names_the_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = parent(tmp_path, 1)

    def denied(self: Path, *a: object, **k: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(PrivilegeError, match=str(p.path)):
        cgroupfs.create_child(p, "memgap-1-abc")


def test_remove_kills_members_and_removes(tmp_path: Path) -> None:
    p = parent(tmp_path, 1)
    d = p.path / "memgap-1-abc"
    d.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (d / "cgroup.procs").write_text(f"{child.pid}\n")
    ref = CgroupRef(version=1, path=d, relpath="/x")

    # A plain folder does not drop a killed pid from cgroup.procs; emulate the kernel.
    orig_kill_all = cgroupfs.kill_all

    def kill_and_forget(r: CgroupRef, sig: int = 9) -> None:
        orig_kill_all(r, sig)
        child.wait(5)
        (r.path / "cgroup.procs").write_text("")

    cgroupfs.kill_all = kill_and_forget  # type: ignore[assignment]
    try:
        cgroupfs.kill_all(ref)
        # rmdir of a real cgroup succeeds with its interface files in place; a plain
        # folder needs the stand-in removed first
        (d / "cgroup.procs").unlink()
        cgroupfs.remove(ref)
    finally:
        cgroupfs.kill_all = orig_kill_all  # type: ignore[assignment]
    assert child.returncode == -9
    assert not d.exists()


def test_sweep_removes_only_stale(tmp_path: Path) -> None:
    p = parent(tmp_path, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = p.path / f"memgap-{dead.pid}-aaaa"
    live = p.path / f"memgap-{os.getppid()}-bbbb"
    other = p.path / "someone-else"
    for d in (stale, live, other):
        d.mkdir()
    removed = cgroupfs.sweep_stale(p)
    assert removed == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_child_name_carries_owner() -> None:
    assert cgroupfs.child_name("abc123", owner_pid=42) == "memgap-42-abc123"
    assert cgroupfs._NAME_RE.match(cgroupfs.child_name("abc123"))


def _v2_tree(tmp: Path, root_subtree: str, session_subtree: str) -> CgroupRef:
    """/sys/fs/cgroup/user.slice/session-3.scope as a login shell sees it (v2 files as
    the kernel writes them: a space-separated controller list and a newline)."""
    (tmp / "user.slice" / "session-3.scope").mkdir(parents=True)
    (tmp / "user.slice" / "cgroup.subtree_control").write_text(root_subtree + "\n")
    (tmp / "user.slice" / "session-3.scope" / "cgroup.subtree_control").write_text(session_subtree + "\n")
    (tmp / "user.slice" / "session-3.scope" / "cgroup.procs").write_text("812\n4411\n")
    return CgroupRef(version=2, path=tmp / "user.slice" / "session-3.scope", relpath="/user.slice/session-3.scope")


def test_run_parent_v2_goes_beside_a_cgroup_that_holds_processes(tmp_path: Path) -> None:
    own = _v2_tree(tmp_path, "cpu io memory pids", "")
    where = cgroupfs.run_parent(own)
    assert where.path == tmp_path / "user.slice" and where.relpath == "/user.slice"
    assert where.version == 2


def test_run_parent_v2_stays_when_own_already_delegates_memory(tmp_path: Path) -> None:
    own = _v2_tree(tmp_path, "cpu io memory pids", "memory pids")
    assert cgroupfs.run_parent(own) == own


def test_run_parent_v2_stays_when_parent_has_no_memory_for_children(tmp_path: Path) -> None:
    # Nothing better exists; create_child then explains the no-internal-processes rule.
    own = _v2_tree(tmp_path, "cpu pids", "")
    assert cgroupfs.run_parent(own) == own


def test_run_parent_root_and_v1_stay(tmp_path: Path) -> None:
    root = CgroupRef(version=2, path=tmp_path, relpath="/")
    assert cgroupfs.run_parent(root) == root
    v1 = CgroupRef(version=1, path=tmp_path / "x", relpath="/x")
    assert cgroupfs.run_parent(v1) == v1
