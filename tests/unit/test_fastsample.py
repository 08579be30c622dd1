"""memgap._fastsample, the sampler's native high-rate loop: its parser against the Python
path's (``memgap.collect.keyed.lookup``) on the same text, garbage, its rows over files
built from real kernel output (tests/fixtures), its thread, and its descriptors."""

from __future__ import annotations

import array
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.collect.keyed import CG_STAT_KEYS, MEMINFO_KEYS, STATUS_KEYS, lookup
from memgap.sampler import Sampler, SamplerConfig
from memgap.sampler.native import native_module

FIX = Path(__file__).resolve().parent.parent / "fixtures"
fs = native_module()

if os.environ.get("CI") and fs is None:  # CI installs a compiler: the module must be there
    raise AssertionError("memgap._fastsample was not built (scripts/setup.sh installs gcc and the Python headers)")
pytestmark = pytest.mark.skipif(fs is None, reason="memgap._fastsample is not built here")


def c_lookup(text: str, keys: tuple[str, ...], kb: bool) -> dict[str, int]:
    assert fs is not None
    vals = fs.extract(text.encode(), fs.KB if kb else fs.KV, list(keys))
    return {k.rstrip(": "): v for k, v in zip(keys, vals, strict=True) if v is not None}


@pytest.mark.parametrize("name, keys, kb", [
    ("proc/v1host/meminfo", MEMINFO_KEYS, True),
    ("proc/v1host/status", STATUS_KEYS, True),
    ("cgroup/v1/memory.stat", CG_STAT_KEYS[1][0] + CG_STAT_KEYS[1][1], False),
    ("cgroup/v2/memory.stat", CG_STAT_KEYS[2][0] + CG_STAT_KEYS[2][1], False),
])
def test_kernel_files_read_the_same(name: str, keys: tuple[str, ...], kb: bool) -> None:
    text = (FIX / name).read_text()
    py = lookup(text, keys, kb=kb)
    assert py and c_lookup(text, keys, kb) == py


# Text shaped like the kernel's key/value files, with every way a line can go wrong:
# keys at the start or not, repeated, values with signs, blanks, letters, a missing or
# partial " kB". ASCII without '_' (which Python's int() reads as a digit separator)
# and values under 2**53 (int64 after the * 1024).
_KEYS = ("MemFree:", "Cached:", "anon ", "file ", "VmRSS:")
_value = st.one_of(
    st.integers(-(10**15), 10**15).map(str),
    st.text(alphabet="0123456789 \t\r+-kBx", max_size=12),
)
_line = st.one_of(
    st.tuples(st.sampled_from(_KEYS), _value, st.sampled_from(["", " kB", "kB", " KB", " kB "])).map("".join),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters="_"), max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_line, max_size=8), st.booleans(), st.booleans())
def test_same_as_the_python_lookup(lines: list[str], kb: bool, trailing_newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    assert c_lookup(text, _KEYS, kb) == lookup(text, _KEYS, kb=kb)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0, 1, 2]))
def test_garbage_never_crashes(data: bytes, mode: int) -> None:
    assert fs is not None
    out = fs.extract(data, mode, list(_KEYS))
    assert len(out) == (1 if mode == fs.SINGLE else len(_KEYS))
    assert all(v is None or isinstance(v, int) for v in out)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789 \t\n+-x", max_size=14))
def test_single_number_as_python_strip_isdigit(text: str) -> None:
    assert fs is not None
    expected = int(text) if text.strip().isdigit() else None
    assert fs.extract(text.encode(), fs.SINGLE, []) == [expected]


def _make(tmp: Path) -> tuple[object, list[int]]:
    assert fs is not None
    shutil.copy(FIX / "proc/v1host/meminfo", tmp / "meminfo")
    (tmp / "usage").write_text("123456789\n")
    shutil.copy(FIX / "cgroup/v2/memory.stat", tmp / "memory.stat")
    for i, (rss, hwm) in enumerate(((100, 900), (250, 300))):
        text = (FIX / "proc/v1host/status").read_text()
        text = "".join(f"VmRSS:\t{rss} kB\n" if ln.startswith("VmRSS:") else
                       f"VmHWM:\t{hwm} kB\n" if ln.startswith("VmHWM:") else ln
                       for ln in text.splitlines(keepends=True))
        (tmp / f"status{i}").write_text(text)
    for i, resident in enumerate((25, 50)):  # statm: size resident shared text lib data dt (pages)
        (tmp / f"statm{i}").write_text(f"4000 {resident} 7 1 0 300 0\n")
    s = fs.FastSampler(200.0, [
        (str(tmp / "meminfo"), fs.KB, ["MemTotal:", "MemFree:"], True, False),
        (str(tmp / "usage"), fs.SINGLE, [], True, True),
        (str(tmp / "memory.stat"), fs.KV, ["anon ", "nosuchkey "], True, False),
    ], fs.KB, ["VmRSS:", "VmHWM:"], [fs.SUM, fs.MAX], full_every=4)
    fds = [(os.open(tmp / f"status{i}", os.O_RDONLY), os.open(tmp / f"statm{i}", os.O_RDONLY)) for i in range(2)]
    return s, fds


def _close_pairs(pairs: list[tuple[int, int]]) -> None:
    for pair in pairs:
        for fd in pair:
            os.close(fd)


def test_rows_sum_max_count_and_missing(tmp_path: Path) -> None:
    s, fds = _make(tmp_path)
    s.set_group(fds)  # type: ignore[attr-defined]
    _close_pairs(fds)  # the sampler keeps its own duplicates
    rows = _rows_after(s, sample_now=True)
    assert len(rows) == 1
    t_ns, full, total, free, usage, anon, nosuch, rss_sum, hwm_max, count, resident = rows[0]
    assert full == 1 and resident == fs.MISSING  # type: ignore[union-attr]
    assert abs(t_ns / 1e9 - time.monotonic()) < 5  # CLOCK_MONOTONIC, as time.monotonic()
    meminfo = (FIX / "proc/v1host/meminfo").read_text()
    assert total == lookup(meminfo, ("MemTotal:",), kb=True)["MemTotal"]
    assert free == lookup(meminfo, ("MemFree:",), kb=True)["MemFree"]
    assert usage == 123456789
    assert anon == lookup((FIX / "cgroup/v2/memory.stat").read_text(), ("anon ",), kb=False)["anon"]
    assert nosuch == fs.MISSING  # type: ignore[union-attr]
    assert (rss_sum, hwm_max, count) == (350 * 1024, 900 * 1024, 2)
    (tmp_path / "usage").write_text("garbage\n")  # rewritten in place: read afresh
    assert _rows_after(s, sample_now=True)[0][4] == fs.MISSING  # type: ignore[union-attr]
    s.close()  # type: ignore[attr-defined]


def test_totals_every_tick_breakdown_every_nth(tmp_path: Path) -> None:
    assert fs is not None
    s, fds = _make(tmp_path)
    s.set_group(fds)  # type: ignore[attr-defined]
    _close_pairs(fds)
    s.start()  # type: ignore[attr-defined]
    time.sleep(0.3)
    s.stop()  # type: ignore[attr-defined]
    rows = _rows_after(s, sample_now=False)
    assert len(rows) >= 12
    fulls = [r for r in rows if r[1] == 1]
    fast = [r for r in rows if r[1] == 0]
    # full_every=4: ticks 0, 4, 8... are full
    assert [r[1] for r in rows[:8]] == [1, 0, 0, 0, 1, 0, 0, 0]
    page = os.sysconf("SC_PAGE_SIZE")
    for r in fast:
        assert r[4] == 123456789  # the every-tick source
        assert r[2] == r[3] == r[5] == fs.MISSING  # meminfo, memory.stat: full ticks only
        assert r[7] == r[8] == fs.MISSING  # status sums: full ticks only
        assert (r[9], r[10]) == (2, (25 + 50) * page)  # statm files read, resident summed
    for r in fulls:
        assert r[2] is not fs.MISSING and r[7] == 350 * 1024 and r[10] == fs.MISSING
    s.close()  # type: ignore[attr-defined]


def _rows_after(s: object, sample_now: bool) -> list[list[int]]:
    raw = array.array("q")
    raw.frombytes(s.drain(sample_now=sample_now))  # type: ignore[attr-defined]
    n = s.row_len  # type: ignore[attr-defined]
    return [list(raw[i:i + n]) for i in range(0, len(raw), n)]


def test_a_process_that_exits_leaves_the_group() -> None:
    assert fs is not None
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    s = fs.FastSampler(100.0, [], fs.KB, ["VmRSS:"], [fs.SUM])
    fds = [(os.open(f"/proc/{child.pid}/status", os.O_RDONLY), -1), (os.open("/proc/self/status", os.O_RDONLY), -1)]
    s.set_group(fds)
    for fd, _ in fds:
        os.close(fd)
    both = _rows_after(s, sample_now=True)[0]
    assert both[-2] == 2 and both[2] > 0
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)
    after = _rows_after(s, sample_now=True)[0]
    assert after[-2] == 1  # the dead process's descriptor reads ESRCH: counted no more
    s.close()


def test_thread_rate_stop_and_descriptors(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    s, fds = _make(tmp_path)
    s.set_group(fds)  # type: ignore[attr-defined]
    _close_pairs(fds)
    s.start()  # type: ignore[attr-defined]
    assert s.running  # type: ignore[attr-defined]
    time.sleep(0.5)
    t0 = time.monotonic()
    s.stop()  # type: ignore[attr-defined]
    assert time.monotonic() - t0 < 0.5  # a sleeping thread is woken, not waited for
    rows = _rows_after(s, sample_now=False)
    assert 40 <= len(rows) <= 110, len(rows)  # 200 Hz for 0.5 s on a busy 2-core box
    ts = [r[0] for r in rows]
    assert all(a < b for a, b in zip(ts, ts[1:], strict=False))
    assert len(os.listdir("/proc/self/fd")) > before  # its files are kept open...
    s.close()  # type: ignore[attr-defined]
    assert len(os.listdir("/proc/self/fd")) == before  # ...until closed
    with pytest.raises(ValueError, match="closed"):
        s.drain()  # type: ignore[attr-defined]


def test_bad_arguments_are_errors() -> None:
    assert fs is not None
    with pytest.raises(ValueError, match="rate_hz"):
        fs.FastSampler(0.0, [], fs.KB, [], [])
    with pytest.raises(ValueError, match="mode"):
        fs.FastSampler(10.0, [("/proc/meminfo", 7, ["MemFree:"], True, False)], fs.KB, [], [])
    with pytest.raises(ValueError, match="aggregation"):
        fs.FastSampler(10.0, [], fs.KB, ["VmRSS:"], [])
    with pytest.raises(ValueError, match="no keys"):
        fs.FastSampler(10.0, [("/proc/meminfo", fs.KB, [], True, False)], fs.KB, [], [])
    with pytest.raises(ValueError, match="full_every"):
        fs.FastSampler(10.0, [], fs.KB, [], [], full_every=0)
    s = fs.FastSampler(10.0, [], fs.KB, [], [])
    with pytest.raises(TypeError, match="status_fd"):
        s.set_group([3])


def test_sampler_reads_the_same_natively_and_in_python() -> None:
    """The real kernel: this process and its memory cgroup, both loops, one after the
    other; what cannot have moved in between is equal, what can is close."""
    from memgap.collect.cgroup import memory_cgroup_of

    cg = memory_cgroup_of("self")
    rows = {}
    for native in (False, True):
        s = Sampler(os.getpid(), cg, SamplerConfig(rate_hz=100, full_rate_hz=10, native=native))
        assert s.native is native
        s.start()
        time.sleep(0.5)
        series = s.stop()
        assert len(series) >= 20
        full = [i for i in range(len(series)) if series.columns["host_free_bytes"][i] is not None]
        if native:
            # totals at 100 Hz, the breakdown at 10 Hz (and at the start-up sample)
            assert len(full) <= len(series) // 4
            assert all(v is not None for v in series.columns["process_rss_bytes"])
            if cg is not None:
                assert all(v is not None for v in series.columns["cgroup_usage_bytes"])
        else:
            assert len(full) == len(series)
        rows[native] = series.row(full[-1])
        assert series.kernel_process_hwm_bytes is not None
    py, c = rows[False], rows[True]
    assert c["process_count"] == py["process_count"] >= 1
    for col in ("process_rss_bytes", "host_free_bytes", "cgroup_usage_bytes", "cgroup_anon_bytes"):
        if py[col] is None:
            assert c[col] is None
        else:
            assert c[col] is not None and abs(c[col] - py[col]) < 64 << 20, col
