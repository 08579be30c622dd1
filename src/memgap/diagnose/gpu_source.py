"""Case 7: on unified-memory machines a container's memory limit does not bound GPU
allocations (Jetson, GB10, AMD APUs through GTT): the driver's allocations are not
charged to the process's memory cgroup, and NVML's device-wide memory info answers
"Not Supported" (``nvmlDeviceGetMemoryInfo``; ``nvidia-smi`` prints it). NVML's
per-process figures (``nvmlDeviceGetComputeRunningProcesses`` /
``GraphicsRunningProcesses``, ``usedGpuMemory``) still work, and they are what fills
the ledger's "GPU memory invisible to the cgroup". This module says which source a run
used, from its host facts (memgap.hostinfo) and its samples. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memgap.diagnose.base import GPU_OUTSIDE_CGROUP, Diagnosis, gib

PER_PROCESS = "NVML per-process used memory (nvmlDeviceGetComputeRunningProcesses/GraphicsRunningProcesses)"
DEVICE_WIDE = "NVML device-wide memory info (nvmlDeviceGetMemoryInfo)"


def _gpus(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    g = (record.get("host") or {}).get("gpus")
    return [x for x in g if isinstance(x, Mapping)] if isinstance(g, list) else []


def gpu_memory_source(record: Mapping[str, Any], gpu_process_bytes: int | None) -> Diagnosis | None:
    """Which NVML reading gave the run's GPU memory and why; None without a GPU."""
    gpus = _gpus(record)
    if not gpus:
        return None
    unsupported = [g for g in gpus if "memory_info" in (g.get("not_supported") or ())]
    names = ", ".join(f"GPU {g.get('index')} ({g.get('name')})" for g in (unsupported or gpus))
    numbers = {"gpu_process_used_bytes": gpu_process_bytes, "devices": [dict(g) for g in gpus],
               "device_wide_unsupported": [g.get("index") for g in unsupported]}
    unified = [g for g in gpus if g.get("unified_memory")]
    if unsupported:
        if gpu_process_bytes is None:
            sentence = (f"{names}: device-wide memory info is Not Supported and no NVML per-process reading was "
                        "taken: GPU memory invisible to the cgroup was not measured.")
        else:
            sentence = (f"GPU memory invisible to the cgroup ({gib(gpu_process_bytes)}) comes from {PER_PROCESS}, "
                        f"summed over the engine's processes: {DEVICE_WIDE} answered Not Supported on {names} "
                        "(unified memory: these allocations are host memory the cgroup is not charged for, and "
                        "no container memory limit bounds them).")
        return Diagnosis(7, GPU_OUTSIDE_CGROUP, sentence, numbers)
    if unified:
        source = PER_PROCESS if gpu_process_bytes is not None else "no NVML per-process reading"
        return Diagnosis(7, GPU_OUTSIDE_CGROUP, f"{names} shares host memory (addressing mode ATS): GPU memory "
                         f"invisible to the cgroup from {source}.", numbers)
    return Diagnosis(7, GPU_OUTSIDE_CGROUP, f"{names} has memory of its own ({DEVICE_WIDE} answers): the engine's "
                     f"GPU memory ({gib(gpu_process_bytes)}, {PER_PROCESS}) is device memory, listed beside the "
                     "ledger, not host memory outside the cgroup.", numbers)


def devices_without_memory_info(gpus: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [g for g in gpus if "memory_info" in (g.get("not_supported") or ())]
