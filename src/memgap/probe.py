"""``memgap probe``'s core: read the memory sources engines size their KV cache from,
here and now, and apply every engine's rule to them.

``gather`` is the thin I/O part (meminfo, this process's memory cgroup, NVML, and
``torch.cuda.mem_get_info`` when torch is installed); ``evaluate`` is pure: readings
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
from memgap.collect.nvml import GpuReading, NvmlUnavailable, read_gpus
from memgap.errors import MemgapError
from memgap.sizing import EngineCosts, KvBudget, MemoryReadings


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


@dataclass(frozen=True)
class Assumptions:
    weights_bytes: int
    weights_source: str
    activation_peak_bytes: int = 0
    non_torch_bytes: int = 0
    bytes_per_token: int | None = None
    n_ctx: int | None = None
    fractions: Sequence[float] = ()  # what-if fractions, applied to every rule


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
            },
            "scenarios": [s.to_dict() for s in self.scenarios],
            "notes": list(self.notes),
        }


def _gpu_dict(g: GpuReading) -> dict[str, Any]:
    d = asdict(g)
    d["process_used_bytes"] = {str(k): v for k, v in g.process_used_bytes.items()}
    return d


# --- I/O -----------------------------------------------------------------------------


def gather(proc_root: Path = Path("/proc"), *, use_nvml: bool = True, use_torch: bool = True) -> Measured:
    meminfo = read_meminfo(proc_root)
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
                    gpus_unavailable=gpus_unavailable, torch=torch_info, torch_unavailable=torch_why)


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
    if not m.gpus and not m.torch:
        notes.append("no GPU reading here (" + (m.gpus_unavailable or "none") + "); "
                     "only the unified-memory model applies")
    if a.weights_source == "assumed":
        notes.append("no --weights-bytes or --model: weights assumed 0 B")
    if not a.activation_peak_bytes and not a.non_torch_bytes:
        notes.append("activation peak and non-torch memory assumed 0 B (give --activation-bytes, "
                     "--non-torch-bytes from an engine log to refine)")
    return ProbeResult(measured=m, assumptions=a, scenarios=tuple(scenarios), notes=tuple(notes))


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
