"""The failed run's cause and the run's shared-memory facts: the one call the runner
makes (``after_run``), after it has described the failure and parsed the engine log.

This is the I/O edge of the package: it reads the processes still running and NVML's
per-process figures (injectable for tests) and hands them, with the run's own evidence,
to the pure rules."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from memgap.collect.nvml import NvmlUnavailable, read_gpus
from memgap.diagnose.base import Diagnosis
from memgap.diagnose.holders import (
    ENGINE_NAMES,
    Holder,
    Proc,
    group_holders,
    read_processes,
    with_gpu,
)
from memgap.diagnose.limits import oom_cause
from memgap.diagnose.maxlen import max_len_cause
from memgap.diagnose.refusal import refusal_cause
from memgap.diagnose.shm import container_shm, find_signature, shm_cause, shm_use


def gpu_processes(nvml: ModuleType | None = None) -> dict[int, int | None]:
    """pid -> GPU memory over every GPU NVML sees; empty where NVML cannot be used."""
    found = read_gpus(nvml)
    if isinstance(found, NvmlUnavailable):
        return {}
    out: dict[int, int | None] = {}
    for g in found:
        for pid, used in g.process_used_bytes.items():
            prev = out.get(pid, 0)
            out[pid] = None if used is None or prev is None else prev + used
    return out


def current_holders(*, exclude: Sequence[int], started_before_s: float | None, proc_root: Path = Path("/proc"),
                    nvml: ModuleType | None = None, read: Callable[[Path], list[Proc]] = read_processes,
                    ) -> tuple[list[Holder], list[Holder]]:
    """(host holders, GPU holders) of the processes running now that had started before
    ``started_before_s``: memgap's own subtree is left out."""
    procs = read(proc_root)
    host = group_holders(procs, exclude=exclude, started_before_s=started_before_s)
    gpu = gpu_processes(nvml)
    if not gpu:
        return host, []
    with_g = group_holders(with_gpu(procs, gpu), exclude=exclude, started_before_s=started_before_s)
    return host, [h for h in with_g if h.gpu_bytes]


def diagnose_failure(failure: str, *, engine: str, report: Mapping[str, Any], log_text: str,
                     cgroup_final: Mapping[str, Any] | None, env_info: Mapping[str, Any], exit_status: int | None,
                     holders: Callable[[], tuple[list[Holder], list[Holder]]]) -> list[Diagnosis]:
    """Every diagnosis of a failed run (pure but for ``holders``, asked only when the
    engine refused for want of memory)."""
    out: list[Diagnosis] = []
    if (d := max_len_cause(report, engine=_name(engine))) is not None:
        out.append(d)
    elif report.get("refusal"):
        host, gpu = holders()
        d = refusal_cause(report, host, engine=engine, gpu_holders=gpu)
        if d is not None:
            out.append(d)
    if (d := oom_cause(failure, report, cgroup_final, env_info, engine=_name(engine))) is not None:
        out.append(d)
    if (d := shm_cause(log_text, container_shm(env_info), exit_status=exit_status, engine=_name(engine))) is not None:
        out.append(d)
    return out


def _name(engine: str) -> str:
    return ENGINE_NAMES.get(engine, engine)


def after_run(failure: str | None, *, interrupted: bool, engine: str, report: Mapping[str, Any], log_text: str,
              cgroup_final: Mapping[str, Any] | None, env_info: Mapping[str, Any], series: Any,
              exit_status: int | None, created_at: str | None = None, proc_root: Path = Path("/proc"),
              nvml: ModuleType | None = None) -> tuple[str | None, dict[str, Any]]:
    """The failure with what memgap diagnosed appended, and the environment info with
    ``diagnoses`` (each as a dict) and, in a container, ``shm``: the /dev/shm it was
    given and the engine's shared memory (RssShmem and the cgroup's shmem, at peak).
    ``created_at`` (when the run began) is accepted for the callers' symmetry; the
    holders are read when this is called, moments after the refusal, whatever their
    start."""
    info = dict(env_info)
    setup = container_shm(info)
    if setup is not None:
        columns = getattr(series, "columns", None) or {}
        sig = find_signature(log_text)
        info["shm"] = {**setup.to_dict(), **shm_use(columns),
                       "engine_needed_bytes": sig.needed_bytes if sig is not None else None}
    if failure is None or interrupted:
        return failure, info
    # Everything still running held its memory when the engine was refused moments ago:
    # also a process that started while the engine loaded. The run's own engine is gone.
    def holders() -> tuple[list[Holder], list[Holder]]:
        return current_holders(exclude=[os.getpid()], started_before_s=None, proc_root=proc_root, nvml=nvml)

    try:
        found = diagnose_failure(failure, engine=engine, report=report, log_text=log_text, cgroup_final=cgroup_final,
                                 env_info=info, exit_status=exit_status, holders=holders)
    except Exception as e:  # noqa: BLE001 - a diagnosis must never cost the run its record
        info["diagnoses_error"] = f"{type(e).__name__}: {e}"
        return failure, info
    if not found:
        return failure, info
    info["diagnoses"] = [d.to_dict() for d in found]
    return failure.rstrip(".") + ". " + " ".join(d.text() for d in found), info
