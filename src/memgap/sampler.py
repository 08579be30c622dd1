"""Samples every memory layer of one run at a fixed rate, in a thread of its own.

High-rate readings are the O(1) counters (/proc/meminfo, the cgroup's usage and
memory.stat, /proc/PID/status of each process in the engine's tree).
``smaps_rollup`` walks page tables -- its cost grows with resident memory -- so it is read
at a low rate. The kernel's own watermarks (cgroup peak, VmHWM) are kept too, so a spike
between two samples is not missed.

Where memgap._fastsample was built (scripts/setup.sh), the high-rate loop runs in its
native thread: every tick reads the totals (the cgroup's usage, each process's resident
memory from /proc/PID/statm), and at most ``full_rate_hz`` (10 Hz) ticks -- plus every
mark -- also read the breakdown (meminfo, memory.stat, status); the other columns of the
ticks between are None. A Python thread drains its rows twice a second and reads the
sparse columns (PSS, engine metrics, NVML). At 100 Hz this costs under 1% of a core where
a Python loop costs 3% (benchmarks/sampler_cost.py). Without the module, or with
``SamplerConfig(native=False)``, a Python thread reads everything at every tick."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from memgap.collect.cgroup import CgroupRef, parse_memory_stat, read_cgroup_peak_bytes
from memgap.collect.engine_metrics import engine_metrics
from memgap.collect.errors import CollectorParseError
from memgap.collect.fastread import FileReader
from memgap.collect.keyed import CG_STAT_KEYS, MEMINFO_KEYS, STATUS_KEYS, lookup
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.nvml import NvmlProcessMemory
from memgap.collect.process import ProcessKey, process_key, process_tree, read_smaps_rollup
from memgap.native_loop import (
    FAST_COLUMNS,
    HOUSEKEEPING_S,
    NATIVE_MIN_RATE_HZ,
    NativeLoop,
    fd_or_minus_one,
    native_module,
)
from memgap.series import COLUMNS, SPARSE_COLUMNS, MemorySeries
from memgap.spec import SamplerConfig

_SHORT_WAIT_S = 0.05


GpuProcessReader = Callable[[], "Mapping[int, int | None] | str"]


def nvidia_driver_present(root: Path = Path("/")) -> bool:
    return (root / "proc/driver/nvidia").exists() or (root / "dev/nvidiactl").exists()


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
        self.metrics_fetch = metrics_fetch
        # NVML is tried only where an NVIDIA driver is loaded: importing and initialising
        # it elsewhere costs a failed dlopen per tick for nothing.
        self._gpu_read: GpuProcessReader | None = None
        self._nvml_reader: NvmlProcessMemory | None = None
        if gpu_read == "auto":
            if nvidia_driver_present():
                self._gpu_read = self._nvml_reader = NvmlProcessMemory()  # NVML initialised once per run
        else:
            self._gpu_read = gpu_read
        self._gpu_at = -1e9
        self.series = MemorySeries(rate_hz=self.config.rate_hz)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._tree: list[ProcessKey] = []
        self._tree_at = -1e9
        self._smaps_at = -1e9
        self._metrics_at = -1e9
        self._hwm: dict[ProcessKey, int] = {}
        self._status: dict[ProcessKey, FileReader] = {}
        self._statm: dict[ProcessKey, FileReader] = {}  # native loop only
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
        self._hwm_max: int | None = None
        self._native: NativeLoop | None = None
        want = self.config.native
        mod = native_module() if want is not False else None
        if want and mod is None:
            raise ValueError("the native sampler (memgap._fastsample) is not built here")
        if mod is not None and (want or self.config.rate_hz > NATIVE_MIN_RATE_HZ):
            self._native = NativeLoop(mod, self.config.rate_hz, self.config.full_rate_hz, proc_root, cgroup)

    @property
    def native(self) -> bool:
        """Whether the high-rate loop runs in memgap._fastsample's native thread."""
        return self._native is not None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._t0 = time.monotonic()
        self.sample()
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
            self._tree_at = -1e9
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
            for r in (self._meminfo, self._cg_usage, self._cg_stat, self._cg_kmem, *self._status.values(),
                      *self._statm.values()):
                if r is not None:
                    r.close()
            self._status.clear()
            self._statm.clear()
            if self._nvml_reader is not None:
                self._nvml_reader.close()
        hwm = [*self._hwm.values(), *([] if self._hwm_max is None else [self._hwm_max])]
        if hwm:
            self.series.kernel_process_hwm_bytes = max(hwm)
        return self.series

    def _housekeeping(self) -> None:
        """With the native loop: drain its rows, refresh the tree, read the sparse columns."""
        period = max(1.0 / self.config.rate_hz, HOUSEKEEPING_S)
        while not self._stop.wait(period):
            with self._lock:
                self._sample_native(sample_now=False)

    def _loop(self) -> None:
        period = 1.0 / self.config.rate_hz
        next_t = time.monotonic() + period
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0:
                # Short waits sleep: Event.wait allocates and takes two locks per call, a
                # third of the cost of an idle 100 Hz loop here. stop() then waits at most
                # one short period; long waits stay interruptible.
                if delay <= _SHORT_WAIT_S:
                    time.sleep(delay)
                    if self._stop.is_set():
                        break
                elif self._stop.wait(delay):
                    break
            self.sample()
            next_t += period
            # After a stall (suspend, overloaded box), skip missed ticks instead of bursting.
            if next_t < time.monotonic():
                next_t = time.monotonic() + period

    # -- one tick ----------------------------------------------------------------------

    def sample(self) -> float:
        with self._lock:
            if self._native is not None:
                return self._sample_native(sample_now=True)
            t = self.now()
            row: dict[str, Any] = {c: None for c in COLUMNS}
            row["t_s"] = round(t, 6)
            self._sample_host(row)
            self._sample_cgroup(row)
            self._sample_processes(row, t)
            self._sample_metrics(row, t)
            self._sample_gpu(row, t)
            self._append(row)
            return t

    def _note(self, msg: str) -> None:
        if len(self.series.errors) < 50 and msg not in self.series.errors:
            self.series.errors.append(msg)

    def _sample_host(self, row: dict[str, Any]) -> None:
        text = self._meminfo.read_text()
        if text is None:
            self._note("host: /proc/meminfo unreadable")
            return
        if self._fill_host(row, lookup(text, MEMINFO_KEYS, kb=True)):
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

    def _fill_host(self, row: dict[str, Any], kb: Mapping[str, int]) -> bool:
        if "MemTotal" not in kb or "MemFree" not in kb:
            return False
        total, avail = kb["MemTotal"], kb.get("MemAvailable")
        self.series.host_total_bytes = total
        row["host_free_bytes"] = kb["MemFree"]
        row["host_available_bytes"] = avail
        row["host_cached_bytes"] = kb.get("Cached")
        row["host_shmem_bytes"] = kb.get("Shmem")
        row["host_used_bytes"] = None if avail is None else total - avail
        return True

    def _sample_cgroup(self, row: dict[str, Any]) -> None:
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
        self._fill_cgroup_stat(row, stat, kmem)

    def _fill_cgroup_stat(self, row: dict[str, Any], stat: Mapping[str, int], kmem: int | None) -> None:
        assert self.cgroup is not None
        f = self.cgroup.files
        # v1: total_* are hierarchical (include children); the run's cgroup has none, but
        # prefer them so a nested layout (docker --cgroup-parent) reads the same.
        row["cgroup_anon_bytes"] = f.stat_value(stat, f.anon)
        row["cgroup_file_bytes"] = f.stat_value(stat, f.file)
        row["cgroup_shmem_bytes"] = f.stat_value(stat, f.shmem)
        row["cgroup_file_mapped_bytes"] = f.stat_value(stat, f.file_mapped)
        row["cgroup_kmem_bytes"] = kmem if f.kmem is not None else f.stat_kernel(stat)

    def _refresh_tree(self, t: float) -> None:
        if t - self._tree_at >= self.config.tree_refresh_s:  # also when empty: a gone tree is not re-walked every tick
            self._tree = process_tree(self.pid, self.proc_root)
            self._tree_at = t
            self._sync_status_readers()
            if self._native is not None:
                self._native.fs.set_group([
                    (fd_or_minus_one(self._status.get(k)), fd_or_minus_one(self._statm.get(k))) for k in self._tree])

    def _sample_processes(self, row: dict[str, Any], t: float) -> None:
        self._refresh_tree(t)
        totals = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        seen = 0
        for key in self._tree:
            reader = self._status.get(key)
            text = reader.read_text() if reader is not None else None
            if text is None:
                continue
            kb = lookup(text, STATUS_KEYS, kb=True)
            if not kb:  # a kernel thread (no Vm* lines), or not a status file
                continue
            seen += 1
            for name in totals:
                totals[name] += kb.get(name, 0)
            if "VmHWM" in kb:
                self._hwm[key] = kb["VmHWM"]
        totals = {"rss": totals["VmRSS"], "anon": totals["RssAnon"], "file": totals["RssFile"],
                  "shmem": totals["RssShmem"]}
        if seen:
            row["process_rss_bytes"] = totals["rss"]
            row["process_anon_bytes"] = totals["anon"]
            row["process_file_bytes"] = totals["file"]
            row["process_shmem_bytes"] = totals["shmem"]
        row["process_count"] = seen
        if seen:
            self._sample_smaps(row, t)

    def _sample_smaps(self, row: dict[str, Any], t: float) -> None:
        if t - self._smaps_at < self.config.smaps_interval_s:
            return
        self._smaps_at = t
        pss = 0
        any_read = False
        for key in self._tree:
            sm = read_smaps_rollup(key, self.proc_root)
            if sm is not None and sm.pss_bytes is not None:
                pss += sm.pss_bytes
                any_read = True
        row["process_pss_bytes"] = pss if any_read else None

    def _sample_native(self, sample_now: bool, *, final: bool = False) -> float:
        """Append the native loop's rows since the last drain (and one taken now when
        asked, or when none was taken and a sparse reading is due); the sparse columns go
        on the newest. Call with the lock held. Returns the newest row's time."""
        native = self._native
        assert native is not None
        t = self.now()
        self._refresh_tree(t)
        due = (t - self._smaps_at >= self.config.smaps_interval_s
               or (self.metrics_fetch is not None and t - self._metrics_at >= self.config.metrics_interval_s)
               or (self._gpu_read is not None and t - self._gpu_at >= self.config.gpu_interval_s))
        raw = native.drain(sample_now)
        if not raw and due and not final:
            raw = native.drain(True)
        if not raw:
            return t
        cols = self.series.columns
        # Totals-only rows (most of them at high rates) go straight into the columns: no
        # per-row dict, no parsing -- this loop is the Python side's whole per-sample cost.
        fast_none = [cols[c] for c in COLUMNS if c not in FAST_COLUMNS]
        t_col, usage_col, rss_col, count_col = (cols[c] for c in FAST_COLUMNS)
        iu, ic, ir, missing, t0 = native.i_usage, native.i_count, native.i_resident, native.missing, self._t0
        n = native.row_len
        nrows = len(raw) // n
        full = raw[1::n].tolist()
        i = 0
        while i < nrows:
            if full[i]:
                self._append(self._native_full_row(raw[i * n:(i + 1) * n].tolist()))
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
        # The sparse readings go on the newest row.
        t_last = float(t_col[-1])
        sparse: dict[str, Any] = dict.fromkeys(SPARSE_COLUMNS)
        if count_col[-1]:
            self._sample_smaps(sparse, t_last)
        self._sample_metrics(sparse, t_last)
        self._sample_gpu(sparse, t_last)
        for c, v in sparse.items():
            if v is not None:
                cols[c][-1] = v
        return t_last

    def _native_full_row(self, r: list[int]) -> dict[str, Any]:
        assert self._native is not None
        t_ns, _full, host, usage, stat, kmem, status, seen, _resident = self._native.split(r)
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row["t_s"] = round(t_ns / 1e9 - self._t0, 6)
        row["process_count"] = seen
        if not self._fill_host(row, host):
            self._note("host: /proc/meminfo unreadable or without MemTotal/MemFree")
        if self.cgroup is not None:
            row["cgroup_usage_bytes"] = usage
            if stat or kmem is not None:
                self._fill_cgroup_stat(row, stat, kmem)
        if seen:
            row["process_rss_bytes"] = status.get("VmRSS", 0)
            row["process_anon_bytes"] = status.get("RssAnon", 0)
            row["process_file_bytes"] = status.get("RssFile", 0)
            row["process_shmem_bytes"] = status.get("RssShmem", 0)
            if "VmHWM" in status:
                self._hwm_max = max(self._hwm_max or 0, status["VmHWM"])
        return row

    def _append(self, row: Mapping[str, Any]) -> None:
        for c in COLUMNS:
            self.series.columns[c].append(row[c])

    def _sync_status_readers(self) -> None:
        """Keep /proc/PID/status open for each process of the tree. The descriptor is bound
        to the process it was opened for: once that process exits, reads fail (ESRCH) and
        ``reopen=False`` keeps a reused PID from being read as the same process. The start
        time is checked after opening, so a PID reused before the open is refused too."""
        keep = set(self._tree)
        files = [(self._status, "status")] + ([(self._statm, "statm")] if self._native is not None else [])
        for readers, name in files:
            for key in [k for k in readers if k not in keep]:
                readers.pop(key).close()
            for key in self._tree:
                if key in readers:
                    continue
                reader = FileReader(self.proc_root / str(key.pid) / name, reopen=False)
                if reader.read_text() is None or process_key(key.pid, self.proc_root) != key:
                    reader.close()
                    continue
                readers[key] = reader

    def _sample_gpu(self, row: dict[str, Any], t: float) -> None:
        if self._gpu_read is None or t - self._gpu_at < self.config.gpu_interval_s:
            return
        self._gpu_at = t
        got = self._gpu_read()
        if isinstance(got, str):  # NVML cannot be used here: say why once, stop asking
            self._note(f"gpu: {got}")
            self._gpu_read = None
            return
        pids = {k.pid for k in self._tree}
        present = [got[p] for p in pids if p in got]
        row["gpu_process_used_bytes"] = None if any(v is None for v in present) else sum(
            v for v in present if v is not None)

    def _sample_metrics(self, row: dict[str, Any], t: float) -> None:
        if self.metrics_fetch is None or t - self._metrics_at < self.config.metrics_interval_s:
            return
        self._metrics_at = t
        text = self.metrics_fetch()
        if text is None:
            return
        try:
            m = engine_metrics(text)
        except Exception as e:  # noqa: BLE001
            self._note(f"metrics: {e}")
            return
        row["kv_usage_ratio"] = m.kv_usage_ratio
        row["requests_running"] = m.requests_running
        row["requests_waiting"] = m.requests_waiting
        row["preemptions_total"] = m.preemptions_total
