"""The Sampler: one run's memory layers sampled in a thread of its own (see the package's
docstring), its life cycle and one tick."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from memgap.collect.cgroup import CgroupRef, read_cgroup_peak_bytes
from memgap.collect.errors import CollectorParseError
from memgap.sampler.native import HOUSEKEEPING_S, NATIVE_MIN_RATE_HZ, NativeLoop, native_module
from memgap.sampler.python_loop import CounterReads, every
from memgap.sampler.rows import append, fill_processes, new_row
from memgap.sampler.sparse import GpuProcessReader, SparseReadings
from memgap.sampler.tree import ProcessTree
from memgap.series import SPARSE_COLUMNS, MemorySeries
from memgap.spec import SamplerConfig


class Sampler:
    def __init__(
        self,
        pid: int,
        cgroup: CgroupRef | None,
        config: SamplerConfig | None = None,
        *,
        proc_root: Path = Path("/proc"),
        metrics_fetch: Callable[[], str | None] | None = None,
        gpu_read: GpuProcessReader | None | Literal["auto"] = "auto",
    ) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self.config = config or SamplerConfig()
        if not (0 < self.config.rate_hz <= 1000) or not math.isfinite(self.config.rate_hz):
            raise ValueError(f"sample rate must be in (0, 1000] Hz, got {self.config.rate_hz}")
        self.proc_root = proc_root
        self.series = MemorySeries(rate_hz=self.config.rate_hz)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._native: NativeLoop | None = None
        want = self.config.native
        mod = native_module() if want is not False else None
        if want and mod is None:
            raise ValueError("the native sampler (memgap._fastsample) is not built here")
        if mod is not None and (want or self.config.rate_hz > NATIVE_MIN_RATE_HZ):
            self._native = NativeLoop(mod, self.config.rate_hz, self.config.full_rate_hz, proc_root, cgroup)
        self._tree = ProcessTree(pid, proc_root, self.config.tree_refresh_s, statm=self._native is not None)
        self._counters = CounterReads(proc_root, cgroup, self.series, self._note)
        self._sparse = SparseReadings(self.config, proc_root, metrics_fetch, gpu_read, self._note)

    @property
    def native(self) -> bool:
        """Whether the high-rate loop runs in memgap._fastsample's native thread."""
        return self._native is not None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._t0 = time.monotonic()
        self.sample()
        self._sparse.start()
        if self._native is not None:
            self._native.fs.start()
            target = self._housekeeping
        else:
            target = self._loop
        self._thread = threading.Thread(target=target, name="memgap-sampler", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, name: str) -> float:
        """Record an event (ready, load_start, end...) and take a sample right then, with
        the process tree walked afresh (an engine forked after the last walk is counted)."""
        with self._lock:
            self._tree.walk_at_next_refresh()
        t = self.sample()
        with self._lock:
            self.series.marks[name] = t
        return t

    def read_kernel_peaks(self) -> None:
        """Read the cgroup's own watermark; call before the cgroup is removed."""
        if self.cgroup is None:
            return
        try:
            # None where the kernel keeps no watermark (v2 before Linux 5.19).
            self.series.kernel_cgroup_peak_bytes = read_cgroup_peak_bytes(self.cgroup)
        except CollectorParseError:
            self.series.kernel_cgroup_peak_bytes = None

    def stop(self) -> MemorySeries:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            if self._native is not None:
                self._native.fs.stop()
                self._sample_native(sample_now=False, final=True)  # the rows taken since the last drain
                self._native.fs.close()
            self._counters.close()
            self._tree.close()
            self._sparse.close()
        hwm = self._tree.kernel_hwm_bytes()
        if hwm is not None:
            self.series.kernel_process_hwm_bytes = hwm
        return self.series

    def _housekeeping(self) -> None:
        """With the native loop: drain its rows, refresh the tree, read the sparse columns."""
        period = max(1.0 / self.config.rate_hz, HOUSEKEEPING_S)
        while not self._stop.wait(period):
            with self._lock:
                self._sample_native(sample_now=False)

    def _loop(self) -> None:
        every(1.0 / self.config.rate_hz, self._stop, self.sample)

    # -- one tick ----------------------------------------------------------------------

    def sample(self) -> float:
        with self._lock:
            if self._native is not None:
                return self._sample_native(sample_now=True)
            t = self.now()
            row = new_row(t)
            self._counters.read_host(row)
            self._counters.read_cgroup(row)
            self._refresh_tree(t)
            status, seen = self._tree.read_status()
            fill_processes(row, status, seen)
            self._sparse.read(row, t, self._tree.keys, processes_seen=seen > 0)
            append(self.series, row)
            return t

    def _note(self, msg: str) -> None:
        if len(self.series.errors) < 50 and msg not in self.series.errors:
            self.series.errors.append(msg)

    def _refresh_tree(self, t: float) -> None:
        if self._tree.refresh(t) and self._native is not None:
            self._native.fs.set_group(self._tree.native_group())

    def _sample_native(self, sample_now: bool, *, final: bool = False) -> float:
        """Append the native loop's rows since the last drain (and one taken now when
        asked, or when none was taken and a sparse reading is due); the sparse columns go
        on the newest. Call with the lock held. Returns the newest row's time."""
        native = self._native
        assert native is not None
        t = self.now()
        self._refresh_tree(t)
        due = self._sparse.due(t)
        raw = native.drain(sample_now)
        if not raw and due and not final:
            raw = native.drain(True)
        if not raw:
            return t
        hwm = native.append_rows(raw, self.series, self._t0, self._note)
        if hwm is not None:
            self._tree.note_hwm(hwm)
        # The sparse readings go on the newest row.
        cols = self.series.columns
        t_last = float(cols["t_s"][-1])
        sparse = dict.fromkeys(SPARSE_COLUMNS)
        self._sparse.read(sparse, t_last, self._tree.keys, processes_seen=bool(cols["process_count"][-1]))
        for c, v in sparse.items():
            if v is not None:
                cols[c][-1] = v
        return t_last
