"""A run's memory series: the sampler's columns, one value per sample (None where not
read), the marks, and the kernel's own watermarks. Stored verbatim in the run record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Column names of the series. Sparse columns (smaps, engine metrics) hold None where
# not read at that tick.
HOST_COLUMNS = (
    "host_free_bytes",
    "host_available_bytes",
    "host_cached_bytes",
    "host_shmem_bytes",
    "host_used_bytes",
)
CGROUP_COLUMNS = (
    "cgroup_usage_bytes",
    "cgroup_anon_bytes",
    "cgroup_file_bytes",
    "cgroup_shmem_bytes",
    "cgroup_file_mapped_bytes",
    # Kernel memory charged to the cgroup: v2 memory.stat ``kernel`` (5.18+; the sum of
    # its parts before), v1 memory.kmem.usage_in_bytes. v1 usage_in_bytes includes it.
    "cgroup_kmem_bytes",
)
PROCESS_COLUMNS = (
    "process_rss_bytes",
    "process_anon_bytes",
    "process_file_bytes",
    "process_shmem_bytes",
    "process_count",
)
# gpu_process_used_bytes: NVML's per-process used memory summed over the engine's
# processes (0 when NVML works and none of them holds GPU memory).
# preemptions_total: the engine's counter of requests it evicted for lack of KV
# (vllm:num_preemptions_total); its rise over the workload is what a load point cost.
SPARSE_COLUMNS = ("process_pss_bytes", "kv_usage_ratio", "requests_running", "requests_waiting",
                  "gpu_process_used_bytes", "preemptions_total")
COLUMNS = ("t_s", *HOST_COLUMNS, *CGROUP_COLUMNS, *PROCESS_COLUMNS, *SPARSE_COLUMNS)




@dataclass
class MemorySeries:
    """Raw samples, stored verbatim; everything in ``summary()`` is derived from them."""

    rate_hz: float
    columns: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    marks: dict[str, float] = field(default_factory=dict)
    host_total_bytes: int | None = None
    kernel_cgroup_peak_bytes: int | None = None
    kernel_process_hwm_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.columns["t_s"])

    def row(self, i: int) -> dict[str, Any]:
        return {c: self.columns[c][i] for c in COLUMNS}

    def index_at(self, t_s: float) -> int | None:
        """First sample at or after t_s (the sampler takes one at each mark)."""
        for i, t in enumerate(self.columns["t_s"]):
            if t >= t_s - 1e-9:
                return i
        return len(self) - 1 if len(self) else None

    def peak(self, column: str) -> int | float | None:
        vals = [v for v in self.columns[column] if v is not None]
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_hz": self.rate_hz,
            "columns": self.columns,
            "marks": self.marks,
            "host_total_bytes": self.host_total_bytes,
            "kernel_cgroup_peak_bytes": self.kernel_cgroup_peak_bytes,
            "kernel_process_hwm_bytes": self.kernel_process_hwm_bytes,
            "errors": self.errors,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemorySeries:
        s = cls(rate_hz=float(d["rate_hz"]))
        n = len(d["columns"].get("t_s", []))
        # A column added after the series was stored reads as not measured (None).
        s.columns = {c: list(d["columns"].get(c, [None] * n)) for c in COLUMNS}
        s.marks = dict(d.get("marks", {}))
        s.host_total_bytes = d.get("host_total_bytes")
        s.kernel_cgroup_peak_bytes = d.get("kernel_cgroup_peak_bytes")
        s.kernel_process_hwm_bytes = d.get("kernel_process_hwm_bytes")
        s.errors = list(d.get("errors", []))
        return s
