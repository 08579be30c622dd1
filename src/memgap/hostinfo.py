"""Facts about the machine a run happened on, recorded with every run (STYLE.md, 6).

A run made on a Ray cluster (memgap.fleet) also carries ``name``: the node's host name in
the study (its ``memgap-host`` label, else its hostname), which compare and report group by;
``hostname`` stays what the kernel says."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memgap import __version__


def cpu_model(proc_root: Path = Path("/proc")) -> str | None:
    try:
        for line in (proc_root / "cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "CPU part"):
                return value.strip()
    except OSError:
        return None
    return None


def host_facts(proc_root: Path = Path("/proc")) -> dict[str, Any]:
    from memgap.collect.cgroup import memory_cgroup_of
    from memgap.collect.meminfo import read_meminfo

    uname = os.uname()
    try:
        mem_total = read_meminfo(proc_root).total_bytes
    except Exception:  # noqa: BLE001 - a fact we cannot read is None
        mem_total = None
    try:
        cg = memory_cgroup_of("self", proc_root)
    except Exception:  # noqa: BLE001
        cg = None
    return {
        "hostname": uname.nodename,
        "kernel": uname.release,
        "arch": uname.machine,
        "os": _os_release(),
        "cpu_model": cpu_model(proc_root),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_total_bytes": mem_total,
        "cgroup_version": cg.version if cg else None,
        "memgap_cgroup": cg.relpath if cg else None,
        "gpus": _gpus(),
        "gpu_driver": _gpu_driver(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "memgap_version": __version__,
    }


def host_name(record: Mapping[str, Any]) -> str | None:
    """The host a stored run ran on, as a study names it: the cluster's name for the node,
    else the hostname; None for a record without host facts (an imported one)."""
    host = record.get("host") or {}
    name = host.get("name") or host.get("hostname")
    return str(name) if name else None


def _gpu_driver() -> str | None:
    """The NVIDIA driver's version, or None without NVML (no driver, no GPU)."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: no version
        return None
    try:
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110
            pass


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        return None
    return None


def _gpus() -> Any:
    from memgap.collect.nvml import NvmlUnavailable, read_gpus

    try:
        r = read_gpus()
    except Exception as e:  # noqa: BLE001 - never fail a run over a GPU fact
        return {"unavailable": str(e)}
    if isinstance(r, NvmlUnavailable):
        return {"unavailable": r.reason}
    # not_supported says which NVML queries answered "Not Supported" (memory_info on GB10):
    # the ledger then reads the engine's GPU memory from the per-process figures.
    return [{"index": g.index, "name": g.name, "total_bytes": g.total_bytes, "unified_memory": g.unified_memory,
             "not_supported": list(g.not_supported), "addressing_mode": g.addressing_mode} for g in r]
