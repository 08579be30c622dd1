"""The sampler's sparse columns, read at a low rate onto the newest row: PSS (reading
``smaps_rollup`` walks page tables, so its cost grows with resident memory), the engine's
own metrics (KV usage, requests running and waiting) and each process's GPU memory (NVML)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from memgap.collect.engine_metrics import EngineMetrics, engine_metrics
from memgap.collect.nvml import NvmlProcessMemory
from memgap.collect.process import ProcessKey, read_smaps_rollup
from memgap.sampler.rows import Row
from memgap.spec import SamplerConfig

# {pid: GPU bytes, None where NVML cannot tell}, or why NVML cannot be used here.
GpuProcessReader = Callable[[], "Mapping[int, int | None] | str"]


def nvidia_driver_present(root: Path = Path("/")) -> bool:
    return (root / "proc/driver/nvidia").exists() or (root / "dev/nvidiactl").exists()


class SparseReadings:
    def __init__(
        self,
        config: SamplerConfig,
        proc_root: Path,
        metrics_fetch: Callable[[], str | None] | None,
        gpu_read: GpuProcessReader | None | Literal["auto"],
        note: Callable[[str], None],
    ) -> None:
        self.config = config
        self.proc_root = proc_root
        self.metrics_fetch = metrics_fetch
        self._note = note
        # NVML is tried only where an NVIDIA driver is loaded: importing and initialising
        # it elsewhere costs a failed dlopen per tick for nothing.
        self._gpu_read: GpuProcessReader | None = None
        self._nvml_reader: NvmlProcessMemory | None = None
        if gpu_read == "auto":
            if nvidia_driver_present():
                self._gpu_read = self._nvml_reader = NvmlProcessMemory()  # NVML initialised once per run
        else:
            self._gpu_read = gpu_read
        self._smaps_at = -1e9
        self._metrics_at = -1e9
        self._gpu_at = -1e9
        self._metrics_lock = threading.Lock()
        self._metrics_latest: EngineMetrics | None = None
        self._metrics_stop = threading.Event()
        self._metrics_thread: threading.Thread | None = None

    def start(self) -> None:
        """From now on the engine's metrics are fetched in a thread of their own, each
        reading going onto the next row: under load an engine answers /metrics slowly
        (vLLM on 2 busy cores: 0.2-1.3 s), and fetching in the sampling loop stalled it
        and, with a short timeout, read nothing while requests ran. Without ``start``
        (tests driving ``sample``) the fetch stays in the loop."""
        if self.metrics_fetch is None or self._metrics_thread is not None:
            return
        self._metrics_thread = threading.Thread(target=self._fetch_loop, name="memgap-metrics", daemon=True)
        self._metrics_thread.start()

    def due(self, t: float) -> bool:
        """Whether any sparse column is due at ``t``."""
        c = self.config
        if self._metrics_thread is not None:
            metrics_due = self._metrics_latest is not None
        else:
            metrics_due = self.metrics_fetch is not None and t - self._metrics_at >= c.metrics_interval_s
        return (t - self._smaps_at >= c.smaps_interval_s or metrics_due
                or (self._gpu_read is not None and t - self._gpu_at >= c.gpu_interval_s))

    def read(self, row: Row, t: float, tree: Sequence[ProcessKey], *, processes_seen: bool) -> None:
        """The columns due at ``t`` into ``row``; PSS only where the tree's status files
        were read (a gone tree has no smaps either)."""
        if processes_seen:
            self._read_smaps(row, t, tree)
        self._read_metrics(row, t)
        self._read_gpu(row, t, tree)

    def close(self) -> None:
        self._metrics_stop.set()
        if self._metrics_thread is not None:
            self._metrics_thread.join(timeout=15.0)  # one fetch, bounded by the fetcher's timeout
        if self._nvml_reader is not None:
            self._nvml_reader.close()

    def _read_smaps(self, row: Row, t: float, tree: Sequence[ProcessKey]) -> None:
        if t - self._smaps_at < self.config.smaps_interval_s:
            return
        self._smaps_at = t
        pss = 0
        any_read = False
        for key in tree:
            sm = read_smaps_rollup(key, self.proc_root)
            if sm is not None and sm.pss_bytes is not None:
                pss += sm.pss_bytes
                any_read = True
        row["process_pss_bytes"] = pss if any_read else None

    def _read_gpu(self, row: Row, t: float, tree: Sequence[ProcessKey]) -> None:
        if self._gpu_read is None or t - self._gpu_at < self.config.gpu_interval_s:
            return
        self._gpu_at = t
        got = self._gpu_read()
        if isinstance(got, str):  # NVML cannot be used here: say why once, stop asking
            self._note(f"gpu: {got}")
            self._gpu_read = None
            return
        pids = {k.pid for k in tree}
        present = [got[p] for p in pids if p in got]
        row["gpu_process_used_bytes"] = None if any(v is None for v in present) else sum(
            v for v in present if v is not None)

    def _fetch(self) -> EngineMetrics | None:
        assert self.metrics_fetch is not None
        text = self.metrics_fetch()
        if text is None:
            return None
        try:
            return engine_metrics(text)
        except Exception as e:  # noqa: BLE001 - a bad reading is noted, never fatal
            self._note(f"metrics: {e}")
            return None

    def _fetch_loop(self) -> None:
        while not self._metrics_stop.is_set():
            started = time.monotonic()
            m = self._fetch()
            if m is not None:
                with self._metrics_lock:
                    self._metrics_latest = m
            self._metrics_stop.wait(max(self.config.metrics_interval_s - (time.monotonic() - started), 0.01))

    def _read_metrics(self, row: Row, t: float) -> None:
        if self.metrics_fetch is None:
            return
        if self._metrics_thread is not None:
            with self._metrics_lock:
                m, self._metrics_latest = self._metrics_latest, None
        elif t - self._metrics_at < self.config.metrics_interval_s:
            return
        else:
            self._metrics_at = t
            m = self._fetch()
        if m is None:
            return
        row["kv_usage_ratio"] = m.kv_usage_ratio
        row["requests_running"] = m.requests_running
        row["requests_waiting"] = m.requests_waiting
        row["preemptions_total"] = m.preemptions_total
