"""Case 7 with the pynvml double: on a GB10-like device NVML's device-wide memory info
answers Not Supported, and the ledger's "GPU memory invisible to the cgroup" is filled
from the per-process figures the sampler read for the engine's processes (this test
process stands in for the engine), with the run's ledger notes naming that source; a
discrete device keeps its memory beside the ledger, and says so."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from fakeproc import pynvml_double

from memgap import hostinfo
from memgap.analysis.ledger import run_ledger
from memgap.collect import nvml
from memgap.collect.nvml import NvmlProcessMemory
from memgap.diagnose.gpu_source import PER_PROCESS, gpu_memory_source
from memgap.sampler import Sampler
from memgap.spec import SamplerConfig

GIB = 1 << 30
NV = pynvml_double()


def _run(monkeypatch: pytest.MonkeyPatch, device: Any) -> tuple[dict[str, Any], Any]:
    double = NV.PynvmlDouble([device])
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: double)
    host = {"gpus": hostinfo._gpus()}  # as the runner's host facts record them
    s = Sampler(os.getpid(), None, SamplerConfig(rate_hz=20, gpu_interval_s=0, native=False),
                gpu_read=NvmlProcessMemory(double))
    s.start()
    s.mark("start")
    time.sleep(0.3)
    s.mark("ready")
    series = s.stop()
    record = {"run_id": "gpu1", "engine": "vllm", "engine_report": {"engine": "vllm", "kv_cache_bytes": 2 * GIB},
              "engine_options": {}, "memory": {"host_total_bytes": series.host_total_bytes}, "host": host,
              "environment_info": {"name": "docker"}}
    return record, series


def test_not_supported_device_info_fills_the_category_from_per_process_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    gb10 = NV.FakeDevice(name="NVIDIA GB10", memory=NV.NVML_ERROR_NOT_SUPPORTED, addressing_mode=2,
                         compute=[(os.getpid(), 3 * GIB), (999999, GIB)])
    record, series = _run(monkeypatch, gb10)
    assert record["host"]["gpus"][0]["not_supported"] == ["memory_info"]
    ledger = run_ledger(record, series, at="ready")
    cat = next(c for c in ledger.categories if c.key == "gpu_outside_cgroup")
    assert cat.bytes == 3 * GIB  # the engine's process only, not pid 999999
    note = next(n for n in ledger.notes if "GPU memory invisible to the cgroup" in n)
    assert note.startswith(f"GPU memory invisible to the cgroup (3.00 GiB) comes from {PER_PROCESS}")
    assert "nvmlDeviceGetMemoryInfo) answered Not Supported on GPU 0 (NVIDIA GB10)" in note


def test_a_discrete_device_keeps_its_memory_beside_the_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    h100 = NV.FakeDevice(compute=[(os.getpid(), 30 * GIB)])
    record, series = _run(monkeypatch, h100)
    ledger = run_ledger(record, series, at="ready")
    cat = next(c for c in ledger.categories if c.key == "gpu_outside_cgroup")
    assert cat.bytes is None and ledger.engine["gpu_process_used_bytes"] == 30 * GIB
    assert any(n.startswith("GPU 0 (NVIDIA H100 80GB HBM3) has memory of its own") for n in ledger.notes)


def test_no_per_process_reading_says_it_was_not_measured() -> None:
    record = {"host": {"gpus": [{"index": 0, "name": "NVIDIA GB10", "unified_memory": True,
                                 "not_supported": ["memory_info"]}]}}
    d = gpu_memory_source(record, None)
    assert d is not None and d.case == 7 and "was not measured" in d.sentence
    assert gpu_memory_source({"host": {"gpus": {"unavailable": "no driver"}}}, None) is None
