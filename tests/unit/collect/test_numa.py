"""NUMA node meminfo and the cgroup limit at /sys/fs/cgroup, on fake sysfs trees built
from this machine's real files (tests/fixtures/sys/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.collect.errors import CollectorParseError
from memgap.collect.numa import (
    first_cpu_node,
    parse_node_meminfo,
    read_node_memory,
    read_visible_limit,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sys"
NODE0 = (FIXTURES / "node0-meminfo.txt").read_text()


def kb(key: str, text: str = NODE0) -> int:
    line = next(ln for ln in text.splitlines() if ln.split()[2] == f"{key}:")
    return int(line.split()[3]) * 1024


def sys_tree(tmp_path: Path, *, node_meminfo: str | None = NODE0, v1_limit: str | None = None,
             v1_usage: str | None = None, v2_max: str | None = None, v2_current: str | None = None) -> Path:
    root = tmp_path / "sys"
    (root / "devices/system/cpu/cpu0/node0").mkdir(parents=True)  # a link to ../../node/node0 on Linux
    if node_meminfo is not None:
        (root / "devices/system/node/node0").mkdir(parents=True)
        (root / "devices/system/node/node0/meminfo").write_text(node_meminfo)
    cg = root / "fs/cgroup"
    cg.mkdir(parents=True)
    if v1_limit is not None:
        (cg / "memory").mkdir()
        (cg / "memory/memory.limit_in_bytes").write_text(v1_limit)
        if v1_usage is not None:
            (cg / "memory/memory.usage_in_bytes").write_text(v1_usage)
    if v2_max is not None:
        (cg / "memory.max").write_text(v2_max)
        if v2_current is not None:
            (cg / "memory.current").write_text(v2_current)
    return root


def test_node_meminfo_is_read_as_vllm_adds_it_up() -> None:
    n = parse_node_meminfo(NODE0)
    assert n.node == 0
    assert n.total_bytes == kb("MemTotal") and n.free_bytes == kb("MemFree")
    # vLLM's "available": free + file pages + reclaimable slab, not the kernel's MemAvailable
    assert n.available_bytes == kb("MemFree") + kb("Active(file)") + kb("Inactive(file)") + kb("SReclaimable")
    assert n.raw["HugePages_Total"] == 0  # a count, not kB


def test_node_meminfo_errors_name_the_line() -> None:
    with pytest.raises(CollectorParseError, match=":2: expected 'Node N Key"):
        parse_node_meminfo("Node 0 MemTotal: 1 kB\nMemFree: 2 kB\n")
    with pytest.raises(CollectorParseError, match="SReclaimable"):
        parse_node_meminfo("\n".join(ln for ln in NODE0.splitlines() if "SReclaimable" not in ln))
    with pytest.raises(CollectorParseError, match="node 1 in the file of node 0"):
        parse_node_meminfo(NODE0 + "Node 1 MemFree: 3 kB\n")


def test_first_cpu_node_and_the_proc_meminfo_fallback(tmp_path: Path) -> None:
    root = sys_tree(tmp_path, node_meminfo=None)
    assert first_cpu_node(root, cpu=0) == 0
    assert first_cpu_node(root, cpu=7) is None
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 24684092 kB\nMemFree: 17709676 kB\nMemAvailable: 22551928 kB\n")
    n = read_node_memory(0, root, proc)  # no per-node file: psutil.virtual_memory()'s figures
    assert n.node is None and n.total_bytes == 24684092 * 1024 and n.available_bytes == 22551928 * 1024
    assert read_node_memory(0, sys_tree(tmp_path / "b")).total_bytes == kb("MemTotal")


def test_the_host_root_cgroup_is_no_limit(tmp_path: Path) -> None:
    host = (FIXTURES / "v1-root-memory.limit_in_bytes").read_text()
    lim = read_visible_limit(sys_tree(tmp_path, v1_limit=host, v1_usage="397111296\n"))
    assert lim.limit_bytes is None and lim.usage_bytes is None  # PAGE_COUNTER_MAX, as vLLM reads it
    assert read_visible_limit(sys_tree(tmp_path / "none")).source is None


def test_a_containers_own_cgroup_is_its_limit(tmp_path: Path) -> None:
    lim = read_visible_limit(sys_tree(
        tmp_path, v1_limit=(FIXTURES / "docker-v1-memory-3g.limit_in_bytes").read_text(),
        v1_usage=(FIXTURES / "docker-v1-memory-3g.usage_in_bytes").read_text()))
    assert lim.limit_bytes == 3 << 30 and lim.usage_bytes == 1171456
    assert lim.source is not None and lim.source.endswith("memory/memory.limit_in_bytes")


def test_v2_first_and_max_falls_through_to_v1(tmp_path: Path) -> None:
    v2 = read_visible_limit(sys_tree(tmp_path, v2_max="3221225472\n", v2_current="5000\n", v1_limit="1\n"))
    assert (v2.limit_bytes, v2.usage_bytes) == (3 << 30, 5000)
    unlimited = read_visible_limit(sys_tree(tmp_path / "b", v2_max="max\n"))
    assert unlimited.limit_bytes is None
    with pytest.raises(CollectorParseError, match="memory.max"):
        read_visible_limit(sys_tree(tmp_path / "c", v2_max="lots\n"))
