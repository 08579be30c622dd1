"""Readings into a sample row's columns, alike for the Python loop and the native one's
full rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memgap.collect.cgroup import MemoryFiles
from memgap.series import COLUMNS, MemorySeries

Row = dict[str, Any]


def new_row(t_s: float) -> Row:
    row: Row = dict.fromkeys(COLUMNS)
    row["t_s"] = round(t_s, 6)
    return row


def fill_host(row: Row, kb: Mapping[str, int], series: MemorySeries) -> bool:
    """/proc/meminfo's figures (bytes by key); False when MemTotal or MemFree is missing."""
    if "MemTotal" not in kb or "MemFree" not in kb:
        return False
    total, avail = kb["MemTotal"], kb.get("MemAvailable")
    series.host_total_bytes = total
    row["host_free_bytes"] = kb["MemFree"]
    row["host_available_bytes"] = avail
    row["host_cached_bytes"] = kb.get("Cached")
    row["host_shmem_bytes"] = kb.get("Shmem")
    row["host_used_bytes"] = None if avail is None else total - avail
    return True


def fill_cgroup_stat(row: Row, files: MemoryFiles, stat: Mapping[str, int], kmem: int | None) -> None:
    # v1: total_* are hierarchical (include children); the run's cgroup has none, but
    # prefer them so a nested layout (docker --cgroup-parent) reads the same.
    row["cgroup_anon_bytes"] = files.stat_value(stat, files.anon)
    row["cgroup_file_bytes"] = files.stat_value(stat, files.file)
    row["cgroup_shmem_bytes"] = files.stat_value(stat, files.shmem)
    row["cgroup_file_mapped_bytes"] = files.stat_value(stat, files.file_mapped)
    row["cgroup_kmem_bytes"] = kmem if files.kmem is not None else files.stat_kernel(stat)


def fill_processes(row: Row, status: Mapping[str, int], seen: int) -> None:
    """/proc/PID/status sums over the ``seen`` processes of the tree (bytes by key)."""
    row["process_count"] = seen
    if seen:
        row["process_rss_bytes"] = status.get("VmRSS", 0)
        row["process_anon_bytes"] = status.get("RssAnon", 0)
        row["process_file_bytes"] = status.get("RssFile", 0)
        row["process_shmem_bytes"] = status.get("RssShmem", 0)


def append(series: MemorySeries, row: Mapping[str, Any]) -> None:
    for c in COLUMNS:
        series.columns[c].append(row[c])
