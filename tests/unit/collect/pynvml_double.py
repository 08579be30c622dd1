"""A stand-in for the ``pynvml`` module (nvidia-ml-py): same names, same error
classes and codes, answers scripted per device. No GPU is needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 12: "NVML Shared Library Not Found", 15: "GPU is lost"}.get(
            self.value, f"NVML error {self.value}"
        )


@dataclass
class FakeDevice:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-5e2c3f0a-0000-0000-0000-000000000000"
    memory: tuple[int, int, int] | int = (
        85520809984,
        1234567168,
        84286242816,
    )  # total, used, free; or an error code
    addressing_mode: int | None = 0  # None: function absent from the driver
    compute: list[tuple[int, int | None]] | int = field(default_factory=list)
    graphics: list[tuple[int, int | None]] | int = field(default_factory=list)


class PynvmlDouble:
    """Build one, then pass it as the module: ``read_gpus(PynvmlDouble(...))``."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_DRIVER_NOT_LOADED = NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND

    def __init__(self, devices: list[FakeDevice], init_error: int | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.initialized = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetName(self, h: FakeDevice) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> bytes:
        return h.uuid.encode()  # older pynvml returned bytes

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice) -> Any:
        if isinstance(h.memory, int):
            raise NVMLError(h.memory)
        total, used, free = h.memory
        return SimpleNamespace(total=total, used=used, free=free)

    def nvmlDeviceGetAddressingMode(self, h: FakeDevice) -> int:
        if h.addressing_mode is None:
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        return h.addressing_mode

    @staticmethod
    def _procs(spec: list[tuple[int, int | None]] | int) -> list[Any]:
        if isinstance(spec, int):
            raise NVMLError(spec)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in spec]

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeDevice) -> list[Any]:
        return self._procs(h.compute)

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: FakeDevice) -> list[Any]:
        return self._procs(h.graphics)
