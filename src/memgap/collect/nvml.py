"""GPU memory through NVML (``pynvml`` from the nvidia-ml-py package).

On unified-memory parts (GB10 / DGX Spark) ``nvmlDeviceGetMemoryInfo`` answers
NVML_ERROR_NOT_SUPPORTED while the per-process queries still work. That answer is a
reading in its own right ("this device has no separate memory"), so it is recorded
in ``not_supported`` rather than raised or turned into 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str | None
    uuid: str | None
    total_bytes: int | None
    used_bytes: int | None
    free_bytes: int | None
    # True: memory info is Not Supported (GB10-style) or the device addresses host
    # memory through ATS. False: separate device memory reported. None: cannot tell.
    unified_memory: bool | None
    not_supported: tuple[str, ...]  # queries that answered NVML "Not Supported"
    process_used_bytes: Mapping[int, int | None] = field(default_factory=dict)
    addressing_mode: str | None = None  # "none", "hmm", "ats" (driver 575+), else None
    errors: tuple[str, ...] = ()  # other failed queries, "query: message"


@dataclass(frozen=True)
class NvmlUnavailable:
    reason: str


def _load_pynvml() -> ModuleType:
    import pynvml

    return pynvml


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _DeviceQueries:
    """Runs one device's queries, sorting failures into not-supported and errors."""

    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        self.not_supported: list[str] = []
        self.errors: list[str] = []

    def ask(self, query: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except self.nvml.NVMLError as e:
            if getattr(e, "value", None) == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                self.not_supported.append(query)
            else:
                self.errors.append(f"{query}: {e}")
        except AttributeError as e:
            # An older nvidia-ml-py without this function: unknown, not an error of the GPU.
            self.errors.append(f"{query}: not in this pynvml ({e})")
        except Exception as e:  # never let one query take the whole reading down
            self.errors.append(f"{query}: {type(e).__name__}: {e}")
        return None


_ADDRESSING_MODES = {0: "none", 1: "hmm", 2: "ats"}


def _device_processes(nvml: ModuleType, handle: Any, q: _DeviceQueries) -> dict[int, int | None]:
    """pid -> GPU memory used on one device (None where the driver cannot say)."""
    processes: dict[int, int | None] = {}
    for query, fn_name in (
        ("compute_processes", "nvmlDeviceGetComputeRunningProcesses"),
        ("graphics_processes", "nvmlDeviceGetGraphicsRunningProcesses"),
    ):
        # ask() runs the lambda at once, so the loop variable cannot change under it.
        procs = q.ask(query, lambda: getattr(nvml, fn_name)(handle))  # noqa: B023
        for p in procs or []:
            used = getattr(p, "usedGpuMemory", None)
            previous = processes.get(p.pid)
            # A process with both a compute and a graphics context is listed twice
            # with its one total; take the larger, never the sum.
            if previous is None or (used is not None and used > previous):
                processes[p.pid] = used if used is not None else previous
    return processes


def _read_device(nvml: ModuleType, index: int) -> GpuReading:
    q = _DeviceQueries(nvml)
    handle = q.ask("handle", lambda: nvml.nvmlDeviceGetHandleByIndex(index))
    if handle is None:
        return GpuReading(
            index=index,
            name=None,
            uuid=None,
            total_bytes=None,
            used_bytes=None,
            free_bytes=None,
            unified_memory=None,
            not_supported=tuple(q.not_supported),
            errors=tuple(q.errors),
        )
    name = q.ask("name", lambda: _text(nvml.nvmlDeviceGetName(handle)))
    uuid = q.ask("uuid", lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
    mem = q.ask("memory_info", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    mode_value = q.ask("addressing_mode", lambda: nvml.nvmlDeviceGetAddressingMode(handle))
    addressing_mode = (
        None if mode_value is None else _ADDRESSING_MODES.get(int(mode_value), str(mode_value))
    )

    processes = _device_processes(nvml, handle, q)

    if "memory_info" in q.not_supported or addressing_mode == "ats":
        unified: bool | None = True
    elif mem is not None:
        # HMM alone says nothing: discrete GPUs with the open kernel modules report it.
        unified = False
    else:
        unified = None
    return GpuReading(
        index=index,
        name=name,
        uuid=uuid,
        total_bytes=None if mem is None else int(mem.total),
        used_bytes=None if mem is None else int(mem.used),
        free_bytes=None if mem is None else int(mem.free),
        unified_memory=unified,
        not_supported=tuple(q.not_supported),
        process_used_bytes=processes,
        addressing_mode=addressing_mode,
        errors=tuple(q.errors),
    )


def _init_failure(nvml: ModuleType, e: Exception) -> NvmlUnavailable:
    value = getattr(e, "value", None)
    if value == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
        return NvmlUnavailable("libnvidia-ml.so not found (no NVIDIA driver)")
    if value == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
        return NvmlUnavailable("NVIDIA driver not loaded")
    if value == getattr(nvml, "NVML_ERROR_NO_PERMISSION", object()):
        return NvmlUnavailable("no permission to open the NVIDIA device nodes")
    return NvmlUnavailable(f"nvmlInit failed: {type(e).__name__}: {e}")


def read_gpus(nvml: ModuleType | None = None) -> list[GpuReading] | NvmlUnavailable:
    """Every GPU's memory, or why none can be read. Never raises.

    ``nvml`` defaults to the real ``pynvml``; tests pass a stand-in module."""
    if nvml is None:
        try:
            nvml = _load_pynvml()
        except Exception as e:
            return NvmlUnavailable(f"pynvml (nvidia-ml-py) cannot be imported: {e}")
    try:
        nvml.nvmlInit()
    except Exception as e:
        return _init_failure(nvml, e)
    try:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as e:
            return NvmlUnavailable(f"nvmlDeviceGetCount failed: {e}")
        return [_read_device(nvml, i) for i in range(count)]
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass  # nothing to do about a failed shutdown; the readings stand


class NvmlProcessMemory:
    """pid -> GPU memory used, summed over every GPU (None where NVML cannot say), read
    again and again with NVML initialised once. ``read_gpus`` initialises, asks every
    query and shuts down each time: called by the sampler once a second it cost ~0.6% of
    a core on an H200 host (its 10 Hz cost went from 0.87% to 0.22% with this reader,
    benchmarks/sampler_cost.py). Calling it returns the mapping, or why NVML cannot be
    read; ``close`` shuts NVML down. Never raises."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nvml = nvml
        self._handles: list[Any] | None = None

    def _start(self) -> str | None:
        if self._nvml is None:
            try:
                self._nvml = _load_pynvml()
            except Exception as e:
                return f"pynvml (nvidia-ml-py) cannot be imported: {e}"
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except Exception as e:
            return _init_failure(nvml, e).reason
        try:
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(int(nvml.nvmlDeviceGetCount()))]
        except Exception as e:
            self.close(started=True)
            return f"NVML cannot list the GPUs: {e}"
        return None

    def __call__(self) -> Mapping[int, int | None] | str:
        if self._handles is None:
            why = self._start()
            if why is not None:
                return why
        assert self._nvml is not None and self._handles is not None
        out: dict[int, int | None] = {}
        for handle in self._handles:
            # A query that fails (not supported here, GPU gone) gives no processes.
            for pid, used in _device_processes(self._nvml, handle, _DeviceQueries(self._nvml)).items():
                prev = out.get(pid, 0)
                out[pid] = None if used is None or prev is None else prev + used
        return out

    def close(self, *, started: bool = False) -> None:
        if (self._handles is not None or started) and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - nothing to do about a failed shutdown
                pass
        self._handles = None
