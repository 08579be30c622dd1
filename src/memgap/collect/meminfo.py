"""Host memory from ``/proc/meminfo``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from memgap.collect._text import parse_kb_fields
from memgap.collect.errors import CollectorParseError

# meminfo key -> MemInfo field. Keys absent on older kernels (MemAvailable before 3.14,
# ShmemHugePages...) stay None.
_FIELDS = {
    "MemTotal": "total_bytes",
    "MemFree": "free_bytes",
    "MemAvailable": "available_bytes",
    "Buffers": "buffers_bytes",
    "Cached": "cached_bytes",
    "Shmem": "shmem_bytes",
    "Active(file)": "active_file_bytes",
    "Inactive(file)": "inactive_file_bytes",
    "AnonPages": "anon_pages_bytes",
    "Mapped": "mapped_bytes",
    "SReclaimable": "slab_reclaimable_bytes",
    "SUnreclaim": "slab_unreclaimable_bytes",
    "SwapTotal": "swap_total_bytes",
    "SwapFree": "swap_free_bytes",
}


@dataclass(frozen=True)
class MemInfo:
    total_bytes: int | None
    free_bytes: int | None
    available_bytes: int | None
    buffers_bytes: int | None
    cached_bytes: int | None
    shmem_bytes: int | None
    active_file_bytes: int | None
    inactive_file_bytes: int | None
    anon_pages_bytes: int | None
    mapped_bytes: int | None
    slab_reclaimable_bytes: int | None
    slab_unreclaimable_bytes: int | None
    swap_total_bytes: int | None
    swap_free_bytes: int | None
    # Every key of the file: kB fields in bytes, unitless ones (HugePages_*) as counts.
    raw: Mapping[str, int] = field(default_factory=dict, repr=False)

    @property
    def used_bytes(self) -> int | None:
        """Memory the kernel could not hand out without swapping: total - MemAvailable."""
        if self.total_bytes is None or self.available_bytes is None:
            return None
        return self.total_bytes - self.available_bytes

    @property
    def used_incl_cache_bytes(self) -> int | None:
        """total - MemFree: page cache counts as used. This is roughly what
        cudaMemGetInfo reports on unified-memory GPUs (GB10, GH200), which is why
        engines there see less room after files were read."""
        if self.total_bytes is None or self.free_bytes is None:
            return None
        return self.total_bytes - self.free_bytes


def parse_meminfo(text: str, source: str = "/proc/meminfo") -> MemInfo:
    raw = parse_kb_fields(text, source)
    if not raw:
        raise CollectorParseError(source, None, "no fields (empty file?)")
    values = {attr: raw.get(key) for key, attr in _FIELDS.items()}
    return MemInfo(**values, raw=raw)


def read_meminfo(proc_root: Path = Path("/proc")) -> MemInfo:
    path = proc_root / "meminfo"
    return parse_meminfo(path.read_text(), str(path))
