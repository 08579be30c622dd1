"""memgap.collect.cgroup over fake trees built from real kernel output."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FakeHost, fixture_text
from memgap.collect.cgroup import (
    MEMORY_FILES,
    CgroupRef,
    cgroup_counters,
    cgroup_pids,
    memory_cgroup_of,
    parse_flat_keyed,
    parse_memory_stat,
    parse_mountinfo_cgroups,
    parse_proc_cgroup,
    read_cgroup_memory,
    read_cgroup_peak_bytes,
    read_cgroup_usage_bytes,
)
from memgap.collect.errors import CollectorParseError

OUR_V1 = "/process_api/d728c4ddb5c7c0aece692e48b9a48996"
DOCKER_SCOPE = (
    "/system.slice/docker-2bb2c94b0c395fc8fdff9fa4ce364a3be0dd05792145ffc93ce8d665d06521f1.scope"
)
K8S = "/kubepods/burstable/pod9dcdb600-4156-4b7b-afcc-f8c06cb0e474/b92a703b826d4494978d810adf100d06c5ade2539b714d984ae3c8fef3449964"


# ---------------------------------------------------------------- /proc/PID/cgroup


def test_proc_cgroup_hybrid_host_lists_v1_controllers_and_the_v2_line():
    lines = parse_proc_cgroup(fixture_text("proc/v1host/cgroup"))
    assert len(lines) == 10
    memory = [ln for ln in lines if "memory" in ln.controllers]
    assert [(m.hierarchy_id, m.path) for m in memory] == [(4, OUR_V1)]
    assert lines[0].controllers == ("name=systemd",)
    assert lines[-1].hierarchy_id == 0 and lines[-1].controllers == () and lines[-1].path == "/"


def test_proc_cgroup_keeps_colons_and_comma_lists():
    lines = parse_proc_cgroup("4:cpu,cpuacct:/tenant.slice/job:blue/task\n")
    assert lines[0].controllers == ("cpu", "cpuacct")
    assert lines[0].path == "/tenant.slice/job:blue/task"


@pytest.mark.parametrize("bad, line", [("4:memory\n", 1), ("0::/\nx:memory:/a\n", 2)])
def test_proc_cgroup_malformed_line_names_file_and_line(bad, line):
    with pytest.raises(CollectorParseError) as e:
        parse_proc_cgroup(bad, "/proc/42/cgroup")
    assert f"/proc/42/cgroup:{line}" in str(e.value)
    assert e.value.line == line


# ---------------------------------------------------------------- mountinfo


def test_mountinfo_hybrid_host():
    mounts = parse_mountinfo_cgroups(fixture_text("proc/v1host/mountinfo"))
    by_point = {str(m.mount_point): m for m in mounts}
    assert len(mounts) == 10  # 9 v1 hierarchies + the controller-less cgroup2 mount
    assert by_point["/sys/fs/cgroup/memory"].version == 1
    assert by_point["/sys/fs/cgroup/memory"].controllers == ("memory",)
    assert by_point["/sys/fs/cgroup/systemd"].controllers == ("name=systemd",)
    assert by_point["/sys/fs/cgroup/unified"].version == 2
    assert "/sys/fs/cgroup" not in by_point  # the tmpfs holding them is not a cgroup mount


def test_mountinfo_k8s_v1_roots_are_the_pod_path_and_options_are_not_controllers():
    mounts = parse_mountinfo_cgroups(fixture_text("proc/v1k8s/mountinfo"))
    memory = next(m for m in mounts if "memory" in m.controllers)
    assert memory.root == K8S
    systemd = next(m for m in mounts if str(m.mount_point).endswith("systemd"))
    assert systemd.controllers == ("name=systemd",)  # "rw" and "xattr" are options
    cpu = next(m for m in mounts if "cpu" in m.controllers)
    assert cpu.controllers == ("cpu", "cpuacct")


def test_mountinfo_container_v2_only():
    mounts = parse_mountinfo_cgroups(fixture_text("proc/v2container/mountinfo"))
    assert [(m.version, str(m.mount_point), m.root) for m in mounts] == [(2, "/sys/fs/cgroup", "/")]


def test_mountinfo_unescapes_octal_in_paths():
    line = r"31 23 0:28 /docker/hidden /sys/fs/cgroup\040memory rw - cgroup2 cgroup rw" + "\n"
    (m,) = parse_mountinfo_cgroups(line)
    assert m.mount_point == Path("/sys/fs/cgroup memory")
    assert m.root == "/docker/hidden"


def test_mountinfo_without_separator_names_the_line():
    text = fixture_text("proc/v2container/mountinfo") + "this line has no separator at all\n"
    with pytest.raises(CollectorParseError, match=r"mountinfo:11"):
        parse_mountinfo_cgroups(text)


# ---------------------------------------------------------------- memory_cgroup_of


def test_hybrid_host_picks_the_v1_memory_hierarchy(host: FakeHost):
    host.add_process("v1host", pid=4242)
    host.cgroup_dir("unified").joinpath("cgroup.controllers").write_text("hugetlb\n")
    ref = memory_cgroup_of(4242, host.proc)
    assert ref == CgroupRef(
        version=1, path=host.sys / "sys/fs/cgroup/memory" / OUR_V1.lstrip("/"), relpath=OUR_V1
    )


def test_v2_host_docker_scope(host: FakeHost):
    host.add_process("v2host_docker")
    host.cgroup_dir("/").joinpath("cgroup.controllers").write_text(
        fixture_text("cgroup/v2_root_cgroup.controllers")
    )
    ref = memory_cgroup_of("self", host.proc)
    assert ref is not None and ref.version == 2
    assert ref.path == host.sys / "sys/fs/cgroup" / DOCKER_SCOPE.lstrip("/")
    assert ref.relpath == DOCKER_SCOPE


def test_v2_without_the_memory_controller_is_none(host: FakeHost):
    host.add_process("v2host_docker")
    host.cgroup_dir("/").joinpath("cgroup.controllers").write_text("cpuset cpu io pids\n")
    assert memory_cgroup_of("self", host.proc) is None


def test_container_in_its_own_cgroup_namespace_is_the_mount_point(host: FakeHost):
    host.add_process("v2container")
    host.cgroup_dir("/").joinpath("cgroup.controllers").write_text("cpu io memory pids\n")
    ref = memory_cgroup_of("self", host.proc)
    assert ref == CgroupRef(version=2, path=host.sys / "sys/fs/cgroup", relpath="/")


def test_k8s_v1_mount_root_equal_to_cgroup_path(host: FakeHost):
    host.add_process("v1k8s")
    ref = memory_cgroup_of("self", host.proc)
    assert ref == CgroupRef(version=1, path=host.sys / "sys/fs/cgroup/memory", relpath=K8S)


def test_cgroup_outside_the_mounted_subtree_is_none(host: FakeHost):
    d = host.add_process("v1k8s")
    # Seen across a cgroup namespace, a foreign process's path starts with "/..".
    (d / "cgroup").write_text("7:memory:/../../other-pod/abc\n")
    assert memory_cgroup_of("self", host.proc) is None


def test_deeper_bind_mount_of_the_same_hierarchy_wins(host: FakeHost):
    d = host.add_process("v1host")
    (d / "mountinfo").write_text(
        f"35 31 0:32 / {host.sys}/sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        f"90 31 0:32 /process_api {host.sys}/mnt/mem rw,relatime - cgroup cgroup rw,memory\n"
    )
    ref = memory_cgroup_of("self", host.proc)
    assert ref is not None and ref.path == host.sys / "mnt/mem" / OUR_V1.split("/")[-1]


def test_gone_process_is_none(host: FakeHost):
    assert memory_cgroup_of(99999, host.proc) is None


# ---------------------------------------------------------------- memory.stat and friends


def test_memory_stat_keeps_every_key_in_any_order():
    stat = parse_memory_stat(fixture_text("cgroup/v2/memory.stat"), "memory.stat")
    assert len(stat) == 51
    assert stat["anon"] == 860160 and stat["thp_collapse_alloc"] == 0
    shuffled = "\n".join(reversed(fixture_text("cgroup/v2/memory.stat").splitlines()))
    assert parse_memory_stat(shuffled, "memory.stat") == stat


@pytest.mark.parametrize(
    "bad", ["anon 12 kB\n", "anon\n", "anon twelve\n", "anon 1_000\n", "anon ١٢\n"]
)
def test_memory_stat_malformed_line_is_an_error_with_source_and_line(bad):
    with pytest.raises(CollectorParseError) as e:
        parse_memory_stat("file 4096\n" + bad, "/sys/fs/cgroup/x/memory.stat")
    assert str(e.value).startswith("/sys/fs/cgroup/x/memory.stat:2: ")


def test_flat_keyed_v1_oom_control():
    assert parse_flat_keyed(fixture_text("cgroup/v1/memory.oom_control"), "oom_control") == {
        "oom_kill_disable": 0,
        "under_oom": 0,
        "oom_kill": 0,
    }


def _v1_ref(host: FakeHost) -> CgroupRef:
    return CgroupRef(version=1, path=host.cgroup_dir("memory" + OUR_V1, "v1"), relpath=OUR_V1)


def _v2_ref(host: FakeHost) -> CgroupRef:
    return CgroupRef(version=2, path=host.cgroup_dir(DOCKER_SCOPE, "v2"), relpath=DOCKER_SCOPE)


def test_read_v1_uses_hierarchical_totals_and_kmem(host: FakeHost):
    ref = _v1_ref(host)
    # Make the subtree differ from the cgroup's own pages, as with a child cgroup.
    stat_file = ref.path / "memory.stat"
    stat_file.write_text(stat_file.read_text().replace("total_rss 1691648", "total_rss 7691648"))
    m = read_cgroup_memory(ref)
    assert m.version == 1
    assert m.usage_bytes == 3100672
    assert m.peak_bytes == 3883008
    assert m.limit_bytes is None  # 9223372036854771712: LONG_MAX page-rounded
    assert m.anon_bytes == 7691648
    assert m.file_bytes == 278528
    assert m.shmem_bytes == 0
    assert m.file_mapped_bytes == 45056
    assert m.kernel_bytes == 1015808
    assert m.inactive_file_bytes == 45056 and m.active_file_bytes == 233472
    assert m.swap_bytes == 0
    assert (m.failcnt, m.oom_kill_count, m.under_oom, m.oom_events) == (0, 0, False, None)
    assert m.high_bytes is None
    assert m.events == {}
    assert m.working_set_bytes == 3100672 - 45056
    assert m.stat["pgfault"] == 28798


def test_read_v1_without_totals_falls_back_to_own_keys(host: FakeHost):
    ref = _v1_ref(host)
    own = [
        ln
        for ln in (ref.path / "memory.stat").read_text().splitlines()
        if not ln.startswith("total_")
    ]
    (ref.path / "memory.stat").write_text("\n".join(own) + "\n")
    (ref.path / "memory.limit_in_bytes").write_text("536870912\n")
    (ref.path / "memory.kmem.usage_in_bytes").unlink()
    m = read_cgroup_memory(ref)
    assert m.anon_bytes == 1691648
    assert m.limit_bytes == 536870912
    assert m.kernel_bytes is None


def test_read_v2(host: FakeHost):
    m = read_cgroup_memory(_v2_ref(host))
    assert m.version == 2
    assert (m.usage_bytes, m.peak_bytes, m.limit_bytes, m.high_bytes, m.swap_bytes) == (
        139350016,
        339906560,
        None,
        None,
        0,
    )
    assert (m.anon_bytes, m.file_bytes, m.shmem_bytes, m.file_mapped_bytes, m.kernel_bytes) == (
        860160,
        129146880,
        0,
        0,
        9211904,
    )
    assert m.working_set_bytes == 139350016 - 51507200
    assert m.events["oom_group_kill"] == 0
    assert (m.failcnt, m.oom_events, m.oom_kill_count, m.under_oom) == (0, 0, 0, None)


def test_read_v2_before_5_19_has_no_peak_and_a_set_limit(host: FakeHost):
    ref = _v2_ref(host)
    (ref.path / "memory.peak").unlink()
    (ref.path / "memory.max").write_text("8589934592\n")
    (ref.path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 1\n")
    m = read_cgroup_memory(ref)
    assert m.peak_bytes is None
    assert read_cgroup_peak_bytes(ref) is None
    assert m.limit_bytes == 8589934592
    assert (m.failcnt, m.oom_events, m.oom_kill_count) == (12, 3, 1)


def test_usage_and_peak_single_reads(host: FakeHost):
    assert read_cgroup_usage_bytes(_v1_ref(host)) == 3100672
    assert read_cgroup_peak_bytes(_v1_ref(host)) == 3883008
    assert read_cgroup_usage_bytes(_v2_ref(host)) == 139350016
    assert read_cgroup_peak_bytes(_v2_ref(host)) == 339906560


def test_removed_cgroup_reads_as_unknown_not_zero(tmp_path: Path):
    ref = CgroupRef(version=2, path=tmp_path / "gone", relpath="/gone")
    m = read_cgroup_memory(ref)
    assert m.usage_bytes is None and m.anon_bytes is None and m.working_set_bytes is None
    assert m.stat == {} and m.events == {}
    assert read_cgroup_usage_bytes(ref) is None
    assert cgroup_pids(ref) == []


def test_counters_keep_a_containers_oom_evidence(host: FakeHost):
    ref = _v1_ref(host)
    (ref.path / "memory.usage_in_bytes").write_text("25587712\n")
    (ref.path / "memory.max_usage_in_bytes").write_text("104857600\n")
    (ref.path / "memory.limit_in_bytes").write_text("104857600\n")
    (ref.path / "memory.failcnt").write_text("12\n")
    (ref.path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    c = cgroup_counters(ref)
    assert c == {"usage_bytes": 25587712, "peak_bytes": 104857600, "limit_bytes": 104857600, "failcnt": 12,
                 "oom_events": None, "oom_kill_count": 1, "under_oom": False, "events": {}}


def test_counters_v2_carry_memory_events(host: FakeHost):
    ref = _v2_ref(host)
    (ref.path / "memory.max").write_text("8589934592\n")
    (ref.path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 1\n")
    c = cgroup_counters(ref)
    assert c is not None
    assert (c["usage_bytes"], c["peak_bytes"], c["limit_bytes"]) == (139350016, 339906560, 8589934592)
    assert (c["failcnt"], c["oom_events"], c["oom_kill_count"], c["under_oom"]) == (12, 3, 1, None)
    assert c["events"]["oom"] == 3


def test_counters_of_no_gone_or_half_removed_cgroup_are_none(host: FakeHost, tmp_path: Path):
    assert cgroup_counters(None) is None
    assert cgroup_counters(CgroupRef(version=1, path=tmp_path / "gone", relpath="/x")) is None
    ref = _v2_ref(host)
    (ref.path / "memory.current").unlink()  # the files go before the folder does
    assert cgroup_counters(ref) is None


def test_memory_files_name_each_versions_files_and_keys():
    v1, v2 = MEMORY_FILES[1], MEMORY_FILES[2]
    assert (v1.usage, v1.peak, v1.limit, v1.oom) == (
        "memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.limit_in_bytes", "memory.oom_control")
    assert (v2.usage, v2.peak, v2.limit, v2.oom) == ("memory.current", "memory.peak", "memory.max", "memory.events")
    stat1 = {"rss": 1, "total_rss": 5, "cache": 2, "mapped_file": 3}
    assert (v1.stat_value(stat1, v1.anon), v1.stat_value(stat1, v1.file), v1.stat_value(stat1, v1.file_mapped)) == (5, 2, 3)
    assert v1.stat_kernel(stat1) is None  # v1's kernel memory is memory.kmem.usage_in_bytes
    assert v2.stat_kernel({"kernel": 7, "slab": 3}) == 7
    assert v2.stat_kernel({"kernel_stack": 1, "pagetables": 2, "slab": 3}) == 6  # before Linux 5.18
    assert v2.stat_kernel({"anon": 1}) is None


def test_cgroup_pids(host: FakeHost):
    ref = _v2_ref(host)
    (ref.path / "cgroup.procs").write_text("12813\n12814\n15924\n")
    assert cgroup_pids(ref) == [12813, 12814, 15924]


def test_malformed_stat_in_a_tree_names_the_file(host: FakeHost):
    ref = _v2_ref(host)
    (ref.path / "memory.stat").write_text("anon 1\nfile 2 3\n")
    with pytest.raises(CollectorParseError, match=r"memory\.stat:2"):
        read_cgroup_memory(ref)
