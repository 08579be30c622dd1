"""The kernel log's OOM kills (memgap.collect.kmsg): real /dev/kmsg records of docker,
podman and sandbox OOM kills, the line's other shapes from mm/oom_kill.c, and garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.collect.kmsg import OomKill, message, oom_kills_in, parse_oom_kills, read_kernel_log

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "kmsg"
DOCKER_ID = "7e2889d10d6d40520130e2419fec66633762fba6b65d514e87c1c124d792d454"
PODMAN_ID = "libpod-cf3b3d685a0dfe2a427160e38a75c908a9b8a059fcaa93b2d87c818c596493d3"


@pytest.mark.parametrize(
    ("name", "cgroup", "memcg", "pid", "anon_kb", "file_kb"),
    [
        ("docker-oom-v1.kmsg", DOCKER_ID, f"/docker/{DOCKER_ID}", 26204, 101268, 90288),
        ("podman-oom-v1.kmsg", PODMAN_ID, f"/libpod_parent/{PODMAN_ID}", 26355, 101296, 90112),
        ("sandbox-oom-v1.kmsg", "memgap-21362-4c9f4b6883b2",
         "/process_api/eb0598c120ce05f2c53d670719341039/memgap-21362-4c9f4b6883b2", 21370, 64604, 14916),
    ],
)
def test_a_recorded_oom_report_gives_one_kill_in_its_cgroup(
    name: str, cgroup: str, memcg: str, pid: int, anon_kb: int, file_kb: int
) -> None:
    lines = read_kernel_log(FIXTURES / name)
    assert lines is not None and len(lines) > 70  # the whole report: stack, memory.stat, task list
    (kill,) = parse_oom_kills(lines)
    assert kill == OomKill(pid=pid, task="llama-server", oom_memcg=memcg, task_memcg=memcg,
                           constraint="CONSTRAINT_MEMCG", anon_rss_bytes=anon_kb * 1024, file_rss_bytes=file_kb * 1024)
    assert kill.in_cgroup(cgroup)
    for other in (DOCKER_ID, PODMAN_ID, "memgap-21362-4c9f4b6883b2"):
        if other != cgroup:
            assert not kill.in_cgroup(other)
    assert oom_kills_in(cgroup, FIXTURES / name) == [kill]
    assert oom_kills_in("libpod-0000", FIXTURES / name) == []


def test_the_lines_other_shapes() -> None:
    # mm/oom_kill.c dump_oom_summary(), rebuilt: cgroup v2 with a container's inner cgroup,
    # node lists with commas, a system-wide OOM (",global_oom"), no memory cgroups at all,
    # a name that looks like the line's own fields, and plain dmesg text.
    lines = [
        "6,1,5,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=libpod-abc.scope,mems_allowed=0-1,3,"
        "oom_memcg=/machine.slice/libpod-abc.scope,task_memcg=/machine.slice/libpod-abc.scope/container,"
        "task=python3,pid=4242,uid=1000",
        " SUBSYSTEM=memory",  # a record's dictionary line
        "3,2,6,-;Memory cgroup out of memory: Killed process 4242 (python3) total-vm:1000kB, anon-rss:800kB, "
        "file-rss:16kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:0",
        "6,3,7,c;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
        "task_memcg=/user.slice,task=a,pid=9,uid=0,pid=10,uid=0",
        "[ 12.5] oom-kill:constraint=CONSTRAINT_NONE,nodemask=0,2,cpuset=/,mems_allowed=0,task=old kernel,pid=11,uid=0",
        "3,4,8,-;Out of memory: Killed process 99 (other) total-vm:1kB, anon-rss:1kB, file-rss:1kB",
    ]
    k1, k2, k3 = parse_oom_kills(lines)
    assert (k1.pid, k1.task, k1.constraint, k1.anon_rss_bytes, k1.file_rss_bytes) == (
        4242, "python3", "CONSTRAINT_MEMCG", 800 * 1024, 16 * 1024)
    assert k1.oom_memcg == "/machine.slice/libpod-abc.scope" and k1.in_cgroup("libpod-abc.scope")
    assert not k1.in_cgroup("container-x") and not k1.in_cgroup("/") and not k1.in_cgroup("")
    assert (k2.pid, k2.task, k2.oom_memcg, k2.task_memcg) == (10, "a,pid=9,uid=0", None, "/user.slice")
    assert k2.anon_rss_bytes is None  # "Killed process 99" is another PID's
    assert (k3.pid, k3.task, k3.oom_memcg, k3.task_memcg, k3.constraint) == (11, "old kernel", None, None, "CONSTRAINT_NONE")
    assert message(" SUBSYSTEM=memory") is None and message("6,1,5,-;text") == "text" and message("text") == "text"


def test_an_unreadable_log_is_unknown(tmp_path: Path) -> None:
    assert read_kernel_log(tmp_path / "absent") is None
    assert oom_kills_in("x", tmp_path / "absent") is None
    (tmp_path / "empty").write_bytes(b"")
    assert read_kernel_log(tmp_path / "empty") == []


_NAME = st.text(st.characters(blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), min_size=1, max_size=20)
_PATH = st.lists(st.text("abcdef0123456789-._", min_size=1, max_size=12), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts))


@given(memcg=_PATH, task=_NAME, pid=st.integers(1, 2**22), uid=st.integers(0, 2**31))
def test_any_cgroup_path_and_task_name_round_trip(memcg: str, task: str, pid: int, uid: int) -> None:
    line = (f"6,100,200,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            f"oom_memcg={memcg},task_memcg={memcg},task={task},pid={pid},uid={uid}")
    (kill,) = parse_oom_kills([line])
    assert (kill.pid, kill.task, kill.oom_memcg, kill.task_memcg) == (pid, task, memcg, memcg)
    assert kill.in_cgroup(memcg.rsplit("/", 1)[1])


@given(st.lists(st.text(max_size=300), max_size=30))
def test_garbage_gives_no_kill_and_never_raises(lines: list[str]) -> None:
    kills = parse_oom_kills(lines)
    assert all(isinstance(k.pid, int) and k.pid >= 0 for k in kills)
    assert len(kills) <= sum("oom-kill:" in line for line in lines)


@given(st.binary(max_size=2000))
def test_any_bytes_in_the_log_file_read_as_lines(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("kmsg") / "log"
    path.write_bytes(data)
    lines = read_kernel_log(path)
    assert lines is not None
    parse_oom_kills(lines)
