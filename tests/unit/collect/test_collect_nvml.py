from __future__ import annotations

from typing import Any, cast

import pytest
from pynvml_double import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    FakeDevice,
    PynvmlDouble,
)

from memgap.collect import nvml as nvml_module
from memgap.collect.nvml import GpuReading, NvmlProcessMemory, NvmlUnavailable, read_gpus

GIB = 1024**3


def _read(double: PynvmlDouble) -> list[GpuReading]:
    result = read_gpus(cast(Any, double))
    assert isinstance(result, list), result
    return result


def test_discrete_gpu():
    double = PynvmlDouble([FakeDevice(compute=[(4242, 20 * GIB)], addressing_mode=1)])
    (g,) = _read(double)
    assert (g.index, g.name, g.uuid) == (
        0,
        "NVIDIA H100 80GB HBM3",
        "GPU-5e2c3f0a-0000-0000-0000-000000000000",
    )
    assert (g.total_bytes, g.used_bytes, g.free_bytes) == (85520809984, 1234567168, 84286242816)
    assert g.unified_memory is False  # HMM is reported by discrete GPUs too
    assert g.addressing_mode == "hmm"
    assert g.not_supported == () and g.errors == ()
    assert g.process_used_bytes == {4242: 20 * GIB}
    assert double.initialized == 1 and double.shutdowns == 1


def test_gb10_memory_info_not_supported_is_a_reading():
    gb10 = FakeDevice(
        name="NVIDIA GB10",
        memory=NVML_ERROR_NOT_SUPPORTED,
        addressing_mode=2,
        compute=[(100, 70 * GIB), (101, None)],
    )
    (g,) = _read(PynvmlDouble([gb10]))
    assert g.unified_memory is True
    assert g.total_bytes is None and g.used_bytes is None and g.free_bytes is None
    assert g.not_supported == ("memory_info",)
    assert g.errors == ()
    assert g.process_used_bytes == {100: 70 * GIB, 101: None}


def test_memory_info_not_supported_alone_means_unified():
    (g,) = _read(PynvmlDouble([FakeDevice(memory=NVML_ERROR_NOT_SUPPORTED, addressing_mode=None)]))
    assert g.unified_memory is True
    assert g.addressing_mode is None
    assert g.errors == ("addressing_mode: NVML error 13",)


def test_process_in_both_lists_is_not_counted_twice():
    dev = FakeDevice(compute=[(7, 3 * GIB), (8, None)], graphics=[(7, 3 * GIB), (8, GIB), (9, 5)])
    (g,) = _read(PynvmlDouble([dev]))
    assert g.process_used_bytes == {7: 3 * GIB, 8: GIB, 9: 5}


def test_graphics_processes_not_supported():
    (g,) = _read(PynvmlDouble([FakeDevice(compute=[(1, 10)], graphics=NVML_ERROR_NOT_SUPPORTED)]))
    assert g.not_supported == ("graphics_processes",)
    assert g.process_used_bytes == {1: 10}


def test_lost_gpu_is_an_error_of_that_device_only():
    double = PynvmlDouble([FakeDevice(memory=NVML_ERROR_GPU_IS_LOST), FakeDevice(uuid="GPU-2")])
    lost, ok = _read(double)
    assert lost.total_bytes is None and lost.unified_memory is None
    assert lost.errors == ("memory_info: GPU is lost",)
    assert ok.uuid == "GPU-2" and ok.total_bytes == 85520809984
    assert double.shutdowns == 1


@pytest.mark.parametrize(
    "code, reason",
    [
        (NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so not found (no NVIDIA driver)"),
        (NVML_ERROR_DRIVER_NOT_LOADED, "NVIDIA driver not loaded"),
    ],
)
def test_no_driver(code, reason):
    double = PynvmlDouble([], init_error=code)
    assert read_gpus(cast(Any, double)) == NvmlUnavailable(reason)
    assert double.shutdowns == 0


def test_pynvml_missing(monkeypatch):
    def no_module():
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(nvml_module, "_load_pynvml", no_module)
    result = read_gpus()
    assert isinstance(result, NvmlUnavailable) and "pynvml" in result.reason


def test_no_gpus_is_an_empty_list():
    assert read_gpus(cast(Any, PynvmlDouble([]))) == []


def test_real_pynvml_never_raises():
    # This machine has no NVIDIA driver: a reason, not an exception. On a GPU box: readings.
    result = read_gpus()
    assert isinstance(result, (list, NvmlUnavailable))


def test_process_memory_reader_inits_once_and_sums_over_gpus():
    dev = FakeDevice(compute=[(11, 300 << 20), (12, None)], graphics=[(11, 300 << 20), (13, 1 << 20)])
    double = PynvmlDouble([dev, FakeDevice(compute=[(11, 100 << 20)])])
    reader = NvmlProcessMemory(cast(Any, double))
    # compute + graphics of one process on one GPU: its one total; over GPUs: summed
    assert reader() == {11: 400 << 20, 12: None, 13: 1 << 20}
    dev.compute = [(11, 500 << 20)]
    assert reader() == {11: 600 << 20, 13: 1 << 20}  # read afresh
    assert (double.initialized, double.shutdowns) == (1, 0)
    reader.close()
    assert double.shutdowns == 1
    broken = PynvmlDouble([], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    assert NvmlProcessMemory(cast(Any, broken))() == "NVIDIA driver not loaded"
