from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FakeHost, fixture_text
from memgap.collect.errors import CollectorParseError
from memgap.collect.process import (
    ProcessKey,
    parse_smaps_rollup,
    parse_stat,
    parse_status,
    process_key,
    process_tree,
    read_smaps_rollup,
    read_status,
)

KIB = 1024


# ---------------------------------------------------------------- parsers


def test_stat_of_a_real_process():
    st = parse_stat(fixture_text("proc/v1host/stat"), "stat")
    assert (st.pid, st.comm, st.state, st.ppid, st.start_ticks) == (
        14847,
        "sleep",
        "S",
        14834,
        313270,
    )


def test_stat_comm_with_spaces_and_parentheses():
    # Real output of a binary named "we) ird (na" (comm is cut to 15 bytes by the kernel).
    st = parse_stat(fixture_text("proc/odd_comm/stat"), "stat")
    assert st.comm == "we) ird (na"
    assert (st.pid, st.ppid, st.start_ticks) == (16640, 16639, 336706)


def test_stat_of_a_kernel_thread():
    st = parse_stat(fixture_text("proc/kthread/stat"), "stat")
    assert (st.pid, st.comm, st.ppid) == (2, "kthreadd", 0)


@pytest.mark.parametrize(
    "bad", ["", "12 sleep S 1", "12 (sleep) S 1 2 3", "x (sleep) " + "0 " * 30]
)
def test_stat_malformed(bad):
    with pytest.raises(CollectorParseError, match="/proc/12/stat"):
        parse_stat(bad, "/proc/12/stat")


def test_status_memory_fields():
    s = parse_status(fixture_text("proc/v1host/status"), "status")
    assert s.name == "sleep"
    assert s.vm_rss_bytes == 1664 * KIB
    assert (s.rss_anon_bytes, s.rss_file_bytes, s.rss_shmem_bytes) == (108 * KIB, 1556 * KIB, 0)
    assert s.vm_hwm_bytes == 1664 * KIB and s.vm_size_bytes == 2920 * KIB and s.vm_swap_bytes == 0
    assert s.threads == 1


def test_status_name_with_spaces_and_parentheses():
    assert parse_status(fixture_text("proc/odd_comm/status"), "status").name == "we) ird (na"


def test_status_of_a_kernel_thread_has_no_memory_fields():
    s = parse_status(fixture_text("proc/kthread/status"), "status")
    assert s.name == "kthreadd"
    assert s.vm_rss_bytes is None and s.rss_anon_bytes is None and s.vm_swap_bytes is None
    assert s.threads == 1


def test_status_malformed_memory_line():
    text = fixture_text("proc/v1host/status").replace(
        "RssAnon:\t     108 kB", "RssAnon:\t108 pages"
    )
    with pytest.raises(CollectorParseError, match=r"status:24"):
        parse_status(text, "status")


def test_smaps_rollup():
    r = parse_smaps_rollup(fixture_text("proc/v1host/smaps_rollup"), "smaps_rollup")
    assert r.rss_bytes == 1664 * KIB and r.pss_bytes == 223 * KIB
    assert (r.pss_anon_bytes, r.pss_file_bytes, r.pss_shmem_bytes) == (108 * KIB, 115 * KIB, 0)
    assert (r.shared_clean_bytes, r.shared_dirty_bytes) == (1520 * KIB, 0)
    assert (r.private_clean_bytes, r.private_dirty_bytes) == (36 * KIB, 108 * KIB)
    assert r.anonymous_bytes == 108 * KIB and r.swap_bytes == 0


def test_smaps_rollup_before_5_7_has_no_pss_split():
    text = "\n".join(
        ln
        for ln in fixture_text("proc/v1host/smaps_rollup").splitlines()
        if not ln.startswith("Pss_")
    )
    r = parse_smaps_rollup(text, "smaps_rollup")
    assert r.pss_bytes == 223 * KIB and r.pss_anon_bytes is None


# ---------------------------------------------------------------- readers over a fake /proc


def _proc(host: FakeHost, pid: int, ppid: int, start: int, children: str | None = "") -> None:
    d = host.proc / str(pid)
    (d / "task" / str(pid)).mkdir(parents=True)
    (d / "stat").write_text(f"{pid} (p{pid}) S {ppid} " + "0 " * 17 + f"{start} 0 0\n")
    (d / "status").write_text(
        fixture_text("proc/v1host/status").replace("Name:\tsleep", f"Name:\tp{pid}")
    )
    (d / "smaps_rollup").write_text(fixture_text("proc/v1host/smaps_rollup"))
    if children is not None:
        (d / "task" / str(pid) / "children").write_text(children)


def test_process_key_and_reads(host: FakeHost):
    _proc(host, 100, 1, 5000)
    key = process_key(100, host.proc)
    assert key == ProcessKey(100, 5000)
    status = read_status(key, host.proc)
    assert status is not None and status.name == "p100"
    rollup = read_smaps_rollup(key, host.proc)
    assert rollup is not None and rollup.pss_bytes == 223 * KIB


def test_reused_pid_reads_as_none(host: FakeHost):
    _proc(host, 100, 1, 5000)
    old = ProcessKey(100, 4000)  # the process we knew started earlier: this is another one
    assert read_status(old, host.proc) is None
    assert read_smaps_rollup(old, host.proc) is None


def test_gone_process(host: FakeHost):
    assert process_key(100, host.proc) is None
    assert read_status(ProcessKey(100, 1), host.proc) is None
    assert process_tree(100, host.proc) == []


def test_tree_from_children_files(host: FakeHost):
    _proc(host, 100, 1, 10, children="101 102 ")
    _proc(host, 101, 100, 11, children="103")
    _proc(host, 102, 100, 12)
    _proc(host, 103, 101, 13)
    _proc(host, 200, 1, 14)  # unrelated
    assert process_tree(100, host.proc) == [
        ProcessKey(100, 10),
        ProcessKey(101, 11),
        ProcessKey(102, 12),
        ProcessKey(103, 13),
    ]


def test_tree_skips_children_that_vanished_or_were_reused(host: FakeHost):
    _proc(host, 100, 1, 10, children="101 102 104")
    _proc(host, 101, 100, 11)
    _proc(host, 102, 7, 12)  # exited, PID reused by a process of another parent
    # 104 is listed but already gone
    assert process_tree(100, host.proc) == [ProcessKey(100, 10), ProcessKey(101, 11)]


def test_tree_falls_back_to_scanning_ppid_without_children_files(host: FakeHost):
    _proc(host, 100, 1, 10, children=None)
    _proc(host, 101, 100, 11, children=None)
    _proc(host, 103, 101, 13, children=None)
    _proc(host, 200, 1, 14, children=None)
    (host.proc / "self").mkdir()  # non-numeric entries are not processes
    assert process_tree(100, host.proc) == [
        ProcessKey(100, 10),
        ProcessKey(101, 11),
        ProcessKey(103, 13),
    ]


# ---------------------------------------------------------------- the real kernel


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_real_tree_and_reads(sleeper):
    me = process_key(os.getpid())
    assert me is not None
    tree = process_tree(os.getpid())
    assert tree[0] == me
    assert sleeper.pid in [k.pid for k in tree]
    status = read_status(me)
    assert status is not None and status.rss_anon_bytes and status.rss_anon_bytes > 0
    rollup = read_smaps_rollup(me)
    assert rollup is not None and rollup.pss_bytes and rollup.pss_bytes <= (rollup.rss_bytes or 0)


def test_real_exited_process_reads_as_none(sleeper):
    key = process_key(sleeper.pid)
    assert key is not None
    sleeper.kill()
    sleeper.wait()
    deadline = time.monotonic() + 5
    while process_key(sleeper.pid) == key and time.monotonic() < deadline:
        time.sleep(0.01)
    assert read_status(key) is None


def test_reads_through_an_injected_root_path_type(tmp_path: Path):
    assert process_key(1, tmp_path) is None


def test_tree_without_task_dirs_uses_the_ppid_scan(host: FakeHost):
    for pid, ppid in ((100, 1), (101, 100), (102, 101)):
        (host.proc / str(pid)).mkdir()
        (host.proc / str(pid) / "stat").write_text(f"{pid} (p) S {ppid} " + "0 " * 17 + "7 0 0\n")
    assert [k.pid for k in process_tree(100, host.proc)] == [100, 101, 102]
