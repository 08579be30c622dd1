from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memgap.collect.cgroup import memory_cgroup_of
from memgap.collect.fastread import FileReader
from memgap.collect.meminfo import parse_meminfo


def test_rereads_a_file_rewritten_in_place(tmp_path: Path):
    f = tmp_path / "memory.current"
    f.write_text("100\n")
    with FileReader(f) as r:
        assert r.read_text() == "100\n"
        with open(f, "r+") as w:  # same inode, as the kernel updates its files
            w.write("2000\n")
        assert r.read_text() == "2000\n"


def test_text_longer_than_the_initial_buffer_comes_whole(tmp_path: Path):
    f = tmp_path / "memory.stat"
    body = "".join(f"key{i} {i}\n" for i in range(500))
    f.write_text(body)
    with FileReader(f, initial_size_bytes=64) as r:
        assert r.read_text() == body
        assert r.read_text() == body


def test_missing_file_is_none_until_it_appears(tmp_path: Path):
    f = tmp_path / "memory.peak"
    r = FileReader(f)
    assert r.read_text() is None
    f.write_text("7\n")
    assert r.read_text() == "7\n"
    r.close()


def test_closed_reader_refuses(tmp_path: Path):
    f = tmp_path / "x"
    f.write_text("1")
    r = FileReader(f)
    r.close()
    with pytest.raises(ValueError):
        r.read_text()


def test_real_procfs_seq_file_reads_fresh_each_time():
    with FileReader("/proc/meminfo") as r:
        first = parse_meminfo(r.read_text() or "")
        second = parse_meminfo(r.read_text() or "")
    assert first.total_bytes == second.total_bytes
    assert first.raw.keys() == second.raw.keys()


def test_real_cgroup_usage_file():
    ref = memory_cgroup_of()
    if ref is None:
        pytest.skip("no memory cgroup visible here")
    name = "memory.current" if ref.version == 2 else "memory.usage_in_bytes"
    if not (ref.path / name).exists():
        pytest.skip(f"{name} not present in {ref.path} (root cgroup?)")
    with FileReader(ref.path / name) as r:
        values = [int((r.read_text() or "").strip()) for _ in range(3)]
    assert all(v > 0 for v in values)


def test_dead_process_file_reads_none_and_is_not_reopened():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        r = FileReader(f"/proc/{child.pid}/status", reopen=False)
        text = r.read_text()
        assert text is not None and f"Pid:\t{child.pid}" in text
    finally:
        child.kill()
        child.wait()
    # Reaped: its /proc directory is gone and reads through the old fd fail (ESRCH).
    assert r.read_text() is None
    assert r.read_text() is None
    r.close()


def test_own_status_twice():
    with FileReader(f"/proc/{os.getpid()}/status", reopen=False) as r:
        a, b = r.read_text(), r.read_text()
    assert a is not None and b is not None and a.splitlines()[0] == b.splitlines()[0]


def test_falls_back_to_lseek_and_read_when_pread_is_refused(tmp_path: Path, monkeypatch):
    import errno

    f = tmp_path / "memory.events"
    f.write_text("low 0\nhigh 0\n")

    def no_pread(fd: int, n: int, offset: int) -> bytes:
        raise OSError(errno.ESPIPE, "Illegal seek")

    monkeypatch.setattr(os, "pread", no_pread)
    with FileReader(f) as r:
        assert r.read_text() == "low 0\nhigh 0\n"
        assert r.read_text() == "low 0\nhigh 0\n"
