"""The sampler's high-rate loop in memgap._fastsample's native thread: which files and
keys it reads, on which ticks, and how its rows decode into the series' columns."""

from __future__ import annotations

import array
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import CgroupRef
from memgap.collect.keyed import CG_STAT_KEYS, MEMINFO_KEYS, STATUS_KEYS
from memgap.sampler.rows import Row, append, fill_cgroup_stat, fill_host, fill_processes, new_row
from memgap.series import COLUMNS, MemorySeries

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
        self.cgroup = cgroup
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

    def append_rows(self, raw: array.array[int], series: MemorySeries, t0: float,
                    note: Callable[[str], None]) -> int | None:
        """Drained rows into the series' columns (``t0``: the monotonic start, in s);
        returns the largest VmHWM of the full rows, None where none had one."""
        cols = series.columns
        # Totals-only rows (most of them at high rates) go straight into the columns: no
        # per-row dict, no parsing -- this loop is the Python side's whole per-sample cost.
        fast_none = [cols[c] for c in COLUMNS if c not in FAST_COLUMNS]
        t_col, usage_col, rss_col, count_col = (cols[c] for c in FAST_COLUMNS)
        iu, ic, ir, missing = self.i_usage, self.i_count, self.i_resident, self.missing
        n = self.row_len
        nrows = len(raw) // n
        full = raw[1::n].tolist()
        hwm: int | None = None
        i = 0
        while i < nrows:
            if full[i]:
                row, row_hwm = self.full_row(raw[i * n:(i + 1) * n].tolist(), t0, series, note)
                append(series, row)
                if row_hwm is not None:
                    hwm = max(hwm or 0, row_hwm)
                i += 1
                continue
            j = i
            while j < nrows and not full[j]:
                j += 1
            seg = raw[i * n:j * n]  # a run of totals-only rows, column by column
            t_col.extend(round(v / 1e9 - t0, 6) for v in seg[0::n])
            usage_col.extend([None] * (j - i) if iu is None else
                             [None if v == missing else v for v in seg[iu::n]])
            counts = seg[ic::n].tolist()
            count_col.extend(counts)
            rss_col.extend(v if c and v != missing else None for v, c in zip(seg[ir::n], counts, strict=True))
            nones = [None] * (j - i)
            for col in fast_none:
                col.extend(nones)
            i = j
        return hwm

    def full_row(self, r: list[int], t0: float, series: MemorySeries,
                 note: Callable[[str], None]) -> tuple[Row, int | None]:
        """A full tick's row, and the tree's VmHWM where it was read."""
        t_ns, _full, host, usage, stat, kmem, status, seen, _resident = self.split(r)
        row = new_row(t_ns / 1e9 - t0)
        if not fill_host(row, host, series):
            note("host: /proc/meminfo unreadable or without MemTotal/MemFree")
        if self.cgroup is not None:
            row["cgroup_usage_bytes"] = usage
            if stat or kmem is not None:
                fill_cgroup_stat(row, self.cgroup.files, stat, kmem)
        fill_processes(row, status, seen)
        return row, status.get("VmHWM") if seen else None
