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
