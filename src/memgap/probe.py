"""``memgap probe``'s core: read the memory sources engines size their KV cache from,
here and now, and apply every engine's rule to them.

``gather`` is the thin I/O part (meminfo, this process's memory cgroup, NVML,
``torch.cuda.mem_get_info`` when torch is installed, and for vLLM on a CPU the NUMA
node's meminfo and the cgroup limit at /sys/fs/cgroup); ``evaluate`` is pure: readings
and assumptions in, one budget per scenario and rule out. Every figure says whether it
was measured here or assumed."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memgap import sizing
from memgap.collect.cgroup import CgroupMemory, memory_cgroup_of, read_cgroup_memory
from memgap.collect.meminfo import MemInfo, read_meminfo
from memgap.collect.numa import (
    NodeMemory,
    VisibleLimit,
    first_cpu_node,
    read_node_memory,
    read_visible_limit,
)
from memgap.collect.nvml import GpuReading, NvmlUnavailable, read_gpus
from memgap.errors import MemgapError
from memgap.sizing import CpuEngineCosts, CpuNodeReadings, EngineCosts, KvBudget, MemoryReadings
from memgap.spec import VLLM_CPU_DEFAULT_UTILIZATION

# Where vLLM's CPU worker runs and whether it sees the limit of the cgroup it runs in.
# docker/podman: runc mounts the container's own cgroup at /sys/fs/cgroup (v1), or a
# cgroup namespace does (v2). native and memgap's sandbox: /sys/fs/cgroup is the host's
# root, so the engine reads what this process reads there, whatever cgroup it runs in.
CPU_ENVIRONMENTS = ("native", "sandbox", "docker", "podman")


@dataclass(frozen=True)
class Measured:
    """Everything read from the machine, at ``read_at`` (Unix time)."""

    read_at: float
    meminfo: MemInfo
    cgroup_path: str | None
    cgroup: CgroupMemory | None
    gpus: tuple[GpuReading, ...]
    gpus_unavailable: str | None
    torch: tuple[tuple[int, int], ...] | None  # (free, total) per device, or None
    torch_unavailable: str | None
    cpu_node: NodeMemory | None = None  # the NUMA node vLLM's CPU worker would size from
    visible_limit: VisibleLimit | None = None  # the cgroup limit at /sys/fs/cgroup, as an engine started here reads it
    cpu_unavailable: str | None = "not read"


@dataclass(frozen=True)
class VllmCpuAssumptions:
    """How a vLLM start on this CPU would be made: where, under which limit, with which
    KV size or utilizations, and the engine's own memory (estimates, with their source)."""

    env: str = "native"
    memory_limit_bytes: int | None = None  # the sandbox's --memory-limit or a container's --memory
    kv_cache_memory_bytes: int | None = None  # an explicit size; None: the automatic rule
    utilizations: Sequence[float] = (VLLM_CPU_DEFAULT_UTILIZATION, 0.92)  # memgap's CPU default, vLLM's
    costs: CpuEngineCosts = CpuEngineCosts()
    block_size: int = sizing.VLLM_CPU_BLOCK_SIZE
    max_model_len: int | None = None  # a start whose cache cannot hold one such request is refused


@dataclass(frozen=True)
class Assumptions:
    weights_bytes: int
    weights_source: str
    activation_peak_bytes: int = 0
    non_torch_bytes: int = 0
    bytes_per_token: int | None = None
    n_ctx: int | None = None
    fractions: Sequence[float] = ()  # what-if fractions, applied to every rule
    vllm_cpu: VllmCpuAssumptions = VllmCpuAssumptions()


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    measured: bool  # False: a what-if derived from measured figures
    readings: MemoryReadings
    budgets: tuple[KvBudget, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "measured": self.measured,
            "readings": asdict(self.readings),
            "budgets": [b.to_dict() for b in self.budgets],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ProbeResult:
    measured: Measured
    assumptions: Assumptions
    scenarios: tuple[Scenario, ...]
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        m = self.measured
        mi = {k: v for k, v in asdict(m.meminfo).items() if k != "raw"}
        cg = None
        if m.cgroup is not None:
            cg = {k: v for k, v in asdict(m.cgroup).items() if k not in ("stat", "events")}
            cg["path"] = m.cgroup_path
        return {
            "measured": {
                "read_at": m.read_at,
                "meminfo": mi,
                "cgroup": cg,
                "gpus": [_gpu_dict(g) for g in m.gpus],
                "gpus_unavailable": m.gpus_unavailable,
                "torch_mem_get_info": [{"free_bytes": f, "total_bytes": t} for f, t in m.torch] if m.torch else None,
                "torch_unavailable": m.torch_unavailable,
                "cpu_node": None if m.cpu_node is None else {
                    k: v for k, v in asdict(m.cpu_node).items() if k != "raw"},
                "visible_cgroup_limit": None if m.visible_limit is None else asdict(m.visible_limit),
                "cpu_unavailable": m.cpu_unavailable,
            },
            "assumed": {
                "weights_bytes": self.assumptions.weights_bytes,
                "weights_source": self.assumptions.weights_source,
                "activation_peak_bytes": self.assumptions.activation_peak_bytes,
                "non_torch_bytes": self.assumptions.non_torch_bytes,
                "bytes_per_token": self.assumptions.bytes_per_token,
                "n_ctx": self.assumptions.n_ctx,
                "default_fractions": dict(sizing.DEFAULT_FRACTIONS),
                "what_if_fractions": list(self.assumptions.fractions),
                "vllm_cpu": _vllm_cpu_dict(self.assumptions.vllm_cpu),
            },
            "scenarios": [s.to_dict() for s in self.scenarios],
            "notes": list(self.notes),
        }


def _vllm_cpu_dict(v: VllmCpuAssumptions) -> dict[str, Any]:
    d = asdict(v)
    d["utilizations"] = list(v.utilizations)
    return d


def _gpu_dict(g: GpuReading) -> dict[str, Any]:
    d = asdict(g)
    d["process_used_bytes"] = {str(k): v for k, v in g.process_used_bytes.items()}
    return d


# --- I/O -----------------------------------------------------------------------------


def gather(proc_root: Path = Path("/proc"), *, use_nvml: bool = True, use_torch: bool = True,
           sys_root: Path = Path("/sys"), numa_node: int | None = None) -> Measured:
    meminfo = read_meminfo(proc_root)
    cpu_node: NodeMemory | None = None
    visible: VisibleLimit | None = None
    cpu_why: str | None = None
    try:
        node = numa_node if numa_node is not None else (first_cpu_node(sys_root) or 0)
        cpu_node = read_node_memory(node, sys_root, proc_root)
        visible = read_visible_limit(sys_root)
    except (OSError, MemgapError) as e:
        cpu_why = f"node memory or cgroup limit unreadable: {e}"
    read_at = time.time()
    cgroup_path: str | None = None
    cgroup: CgroupMemory | None = None
    try:
        ref = memory_cgroup_of("self", proc_root)
        if ref is not None:
            cgroup_path, cgroup = str(ref.path), read_cgroup_memory(ref)
    except (OSError, MemgapError):
        # A cgroup that cannot be read is a missing reading, not a failed probe.
        cgroup = None
    gpus: tuple[GpuReading, ...] = ()
    gpus_unavailable: str | None = "not asked (--no-nvml)"
    if use_nvml:
        found = read_gpus()
        if isinstance(found, NvmlUnavailable):
            gpus_unavailable = found.reason
        else:
            gpus, gpus_unavailable = tuple(found), None if found else "NVML found no GPU"
    torch_info, torch_why = _torch_mem_get_info() if use_torch else (None, "not asked (--no-torch)")
    return Measured(read_at=read_at, meminfo=meminfo, cgroup_path=cgroup_path, cgroup=cgroup, gpus=gpus,
                    gpus_unavailable=gpus_unavailable, torch=torch_info, torch_unavailable=torch_why,
                    cpu_node=cpu_node, visible_limit=visible, cpu_unavailable=cpu_why)


def _torch_mem_get_info() -> tuple[tuple[tuple[int, int], ...] | None, str | None]:
    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed"
    try:
        import torch

        if not torch.cuda.is_available():
            return None, "torch.cuda is not available"
        infos = (torch.cuda.mem_get_info(i) for i in range(torch.cuda.device_count()))
        return tuple((int(free), int(total)) for free, total in infos), None
    except Exception as e:  # noqa: BLE001 - a broken CUDA install is a reading, not a crash
        return None, f"torch.cuda.mem_get_info failed: {type(e).__name__}: {e}"


# --- pure ----------------------------------------------------------------------------


def droppable_page_cache(mi: MemInfo) -> int | None:
    """Page cache ``echo 3 > /proc/sys/vm/drop_caches`` would free: clean cache that is
    neither tmpfs/shmem nor mapped by a process (an approximation: dirty pages are
    written back first, and mapped ones stay)."""
    if mi.cached_bytes is None:
        return None
    keep = (mi.shmem_bytes or 0) + (mi.mapped_bytes or 0)
    return max(mi.cached_bytes - keep, 0) + (mi.buffers_bytes or 0)


def _budgets(r: MemoryReadings, a: Assumptions) -> tuple[KvBudget, ...]:
    costs = EngineCosts(weights_bytes=a.weights_bytes, activation_peak_bytes=a.activation_peak_bytes,
                        non_torch_bytes=a.non_torch_bytes)
    out: list[KvBudget] = []
    for rule in sizing.RULES:
        out.append(sizing.apply_rule(rule, r, costs, bytes_per_token=a.bytes_per_token))
        for f in a.fractions:
            out.append(sizing.apply_rule(rule, r, costs, fraction=f, bytes_per_token=a.bytes_per_token))
    if a.n_ctx and a.bytes_per_token:
        out.append(sizing.llamacpp(r, costs, n_ctx=a.n_ctx, bytes_per_token=a.bytes_per_token, fit=True))
    return tuple(out)


def evaluate(m: Measured, a: Assumptions) -> ProbeResult:
    mi = m.meminfo
    notes: list[str] = []
    scenarios: list[Scenario] = []
    if mi.total_bytes is None or mi.free_bytes is None:
        notes.append("/proc/meminfo lacks MemTotal or MemFree: no unified-memory scenario")
    else:
        unified_gpu = any(g.unified_memory for g in m.gpus)
        host = MemoryReadings(total_bytes=mi.total_bytes, free_bytes=mi.free_bytes,
                              available_bytes=mi.available_bytes, unified=True,
                              source="/proc/meminfo (MemTotal, MemFree, MemAvailable)")
        desc = ("unified memory (this GPU shares host memory): cudaMemGetInfo ~ MemTotal/MemFree"
                if unified_gpu else
                "unified memory, modelled by this host's counters: cudaMemGetInfo ~ MemTotal/MemFree")
        scenarios.append(Scenario("unified", desc, True, host, _budgets(host, a), _cgroup_notes(m, host, a)))
        drop = droppable_page_cache(mi)
        if drop:
            dropped = MemoryReadings(total_bytes=mi.total_bytes, free_bytes=mi.free_bytes + drop,
                                     available_bytes=mi.available_bytes, unified=True,
                                     source="MemFree + droppable page cache (what-if)")
            scenarios.append(Scenario(
                "unified-page-cache-dropped",
                f"what-if: page cache dropped first (+{drop} B free; Cached - Shmem - Mapped + Buffers)",
                False, dropped, _budgets(dropped, a)))
    for g in m.gpus:
        if g.total_bytes is None or g.free_bytes is None:
            if g.unified_memory:
                notes.append(f"GPU {g.index} ({g.name}): memory info not supported by NVML (unified memory); "
                             "the unified scenario applies")
            continue
        r = MemoryReadings(total_bytes=g.total_bytes, free_bytes=g.free_bytes, unified=False,
                           source=f"NVML GPU {g.index}")
        scenarios.append(Scenario(f"gpu{g.index}", f"discrete GPU {g.index} ({g.name}), NVML", True,
                                  r, _budgets(r, a)))
    for i, (free, total) in enumerate(m.torch or ()):
        r = MemoryReadings(total_bytes=total, free_bytes=free, unified=False,
                           source=f"torch.cuda.mem_get_info({i})")
        scenarios.append(Scenario(f"torch{i}", f"device {i} as the engines read it (torch.cuda.mem_get_info)",
                                  True, r, _budgets(r, a)))
    cpu = vllm_cpu_scenario(m, a)
    if cpu is not None:
        scenarios.append(cpu)
    elif m.cpu_unavailable:
        notes.append(f"no vLLM CPU prediction: {m.cpu_unavailable}")
    if not m.gpus and not m.torch:
        notes.append("no GPU reading here (" + (m.gpus_unavailable or "none") + "); "
                     "only the unified-memory model" + (" and vLLM's CPU rule apply" if cpu else " applies"))
    if a.weights_source == "assumed":
        notes.append("no --weights-bytes or --model: weights assumed 0 B")
    if not a.activation_peak_bytes and not a.non_torch_bytes:
        notes.append("activation peak and non-torch memory assumed 0 B (give --activation-bytes, "
                     "--non-torch-bytes from an engine log to refine)")
    return ProbeResult(measured=m, assumptions=a, scenarios=tuple(scenarios), notes=tuple(notes))


def cpu_readings(m: Measured, v: VllmCpuAssumptions) -> CpuNodeReadings | None:
    """The readings a vLLM CPU worker started in ``v.env`` would take, from this
    machine's: the node is the same everywhere (a container sees the host's /sys/devices);
    the cgroup limit it reads depends on where it runs (CPU_ENVIRONMENTS)."""
    if m.cpu_node is None:
        return None
    here = m.visible_limit or VisibleLimit(None, None, None)
    own = m.cgroup.limit_bytes if m.cgroup is not None else None
    visible: int | None = here.limit_bytes
    usage: int | None = here.usage_bytes
    enforced: int | None = v.memory_limit_bytes
    if v.env in ("docker", "podman"):
        # A fresh container's own cgroup: the limit it is given, nothing charged yet.
        visible, usage = v.memory_limit_bytes, 0
    elif v.env == "native":
        # This process's own cgroup limit binds the engine too, but it may be invisible.
        enforced = own if own is not None and own != here.limit_bytes else None
    return CpuNodeReadings(node=m.cpu_node.node, total_bytes=m.cpu_node.total_bytes,
                           available_bytes=m.cpu_node.available_bytes, visible_limit_bytes=visible,
                           visible_usage_bytes=usage, enforced_limit_bytes=enforced, source=m.cpu_node.source)


def vllm_cpu_scenario(m: Measured, a: Assumptions) -> Scenario | None:
    v = a.vllm_cpu
    r = cpu_readings(m, v)
    if r is None:
        return None
    budgets: list[KvBudget] = []
    if v.kv_cache_memory_bytes is not None:
        budgets.append(sizing.vllm_cpu(r, v.costs, kv_cache_memory_bytes=v.kv_cache_memory_bytes,
                                       bytes_per_token=a.bytes_per_token, block_size=v.block_size,
                                       max_model_len=v.max_model_len))
    for f in dict.fromkeys((*v.utilizations, *a.fractions)):
        budgets.append(sizing.vllm_cpu(r, v.costs, utilization=f, bytes_per_token=a.bytes_per_token,
                                       block_size=v.block_size, max_model_len=v.max_model_len))
    limit = "no cgroup limit visible to it" if r.visible_limit_bytes is None else \
        f"sees the cgroup limit {r.visible_limit_bytes} B"
    notes = [f"worker RSS {v.costs.worker_rss_bytes} B and engine {v.costs.engine_bytes} B: {v.costs.source}"]
    if v.env == "sandbox" and v.memory_limit_bytes is not None:
        notes.append("memgap's sandbox has no cgroup namespace: the engine reads the host's root cgroup at "
                     "/sys/fs/cgroup, not the sandbox's limit")
    assert m.cpu_node is not None  # cpu_readings answered
    readings = MemoryReadings(total_bytes=r.total_bytes, free_bytes=m.cpu_node.free_bytes,
                              available_bytes=r.available_bytes, unified=False, source=r.source)
    return Scenario("vllm-cpu", f"vLLM on this CPU ({v.env}; {limit}), NUMA node {r.node}", True, readings,
                    tuple(budgets), tuple(notes))


def _cgroup_notes(m: Measured, r: MemoryReadings, a: Assumptions) -> tuple[str, ...]:
    cg = m.cgroup
    if cg is None:
        return ("this process's memory cgroup could not be read",)
    if cg.limit_bytes is None:
        return ("memory cgroup has no limit; cgroups do not enter any engine's KV formula",)
    room = cg.limit_bytes - (cg.usage_bytes or 0)
    notes = [f"memory cgroup limit {cg.limit_bytes} B, {room} B left; no engine reads it when sizing KV"]
    if room < r.free_bytes:
        notes.append("the cgroup leaves less room than the free memory the rules size from: host-side "
                     "allocations beyond it would hit the cgroup's OOM killer")
    return tuple(notes)


def budget_rows(result: ProbeResult) -> list[Mapping[str, Any]]:
    """Flat rows for printing: scenario, rule, fraction, budget, tokens, source."""
    rows: list[Mapping[str, Any]] = []
    for s in result.scenarios:
        for b in s.budgets:
            rows.append({"scenario": s.name, "measured": s.measured, **b.to_dict()})
    return rows
