"""The sampler's fast reading of keyed kernel files (/proc/meminfo, /proc/PID/status,
memory.stat): the keys it needs and one lookup of them, shared by the Python loop and the
native one (memgap._fastsample mirrors ``lookup``; tests/unit/test_fastsample.py checks
the two against each other)."""

from __future__ import annotations

from memgap.collect.cgroup import MEMORY_FILES, MemoryFiles

# The high-rate path looks up only the keys it needs with str.find (C speed) instead of
# parsing every line in Python: at 100 Hz the full parsers alone cost ~2% of a core, a
# regex scan ~1% (benchmarks/sampler_cost.py). A file where a required key is missing
# (garbage, another kernel's layout) falls back to the full parser, whose error names the
# file and line.
MEMINFO_KEYS = ("MemTotal:", "MemFree:", "MemAvailable:", "Cached:", "Shmem:")
STATUS_KEYS = ("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:", "VmHWM:")


def _cgroup_stat_keys(f: MemoryFiles) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """memory.stat keys read on the high-rate path, and those read where one is missing:
    v1's subtree (total_*) keys, then the cgroup's own; v2's, then the parts of
    ``kernel`` for kernels before 5.18. The order is the native loop's row layout."""
    charged = (f.anon, f.file, f.shmem, f.file_mapped)
    if f.subtree_prefix:
        return tuple(f"{f.subtree_prefix}{k} " for k in charged), tuple(f"{k} " for k in charged)
    return tuple(f"{k} " for k in (*charged, *([f.kernel] if f.kernel else []))), tuple(f"{k} " for k in f.kernel_parts)


CG_STAT_KEYS = {version: _cgroup_stat_keys(f) for version, f in MEMORY_FILES.items()}


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
