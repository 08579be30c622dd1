"""The sampler's high-rate key lookup (``_lookup``) agrees with the full collectors'
parsers on real kernel files, and never raises on garbage."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from memgap.collect.cgroup import parse_memory_stat
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.process import parse_status
from memgap.sampler import _CG_STAT_KEYS, _MEMINFO_KEYS, _STATUS_KEYS, _lookup

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_meminfo_matches_the_parser() -> None:
    text = (FIX / "proc/v1host/meminfo").read_text()
    mi = parse_meminfo(text)
    got = _lookup(text, _MEMINFO_KEYS, kb=True)
    assert got == {"MemTotal": mi.total_bytes, "MemFree": mi.free_bytes, "MemAvailable": mi.available_bytes,
                   "Cached": mi.cached_bytes, "Shmem": mi.shmem_bytes}


def test_status_matches_the_parser() -> None:
    text = (FIX / "proc/v1host/status").read_text()
    st_ = parse_status(text, "status")
    got = _lookup(text, _STATUS_KEYS, kb=True)
    assert got == {"VmRSS": st_.vm_rss_bytes, "RssAnon": st_.rss_anon_bytes, "RssFile": st_.rss_file_bytes,
                   "RssShmem": st_.rss_shmem_bytes, "VmHWM": st_.vm_hwm_bytes}


def test_memory_stat_matches_the_parser() -> None:
    for version in (1, 2):
        text = (FIX / f"cgroup/v{version}/memory.stat").read_text()
        full = parse_memory_stat(text, "memory.stat")
        first, fallback = _CG_STAT_KEYS[version]
        got = _lookup(text, first + fallback, kb=False)
        assert got == {k.strip(): full[k.strip()] for k in first + fallback if k.strip() in full}
        # "rss" is not confused with "rss_huge", nor "file" with "file_mapped"
        assert ("rss" in got) == (version == 1) and ("file" in got) == (version == 2)


def test_first_line_and_missing_unit() -> None:
    assert _lookup("MemTotal: 10 kB\nMemFree: 3 kB", _MEMINFO_KEYS, kb=True) == {
        "MemTotal": 10240, "MemFree": 3072}
    assert _lookup("MemTotal: 10\nMemFree: x kB\n", _MEMINFO_KEYS, kb=True) == {}
    assert _lookup("xanon 5\nanon 7", ("anon ",), kb=False) == {"anon": 7}


@given(st.text(max_size=300))
def test_garbage_never_raises(text: str) -> None:
    for keys, kb in ((_MEMINFO_KEYS, True), (_STATUS_KEYS, True), (_CG_STAT_KEYS[1][0], False)):
        for v in _lookup(text, keys, kb=kb).values():
            assert isinstance(v, int)


# -- GPU memory per process (NVML) ---------------------------------------------------------

def _sampler_on_self(gpu_read: object) -> object:
    import os
    import time

    from memgap.sampler import Sampler, SamplerConfig

    s = Sampler(os.getpid(), None, SamplerConfig(gpu_interval_s=0.0), gpu_read=gpu_read)  # type: ignore[arg-type]
    s._t0 = time.monotonic()
    return s


def test_gpu_memory_of_the_engine_processes_is_summed() -> None:
    import os

    calls = []

    def read() -> dict[int, int | None]:
        calls.append(1)
        return {os.getpid(): 100 << 20, 1: 5 << 20}  # pid 1 is not in the tree

    s = _sampler_on_self(read)
    s.sample()  # type: ignore[attr-defined]
    series = s.stop()  # type: ignore[attr-defined]
    assert series.columns["gpu_process_used_bytes"] == [100 << 20]
    assert calls == [1]


def test_gpu_unreadable_is_noted_once_and_not_asked_again() -> None:
    calls = []

    def read() -> str:
        calls.append(1)
        return "NVIDIA driver not loaded"

    s = _sampler_on_self(read)
    s.sample()  # type: ignore[attr-defined]
    s.sample()  # type: ignore[attr-defined]
    series = s.stop()  # type: ignore[attr-defined]
    assert series.columns["gpu_process_used_bytes"] == [None, None]
    assert calls == [1] and "gpu: NVIDIA driver not loaded" in series.errors


def test_no_engine_process_on_the_gpu_is_zero_and_unknown_is_none() -> None:
    import os

    s = _sampler_on_self(lambda: {4242: 1})
    s.sample()  # type: ignore[attr-defined]
    assert s.stop().columns["gpu_process_used_bytes"] == [0]  # type: ignore[attr-defined]
    s = _sampler_on_self(lambda: {os.getpid(): None})
    s.sample()  # type: ignore[attr-defined]
    assert s.stop().columns["gpu_process_used_bytes"] == [None]  # type: ignore[attr-defined]


def test_nvml_process_memory_through_the_pynvml_double(monkeypatch: object) -> None:
    import importlib.util
    import sys

    import memgap.collect.nvml as nvml_mod
    from memgap.sampler import nvidia_driver_present, nvml_process_memory

    spec = importlib.util.spec_from_file_location(
        "pynvml_double_for_sampler", Path(__file__).resolve().parent / "collect" / "pynvml_double.py")
    assert spec is not None and spec.loader is not None
    dbl = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, dbl)  # type: ignore[attr-defined]  # dataclasses look it up
    spec.loader.exec_module(dbl)
    fake = dbl.PynvmlDouble([dbl.FakeDevice(compute=[(11, 300 << 20), (12, None)]),
                             dbl.FakeDevice(compute=[(11, 100 << 20)])])
    monkeypatch.setattr(nvml_mod, "_load_pynvml", lambda: fake)  # type: ignore[attr-defined]
    assert nvml_process_memory() == {11: 400 << 20, 12: None}
    broken = dbl.PynvmlDouble([], init_error=dbl.NVML_ERROR_DRIVER_NOT_LOADED)
    monkeypatch.setattr(nvml_mod, "_load_pynvml", lambda: broken)  # type: ignore[attr-defined]
    assert nvml_process_memory() == "NVIDIA driver not loaded"
    assert isinstance(nvidia_driver_present(), bool)


def test_nvml_is_initialised_once_for_many_readings(monkeypatch: object) -> None:
    import importlib.util
    import sys

    from memgap.collect.nvml import NvmlProcessMemory

    spec = importlib.util.spec_from_file_location(
        "pynvml_double_for_reader", Path(__file__).resolve().parent / "collect" / "pynvml_double.py")
    assert spec is not None and spec.loader is not None
    dbl = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, dbl)  # type: ignore[attr-defined]
    spec.loader.exec_module(dbl)
    dev = dbl.FakeDevice(compute=[(11, 300 << 20)], graphics=[(11, 300 << 20), (13, 1 << 20)])
    fake = dbl.PynvmlDouble([dev])
    reader = NvmlProcessMemory(fake)
    assert reader() == {11: 300 << 20, 13: 1 << 20}  # compute + graphics of one process: not doubled
    dev.compute = [(11, 500 << 20)]
    assert reader() == {11: 500 << 20, 13: 1 << 20}  # read afresh
    assert (fake.initialized, fake.shutdowns) == (1, 0)
    reader.close()
    assert fake.shutdowns == 1
    assert NvmlProcessMemory(dbl.PynvmlDouble([], init_error=dbl.NVML_ERROR_DRIVER_NOT_LOADED))() == \
        "NVIDIA driver not loaded"
