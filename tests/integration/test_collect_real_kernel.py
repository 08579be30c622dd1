"""The collectors against the real kernel: a child process in a memory cgroup of its
own allocates known amounts of anon, page cache and shmem, and the cgroup and
/proc readings must move by those amounts.

Needs root (or a delegated cgroup) to create the cgroup; skipped otherwise."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memgap.collect.cgroup import (
    CgroupMemory,
    CgroupRef,
    cgroup_pids,
    memory_cgroup_of,
    read_cgroup_memory,
)
from memgap.collect.process import process_key, read_status

pytestmark = pytest.mark.integration

MB = 1024 * 1024
ANON_BYTES = 200 * MB
FILE_BYTES = 100 * MB
SHMEM_BYTES = 50 * MB
TOLERANCE = 0.15

# Waits for a command on stdin, does it, answers on stdout. It starts blocked on the
# first read so that it can be moved into the cgroup before it allocates anything.
CHILD = r"""
import os, sys
data_path, shm_path = sys.argv[1], sys.argv[2]
chunk = b"\x5a" * (1024 * 1024)
keep = []
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "anon":
        keep.append(bytearray(b"\x01") * int(sys.argv[3]))  # written, so every page is resident
    elif cmd == "file":
        with open(data_path, "wb") as f:
            for _ in range(int(sys.argv[4]) // len(chunk)):
                f.write(chunk)
        buf = bytearray(len(chunk))
        with open(data_path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    elif cmd == "shm":
        with open(shm_path, "wb") as f:
            for _ in range(int(sys.argv[5]) // len(chunk)):
                f.write(chunk)
    print(cmd, flush=True)
"""


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@pytest.fixture
def own_cgroup() -> Iterator[CgroupRef]:
    if os.geteuid() != 0:
        pytest.skip("creating a memory cgroup needs root here (no delegated cgroup)")
    parent = memory_cgroup_of("self")
    if parent is None:
        pytest.skip("no memory cgroup controller visible to this process")
    base_path, base_rel = parent.path, parent.relpath
    if parent.version == 2:
        # v2's no-internal-processes rule: the cgroup holding this process cannot
        # hand the memory controller to children, so the test cgroup becomes a sibling
        # (unless we sit in the root cgroup, which is exempt).
        if parent.relpath not in ("", "/"):
            base_path = parent.path.parent
            base_rel = parent.relpath.rsplit("/", 1)[0] or "/"
        try:
            controllers = (base_path / "cgroup.subtree_control").read_text().split()
            if "memory" not in controllers:
                _write(base_path / "cgroup.subtree_control", "+memory")
        except OSError as e:
            pytest.skip(f"cannot enable the memory controller under {base_path}: {e.strerror}")
    name = f"memgap-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path = base_path / name
    try:
        path.mkdir()
    except OSError as e:
        pytest.skip(f"cannot create a cgroup under {base_path}: {e.strerror}")
    ref = CgroupRef(version=parent.version, path=path, relpath=base_rel.rstrip("/") + "/" + name)
    try:
        yield ref
    finally:
        if ref.version == 1:
            # Page cache stays charged after its reader exits; drop it so rmdir does
            # not leave the charge behind (reparented) for the next run.
            with contextlib.suppress(OSError):
                _write(path / "memory.force_empty", "0")
        else:
            # v2 has no force_empty; memory.reclaim (5.19+) does the same job.
            with contextlib.suppress(OSError):
                _write(path / "memory.reclaim", str(1 << 40))
        deadline = time.monotonic() + 5
        while path.exists():
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert not path.exists()


def _step(child: subprocess.Popen[str], cmd: str) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(cmd + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == cmd


def _assert_about(actual: int | None, expected: int, what: str) -> None:
    assert actual is not None, f"{what}: unknown"
    assert abs(actual - expected) <= TOLERANCE * expected, (
        f"{what}: {actual / MB:.1f} MB, expected {expected / MB:.0f} MB"
    )


def _delta(after: CgroupMemory, before: CgroupMemory, field: str) -> int:
    a, b = getattr(after, field), getattr(before, field)
    assert a is not None and b is not None, f"{field} unknown"
    return int(a - b)


def test_anon_file_and_shmem_charges(own_cgroup: CgroupRef, tmp_path: Path) -> None:
    data_path = tmp_path / "data.bin"
    shm_path = Path("/dev/shm") / f"memgap-test-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(data_path),
            str(shm_path),
            str(ANON_BYTES),
            str(FILE_BYTES),
            str(SHMEM_BYTES),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        _write(own_cgroup.path / "cgroup.procs", str(child.pid))
        assert cgroup_pids(own_cgroup) == [child.pid]
        key = process_key(child.pid)
        assert key is not None
        m0 = read_cgroup_memory(own_cgroup)

        _step(child, "anon")
        m1 = read_cgroup_memory(own_cgroup)
        _assert_about(_delta(m1, m0, "anon_bytes"), ANON_BYTES, "cgroup anon")
        status = read_status(key)
        assert status is not None
        # The child is the cgroup's only process and allocated nothing before joining.
        _assert_about(status.rss_anon_bytes, m1.anon_bytes or 0, "RssAnon vs cgroup anon")
        _assert_about(status.rss_anon_bytes, ANON_BYTES, "RssAnon")

        _step(child, "file")
        m2 = read_cgroup_memory(own_cgroup)
        _assert_about(_delta(m2, m1, "file_bytes"), FILE_BYTES, "cgroup file (page cache)")
        assert abs(_delta(m2, m1, "anon_bytes")) < 0.05 * ANON_BYTES

        _step(child, "shm")
        m3 = read_cgroup_memory(own_cgroup)
        _assert_about(_delta(m3, m2, "shmem_bytes"), SHMEM_BYTES, "cgroup shmem")
        # tmpfs pages are page cache to both v1 (cache) and v2 (file).
        _assert_about(_delta(m3, m2, "file_bytes"), SHMEM_BYTES, "cgroup file incl. shmem")
        _assert_about(
            _delta(m3, m0, "usage_bytes"), ANON_BYTES + FILE_BYTES + SHMEM_BYTES, "cgroup usage"
        )
        assert (
            m3.peak_bytes is not None
            and m3.usage_bytes is not None
            and m3.peak_bytes >= m3.usage_bytes
        )
    finally:
        child.kill()
        child.wait()
        with contextlib.suppress(FileNotFoundError):
            shm_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            data_path.unlink()
    assert read_status(key) is None
    assert cgroup_pids(own_cgroup) == []
    assert not shm_path.exists()
