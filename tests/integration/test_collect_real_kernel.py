"""The collectors against the real kernel: a child process in a memory cgroup of its
own allocates known amounts of anon, page cache and shmem, and the cgroup and
/proc readings must move by those amounts.

Needs root (or a delegated cgroup) to create the cgroup; skipped otherwise."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kernel_child import CHILD, step

from memgap.collect.cgroup import (
    CgroupMemory,
    CgroupRef,
    cgroup_pids,
    read_cgroup_memory,
)
from memgap.collect.process import process_key, read_status

pytestmark = pytest.mark.integration

MB = 1024 * 1024
ANON_BYTES = 200 * MB
FILE_BYTES = 100 * MB
SHMEM_BYTES = 50 * MB
TOLERANCE = 0.15

def _assert_about(actual: int | None, expected: int, what: str) -> None:
    assert actual is not None, f"{what}: unknown"
    assert abs(actual - expected) <= TOLERANCE * expected, (
        f"{what}: {actual / MB:.1f} MB, expected {expected / MB:.0f} MB"
    )


def _delta(after: CgroupMemory, before: CgroupMemory, field: str) -> int:
    a, b = getattr(after, field), getattr(before, field)
    assert a is not None and b is not None, f"{field} unknown"
    return int(a - b)


def test_anon_file_and_shmem_charges(child_cgroup: CgroupRef, tmp_path: Path) -> None:
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
        (child_cgroup.path / "cgroup.procs").write_text(str(child.pid))
        assert cgroup_pids(child_cgroup) == [child.pid]
        key = process_key(child.pid)
        assert key is not None
        m0 = read_cgroup_memory(child_cgroup)

        step(child, "anon")
        m1 = read_cgroup_memory(child_cgroup)
        _assert_about(_delta(m1, m0, "anon_bytes"), ANON_BYTES, "cgroup anon")
        status = read_status(key)
        assert status is not None
        # The child is the cgroup's only process and allocated nothing before joining.
        _assert_about(status.rss_anon_bytes, m1.anon_bytes or 0, "RssAnon vs cgroup anon")
        _assert_about(status.rss_anon_bytes, ANON_BYTES, "RssAnon")

        step(child, "file")
        m2 = read_cgroup_memory(child_cgroup)
        _assert_about(_delta(m2, m1, "file_bytes"), FILE_BYTES, "cgroup file (page cache)")
        assert abs(_delta(m2, m1, "anon_bytes")) < 0.05 * ANON_BYTES

        step(child, "shm")
        m3 = read_cgroup_memory(child_cgroup)
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
    assert cgroup_pids(child_cgroup) == []
    assert not shm_path.exists()
