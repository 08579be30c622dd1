"""The sampler's high-rate loop in a Python thread (where memgap._fastsample is not built,
or ``SamplerConfig(native=False)``): its timing, and its reads of /proc/meminfo and the
cgroup's counters at every tick. The process tree's status files are ``tree``'s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from memgap.collect.cgroup import CgroupRef, parse_memory_stat
from memgap.collect.fastread import FileReader
from memgap.collect.keyed import CG_STAT_KEYS, MEMINFO_KEYS, lookup
from memgap.collect.meminfo import parse_meminfo
from memgap.sampler.rows import Row, fill_cgroup_stat, fill_host
from memgap.series import MemorySeries

_SHORT_WAIT_S = 0.05


def every(period_s: float, stop: threading.Event, tick: Callable[[], object]) -> None:
    """Call ``tick`` every ``period_s`` until ``stop`` is set."""
    next_t = time.monotonic() + period_s
    while not stop.is_set():
        delay = next_t - time.monotonic()
        if delay > 0:
            # Short waits sleep: Event.wait allocates and takes two locks per call, a
            # third of the cost of an idle 100 Hz loop here. stop() then waits at most
            # one short period; long waits stay interruptible.
            if delay <= _SHORT_WAIT_S:
                time.sleep(delay)
                if stop.is_set():
                    break
            elif stop.wait(delay):
                break
        tick()
        next_t += period_s
        # After a stall (suspend, overloaded box), skip missed ticks instead of bursting.
        if next_t < time.monotonic():
            next_t = time.monotonic() + period_s


class CounterReads:
    """/proc/meminfo and the cgroup's usage, memory.stat and (v1) kmem, kept open."""

    def __init__(self, proc_root: Path, cgroup: CgroupRef | None, series: MemorySeries,
                 note: Callable[[str], None]) -> None:
        self.cgroup = cgroup
        self.series = series
        self._note = note
        self._meminfo = FileReader(proc_root / "meminfo")
        self._cg_usage: FileReader | None = None
        self._cg_stat: FileReader | None = None
        self._cg_kmem: FileReader | None = None
        if cgroup is not None:
            f = cgroup.files
            self._cg_usage = FileReader(cgroup.path / f.usage)
            self._cg_stat = FileReader(cgroup.path / f.stat)
            if f.kmem is not None:
                self._cg_kmem = FileReader(cgroup.path / f.kmem)

    def read_host(self, row: Row) -> None:
        text = self._meminfo.read_text()
        if text is None:
            self._note("host: /proc/meminfo unreadable")
            return
        if fill_host(row, lookup(text, MEMINFO_KEYS, kb=True), self.series):
            return
        try:
            mi = parse_meminfo(text)
        except Exception as e:  # noqa: BLE001 - a bad sample is noted, never fatal
            self._note(f"host: {e}")
            return
        self.series.host_total_bytes = mi.total_bytes
        row["host_free_bytes"] = mi.free_bytes
        row["host_available_bytes"] = mi.available_bytes
        row["host_cached_bytes"] = mi.cached_bytes
        row["host_shmem_bytes"] = mi.shmem_bytes
        row["host_used_bytes"] = mi.used_bytes

    def read_cgroup(self, row: Row) -> None:
        if self.cgroup is None or self._cg_usage is None or self._cg_stat is None:
            return
        usage = self._cg_usage.read_text()
        if usage is not None and usage.strip().isdigit():
            row["cgroup_usage_bytes"] = int(usage)
        stat_text = self._cg_stat.read_text()
        if stat_text is None:
            return
        first, fallback = CG_STAT_KEYS[self.cgroup.version]
        stat = lookup(stat_text, first, kb=False)
        if len(stat) < len(first) - 1:  # v2 "kernel" is 5.18+; anything else missing: older layout
            stat.update(lookup(stat_text, fallback, kb=False))
        if not stat:
            try:
                stat = parse_memory_stat(stat_text, source=str(self.cgroup.path / self.cgroup.files.stat))
            except Exception as e:  # noqa: BLE001
                self._note(f"cgroup: {e}")
                return
        kmem: int | None = None
        if self._cg_kmem is not None:
            kmem_text = self._cg_kmem.read_text()
            if kmem_text is not None and kmem_text.strip().isdigit():
                kmem = int(kmem_text)
        fill_cgroup_stat(row, self.cgroup.files, stat, kmem)

    def close(self) -> None:
        for r in (self._meminfo, self._cg_usage, self._cg_stat, self._cg_kmem):
            if r is not None:
                r.close()
