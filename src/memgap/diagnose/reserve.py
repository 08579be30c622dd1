"""Case 6: the kernel's reserve -- the zone watermarks that ``vm.min_free_kbytes`` sets
and the lowmem reserve -- lowers MemAvailable, so a start-up check that reads it can
fail while MemFree ("free") looks fine; a rule that reads MemFree counts the reserve as
free instead.

MemAvailable is ``si_mem_available()`` (mm/show_mem.c, Linux 6.x; mm/page_alloc.c
before 6.1)::

    available = MemFree - totalreserve_pages
              + pagecache - min(pagecache / 2, wmark_low)      (Active(file) + Inactive(file))
              + reclaimable - min(reclaimable / 2, wmark_low)  (KReclaimable)

with ``wmark_low`` the sum of every zone's low watermark and ``totalreserve_pages``
the sum over zones of ``min(max(lowmem_reserve[j >= i]) + high watermark, managed)``
(``calculate_totalreserve_pages``). The watermarks come from ``min_free_kbytes``
(``__setup_per_zone_wmarks``): each low-memory zone's min is its share of
``min_free_kbytes`` by managed pages (Movable and HighMem get managed/1024 clamped to
[32, 128]); low = min + max(min / 4, managed x watermark_scale_factor / 10000); high =
low + the same step. /proc/zoneinfo prints them per zone (``min``, ``low``, ``high``,
``managed``, ``protection: (...)`` = lowmem_reserve). Parsers here are pure; the reader
takes ``proc_root``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from memgap.collect.errors import CollectorParseError
from memgap.collect.meminfo import MemInfo, read_meminfo
from memgap.diagnose.base import KERNEL_RESERVE, Diagnosis, gib, size

PAGE_BYTES = 4096  # zoneinfo counts pages; x86_64 and arm64 (4K kernels) pages
_ZONE_RE = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)")
_FIELD_RE = re.compile(r"^\s+(min|low|high|managed|present|spanned)\s+(\d+)\s*$")
_PAGES_FREE_RE = re.compile(r"^\s+pages free\s+(\d+)")
_PROTECTION_RE = re.compile(r"^\s+protection:\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Zone:
    node: int
    name: str
    free: int  # pages
    min: int
    low: int
    high: int
    managed: int
    protection: tuple[int, ...]


def parse_zoneinfo(text: str, source: str = "/proc/zoneinfo") -> tuple[Zone, ...]:
    """Every zone's watermarks (pages). Per-CPU pageset lines (``high:  0``, with a
    colon) are not the zone's watermark and are skipped."""
    zones: list[Zone] = []
    cur: dict[str, Any] | None = None

    def close() -> None:
        if cur is None:
            return
        missing = [k for k in ("min", "low", "high", "managed") if k not in cur]
        if missing:
            raise CollectorParseError(source, None, f"zone {cur['name']} of node {cur['node']} lacks {missing}")
        zones.append(Zone(cur["node"], cur["name"], cur.get("free", 0), cur["min"], cur["low"], cur["high"],
                          cur["managed"], cur.get("protection", ())))

    for lineno, line in enumerate(text.splitlines(), start=1):
        if m := _ZONE_RE.match(line):
            close()
            cur = {"node": int(m.group(1)), "name": m.group(2)}
            continue
        if cur is None:
            continue
        if m := _PAGES_FREE_RE.match(line):
            cur["free"] = int(m.group(1))
        elif m := _FIELD_RE.match(line):
            cur.setdefault(m.group(1), int(m.group(2)))
        elif m := _PROTECTION_RE.match(line):
            try:
                cur["protection"] = tuple(int(x) for x in m.group(1).replace(",", " ").split())
            except ValueError:
                raise CollectorParseError(source, lineno, f"protection: {m.group(1)!r}") from None
    close()
    if not zones:
        raise CollectorParseError(source, None, "no 'Node N, zone NAME' sections")
    return tuple(zones)


def total_reserve_pages(zones: Sequence[Zone]) -> int:
    """``calculate_totalreserve_pages``: zones are listed in index order per node, and
    ``protection[j]`` is the zone's lowmem_reserve against allocations for zone j."""
    total = 0
    index: dict[int, int] = {}
    for z in zones:
        i = index.get(z.node, 0)
        index[z.node] = i + 1
        total += min(max(z.protection[i:], default=0) + z.high, z.managed)
    return total


def low_watermark_pages(zones: Sequence[Zone]) -> int:
    return sum(z.low for z in zones)


@dataclass(frozen=True)
class KernelReserve:
    min_free_kbytes: int | None
    watermark_scale_factor: int | None
    zones: tuple[Zone, ...]

    @property
    def total_reserve_bytes(self) -> int:
        return total_reserve_pages(self.zones) * PAGE_BYTES

    @property
    def low_watermark_bytes(self) -> int:
        return low_watermark_pages(self.zones) * PAGE_BYTES

    @property
    def min_watermark_bytes(self) -> int:
        return sum(z.min for z in self.zones) * PAGE_BYTES

    def node_reserve_bytes(self, node: int) -> int:
        return total_reserve_pages([z for z in self.zones if z.node == node]) * PAGE_BYTES


@dataclass(frozen=True)
class ReserveEffect:
    """How much of MemFree the reserve keeps out of MemAvailable, part by part."""

    mem_free_bytes: int
    mem_available_bytes: int  # as the kernel reported it
    computed_available_bytes: int  # si_mem_available from the parts below
    total_reserve_bytes: int  # high watermarks + lowmem reserve
    page_cache_kept_bytes: int  # min(pagecache / 2, wmark_low)
    reclaimable_kept_bytes: int  # min(reclaimable / 2, wmark_low)

    @property
    def taken_bytes(self) -> int:
        return self.total_reserve_bytes + self.page_cache_kept_bytes + self.reclaimable_kept_bytes

    def to_dict(self) -> dict[str, int]:
        return {"mem_free_bytes": self.mem_free_bytes, "mem_available_bytes": self.mem_available_bytes,
                "computed_available_bytes": self.computed_available_bytes,
                "total_reserve_bytes": self.total_reserve_bytes, "page_cache_kept_bytes": self.page_cache_kept_bytes,
                "reclaimable_kept_bytes": self.reclaimable_kept_bytes, "taken_bytes": self.taken_bytes}


def reserve_effect(mi: MemInfo, r: KernelReserve) -> ReserveEffect | None:
    if mi.free_bytes is None or mi.available_bytes is None:
        return None
    wl = r.low_watermark_bytes
    pagecache = (mi.active_file_bytes or 0) + (mi.inactive_file_bytes or 0)
    recl = mi.raw.get("KReclaimable", mi.slab_reclaimable_bytes or 0)
    pc_kept, recl_kept = min(pagecache // 2, wl), min(recl // 2, wl)
    computed = max(mi.free_bytes - r.total_reserve_bytes + pagecache - pc_kept + recl - recl_kept, 0)
    return ReserveEffect(mi.free_bytes, mi.available_bytes, computed, r.total_reserve_bytes, pc_kept, recl_kept)


def watermarks_for(zones: Sequence[Zone], min_free_kbytes: int, watermark_scale_factor: int = 10) -> tuple[Zone, ...]:
    """The zones with the watermarks the kernel sets for ``min_free_kbytes``
    (``__setup_per_zone_wmarks``, Linux 5.x/6.x), for a what-if or a fake /proc."""
    pages_min = min_free_kbytes // (PAGE_BYTES // 1024)
    special = ("Movable", "HighMem")
    lowmem = sum(z.managed for z in zones if z.name not in special) or 1
    out = []
    for z in zones:
        share = pages_min * z.managed // lowmem
        wmin = min(max(z.managed // 1024, 32), 128) if z.name in special else share
        step = max(share >> 2, z.managed * watermark_scale_factor // 10000)
        out.append(replace(z, min=wmin, low=wmin + step, high=wmin + 2 * step))
    return tuple(out)


# Which reading each rule takes on unified memory (memgap.sizing; see DESIGN.md).
READS_AVAILABLE = ("vLLM on an integrated GPU (start-up check and profile read MemAvailable)",
                   "llama.cpp --fit on unified memory")
READS_FREE = ("TensorRT-LLM (cudaMemGetInfo, about MemFree)", "SGLang (cudaMemGetInfo; MemAvailable in newer releases)",
              "vLLM's CPU worker (the node's MemFree + file pages + SReclaimable)")


def reserve_diagnosis(mi: MemInfo, r: KernelReserve, rule_effects: Sequence[str] = ()) -> Diagnosis | None:
    """The reserve and what it takes from each rule, as probe prints it."""
    e = reserve_effect(mi, r)
    if e is None:
        return None
    mf = f"vm.min_free_kbytes {size((r.min_free_kbytes or 0) * 1024)}" if r.min_free_kbytes is not None else \
        "the min watermarks"
    sentence = (f"Kernel reserve: {mf} (min watermarks {size(r.min_watermark_bytes)}, low {size(r.low_watermark_bytes)}) "
                f"keeps {gib(e.taken_bytes)} of MemFree out of MemAvailable: high watermarks + lowmem reserve "
                f"{gib(e.total_reserve_bytes)}, the low watermark's hold on page cache {gib(e.page_cache_kept_bytes)} "
                f"and on reclaimable slab {gib(e.reclaimable_kept_bytes)} (MemAvailable {gib(e.mem_available_bytes)}, "
                f"si_mem_available from these parts {gib(e.computed_available_bytes)}). Rules that read MemAvailable "
                f"lose it: {'; '.join(READS_AVAILABLE)}. Rules that read MemFree do not, and count it as free: "
                f"{'; '.join(READS_FREE)}.")
    if rule_effects:
        sentence += " " + " ".join(rule_effects)
    numbers: dict[str, Any] = {**e.to_dict(), "min_free_kbytes": r.min_free_kbytes,
                               "min_watermark_bytes": r.min_watermark_bytes, "low_watermark_bytes": r.low_watermark_bytes}
    return Diagnosis(6, KERNEL_RESERVE, sentence, numbers)


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_kernel_reserve(proc_root: Path = Path("/proc")) -> KernelReserve:
    """/proc/zoneinfo and the two sysctls; raises OSError or CollectorParseError."""
    path = proc_root / "zoneinfo"
    zones = parse_zoneinfo(path.read_text(), str(path))
    return KernelReserve(_int_file(proc_root / "sys/vm/min_free_kbytes"),
                         _int_file(proc_root / "sys/vm/watermark_scale_factor"), zones)


def read_reserve_and_meminfo(proc_root: Path = Path("/proc")) -> tuple[MemInfo, KernelReserve]:
    return read_meminfo(proc_root), read_kernel_reserve(proc_root)


def as_dict(r: KernelReserve) -> Mapping[str, Any]:
    return {"min_free_kbytes": r.min_free_kbytes, "watermark_scale_factor": r.watermark_scale_factor,
            "total_reserve_bytes": r.total_reserve_bytes, "low_watermark_bytes": r.low_watermark_bytes,
            "min_watermark_bytes": r.min_watermark_bytes}
