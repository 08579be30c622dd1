"""The sampler's fast reading of keyed kernel files (/proc/meminfo, /proc/PID/status,
memory.stat): the keys it needs and one lookup of them, shared by the Python loop and the
native one (memgap._fastsample mirrors ``lookup``; tests/unit/test_fastsample.py checks
the two against each other)."""

from __future__ import annotations

from collections.abc import Mapping

# The high-rate path looks up only the keys it needs with str.find (C speed) instead of
# parsing every line in Python: at 100 Hz the full parsers alone cost ~2% of a core, a
# regex scan ~1% (benchmarks/sampler_cost.py). A file where a required key is missing
# (garbage, another kernel's layout) falls back to the full parser, whose error names the
# file and line.
MEMINFO_KEYS = ("MemTotal:", "MemFree:", "MemAvailable:", "Cached:", "Shmem:")
STATUS_KEYS = ("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:", "VmHWM:")
# v1's total_* are hierarchical; the plain keys are read only where total_* are missing.
CG_STAT_KEYS = {
    1: (("total_rss ", "total_cache ", "total_shmem ", "total_mapped_file "),
        ("rss ", "cache ", "shmem ", "mapped_file ")),
    2: (("anon ", "file ", "shmem ", "file_mapped ", "kernel "),
        ("kernel_stack ", "pagetables ", "sec_pagetables ", "percpu ", "sock ", "vmalloc ", "slab ")),
}


def lookup(text: str, keys: tuple[str, ...], kb: bool) -> dict[str, int]:
    """``{key without its separator: bytes}`` for each key found at a line start; a line
    whose value is not a number (or, with ``kb``, does not end in " kB") is left out."""
    out: dict[str, int] = {}
    for key in keys:
        if text.startswith(key):
            i = len(key)
        else:
            i = text.find("\n" + key)
            if i < 0:
                continue
            i += len(key) + 1
        j = text.find("\n", i)
        if j < 0:
            j = len(text)
        if kb:
            if text[j - 3 : j] != " kB":
                continue
            j -= 3
        try:
            out[key.rstrip(": ")] = int(text[i:j]) * (1024 if kb else 1)
        except ValueError:
            continue
    return out


def stat_get(stat: Mapping[str, int], version: int, v2: str, v1: tuple[str, ...]) -> int | None:
    if version == 2:
        return stat.get(v2)
    for k in v1:
        if k in stat:
            return stat[k]
    return None


V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock", "vmalloc", "slab")


def v2_kernel(stat: Mapping[str, int]) -> int | None:
    """v2 ``kernel`` (Linux 5.18+), or the sum of its parts on older kernels."""
    if "kernel" in stat:
        return stat["kernel"]
    parts = [stat[k] for k in V2_KERNEL_PARTS if k in stat]
    return sum(parts) if parts else None
