"""The sampler's high-rate key lookup (``lookup``) agrees with the full collectors'
parsers on real kernel files, and never raises on garbage."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from memgap.collect.cgroup import parse_memory_stat
from memgap.collect.keyed import CG_STAT_KEYS, MEMINFO_KEYS, STATUS_KEYS, lookup
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.process import parse_status

FIX = Path(__file__).resolve().parents[2] / "fixtures"


def test_meminfo_matches_the_parser() -> None:
    text = (FIX / "proc/v1host/meminfo").read_text()
    mi = parse_meminfo(text)
    got = lookup(text, MEMINFO_KEYS, kb=True)
    assert got == {"MemTotal": mi.total_bytes, "MemFree": mi.free_bytes, "MemAvailable": mi.available_bytes,
                   "Cached": mi.cached_bytes, "Shmem": mi.shmem_bytes}


def test_status_matches_the_parser() -> None:
    text = (FIX / "proc/v1host/status").read_text()
    st_ = parse_status(text, "status")
    got = lookup(text, STATUS_KEYS, kb=True)
    assert got == {"VmRSS": st_.vm_rss_bytes, "RssAnon": st_.rss_anon_bytes, "RssFile": st_.rss_file_bytes,
                   "RssShmem": st_.rss_shmem_bytes, "VmHWM": st_.vm_hwm_bytes}


def test_memory_stat_matches_the_parser() -> None:
    for version in (1, 2):
        text = (FIX / f"cgroup/v{version}/memory.stat").read_text()
        full = parse_memory_stat(text, "memory.stat")
        first, fallback = CG_STAT_KEYS[version]
        got = lookup(text, first + fallback, kb=False)
        assert got == {k.strip(): full[k.strip()] for k in first + fallback if k.strip() in full}
        # "rss" is not confused with "rss_huge", nor "file" with "file_mapped"
        assert ("rss" in got) == (version == 1) and ("file" in got) == (version == 2)


def test_first_line_and_missing_unit() -> None:
    assert lookup("MemTotal: 10 kB\nMemFree: 3 kB", MEMINFO_KEYS, kb=True) == {
        "MemTotal": 10240, "MemFree": 3072}
    assert lookup("MemTotal: 10\nMemFree: x kB\n", MEMINFO_KEYS, kb=True) == {}
    assert lookup("xanon 5\nanon 7", ("anon ",), kb=False) == {"anon": 7}


@given(st.text(max_size=300))
def test_garbage_never_raises(text: str) -> None:
    for keys, kb in ((MEMINFO_KEYS, True), (STATUS_KEYS, True), (CG_STAT_KEYS[1][0], False)):
        for v in lookup(text, keys, kb=kb).values():
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


def test_nvidia_driver_present_reads_the_device_nodes(tmp_path: Path) -> None:
    from memgap.sampler import nvidia_driver_present

    assert not nvidia_driver_present(tmp_path)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidiactl").write_text("")
    assert nvidia_driver_present(tmp_path)
