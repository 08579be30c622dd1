"""The sampler's high-rate loop in memgap._fastsample's native thread: which files and
keys it reads, on which ticks, and how its rows decode into the series' columns."""

from __future__ import annotations

import array
import importlib
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import CgroupRef
from memgap.collect.fastread import FileReader
from memgap.collect.keyed import CG_STAT_KEYS, MEMINFO_KEYS, STATUS_KEYS

# What a totals-only row holds (see SamplerConfig.full_rate_hz).
FAST_COLUMNS = ("t_s", "cgroup_usage_bytes", "process_rss_bytes", "process_count")

# With the native loop, a Python thread still drains its rows, refreshes the process
# tree and reads the sparse columns, at this period (or the sample period if longer).
HOUSEKEEPING_S = 0.5
# Below this rate a Python thread costs next to nothing; the native loop buys nothing.
NATIVE_MIN_RATE_HZ = 4.0


def native_module() -> Any | None:
    """memgap._fastsample, or None where it was not built (no C compiler at install)."""
    try:
        return importlib.import_module("memgap._fastsample")
    except ImportError:
        return None


def fd_or_minus_one(reader: FileReader | None) -> int:
    fd = reader.fileno() if reader is not None else None
    return -1 if fd is None else fd


class NativeLoop:
    """memgap._fastsample.FastSampler set up with the high-rate path's files and keys,
    and the decoding of its rows into the columns' values."""

    def __init__(self, mod: Any, rate_hz: float, full_rate_hz: float, proc_root: Path,
                 cgroup: CgroupRef | None) -> None:
        self.mod = mod
        # (path, layout, keys, reopen, read on every tick)
        sources: list[tuple[str, int, tuple[str, ...], bool, bool]] = [
            (str(proc_root / "meminfo"), mod.KB, MEMINFO_KEYS, True, False)]
        self.cg_first: tuple[str, ...] = ()
        self.cg_fallback: tuple[str, ...] = ()
        if cgroup is not None:
            f = cgroup.files
            self.cg_first, self.cg_fallback = CG_STAT_KEYS[cgroup.version]
            sources.append((str(cgroup.path / f.usage), mod.SINGLE, (), True, True))
            sources.append((str(cgroup.path / f.stat), mod.KV, self.cg_first + self.cg_fallback, True, False))
            if f.kmem is not None:
                sources.append((str(cgroup.path / f.kmem), mod.SINGLE, (), True, False))
        self.has_cgroup = cgroup is not None
        self.has_kmem = cgroup is not None and cgroup.files.kmem is not None
        full_every = max(1, round(rate_hz / full_rate_hz)) if full_rate_hz > 0 else 1
        self.fs = mod.FastSampler(rate_hz, sources, mod.KB, STATUS_KEYS,
                                  tuple(mod.MAX if k == "VmHWM:" else mod.SUM for k in STATUS_KEYS),
                                  full_every=full_every)
        self.row_len: int = self.fs.row_len
        self.missing: int = mod.MISSING
        # Where a totals-only row keeps its values.
        self.i_usage: int | None = 2 + len(MEMINFO_KEYS) if cgroup is not None else None
        self.i_count: int = self.row_len - 2
        self.i_resident: int = self.row_len - 1

    def drain(self, sample_now: bool) -> array.array[int]:
        """The rows since the last drain, flat, ``row_len`` values each (``self.missing``
        where a tick did not read it)."""
        raw = array.array("q")
        raw.frombytes(self.fs.drain(sample_now=sample_now))
        return raw

    def split(self, r_raw: list[int]) -> tuple[int, bool, dict[str, int], int | None, dict[str, int],
                                                 int | None, dict[str, int], int, int | None]:
        """(t_ns, full tick, meminfo by key, cgroup usage, memory.stat by key, v1 kmem,
        status sums by key, group files read, statm resident bytes) -- keys as ``lookup``
        names them, absent where missing or not read at that tick."""
        r: list[int | None] = [None if v == self.missing else v for v in r_raw]
        def named(keys: tuple[str, ...], vals: list[int | None]) -> dict[str, int]:
            return {k.rstrip(": "): v for k, v in zip(keys, vals, strict=True) if v is not None}

        i = 2
        host = named(MEMINFO_KEYS, r[i:i + len(MEMINFO_KEYS)])
        i += len(MEMINFO_KEYS)
        usage: int | None = None
        stat: dict[str, int] = {}
        kmem: int | None = None
        if self.has_cgroup:
            usage = r[i]
            i += 1
            first = named(self.cg_first, r[i:i + len(self.cg_first)])
            i += len(self.cg_first)
            fallback = named(self.cg_fallback, r[i:i + len(self.cg_fallback)])
            i += len(self.cg_fallback)
            stat = first if len(first) >= len(self.cg_first) - 1 else {**first, **fallback}
            if self.has_kmem:
                kmem = r[i]
                i += 1
        status = named(STATUS_KEYS, r[i:i + len(STATUS_KEYS)])
        i += len(STATUS_KEYS)
        t_ns = r[0]
        assert t_ns is not None
        return t_ns, bool(r[1]), host, usage, stat, kmem, status, r[i] or 0, r[i + 1]
