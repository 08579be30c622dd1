"""What the real-kernel tests share: a child process that allocates known amounts on
command, the way to drop a file from the page cache, and a memory cgroup of the test's
own (created where a run's would be: ``cgroupfs.run_parent``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from memgap.collect.cgroup import CgroupRef, memory_cgroup_of
from memgap.envs import cgroupfs
from memgap.errors import MemgapError

# Waits for a command on stdin, does it, answers on stdout. It starts blocked on the
# first read so that it can be moved into a cgroup before it allocates anything.
# argv: data file, tmpfs file, anon bytes, file bytes to write first (0: read the file as
# it is), tmpfs bytes.
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
        if int(sys.argv[4]):
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


def step(child: subprocess.Popen[str], cmd: str) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(cmd + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == cmd


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@contextlib.contextmanager
def own_memory_cgroup() -> Iterator[CgroupRef]:
    """A memory cgroup of the test's own, removed after (skips where none can be made)."""
    if os.geteuid() != 0:
        pytest.skip("creating a memory cgroup needs root here (no delegated cgroup)")
    own = memory_cgroup_of("self")
    if own is None:
        pytest.skip("no memory cgroup controller visible to this process")
    try:
        ref = cgroupfs.create_child(cgroupfs.run_parent(own), cgroupfs.child_name(uuid.uuid4().hex[:8]))
    except MemgapError as e:
        pytest.skip(str(e))
    try:
        yield ref
    finally:
        cgroupfs.remove(ref)
        assert not ref.path.exists()
