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

import array
import importlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from memgap.collect.cgroup import CgroupRef, parse_memory_stat
from memgap.collect.engine_metrics import engine_metrics
from memgap.collect.fastread import FileReader
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.nvml import NvmlProcessMemory
from memgap.collect.process import ProcessKey, process_key, process_tree, read_smaps_rollup

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
SPARSE_COLUMNS = ("process_pss_bytes", "kv_usage_ratio", "requests_running", "requests_waiting",
                  "gpu_process_used_bytes")
COLUMNS = ("t_s", *HOST_COLUMNS, *CGROUP_COLUMNS, *PROCESS_COLUMNS, *SPARSE_COLUMNS)
# What a totals-only row of the native loop holds (see SamplerConfig.full_rate_hz).
_FAST_COLUMNS = ("t_s", "cgroup_usage_bytes", "process_rss_bytes", "process_count")


@dataclass(frozen=True)
class SamplerConfig:
    rate_hz: float = 10.0
    smaps_interval_s: float = 5.0
    tree_refresh_s: float = 1.0
    metrics_interval_s: float = 1.0
    gpu_interval_s: float = 1.0
    # The high-rate loop in memgap._fastsample's native thread (None: when it is built
    # and the rate is above NATIVE_MIN_RATE_HZ; False: always the Python loop).
    native: bool | None = None
    # Native loop only: the breakdowns (/proc/meminfo, memory.stat, /proc/PID/status) are
    # read at most this often; every tick reads the totals (the cgroup's usage, each
    # process's resident memory from /proc/PID/statm). Marks always read everything.
    full_rate_hz: float = 10.0


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


# The high-rate path looks up only the keys it needs with str.find (C speed) instead of
# parsing every line in Python: at 100 Hz the full parsers alone cost ~2% of a core, a
# regex scan ~1% (benchmarks/sampler_cost.py). A file where a required key is missing
# (garbage, another kernel's layout) falls back to the full parser, whose error names the
# file and line.
_MEMINFO_KEYS = ("MemTotal:", "MemFree:", "MemAvailable:", "Cached:", "Shmem:")
_STATUS_KEYS = ("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:", "VmHWM:")
# v1's total_* are hierarchical; the plain keys are read only where total_* are missing.
_CG_STAT_KEYS = {
    1: (("total_rss ", "total_cache ", "total_shmem ", "total_mapped_file "),
        ("rss ", "cache ", "shmem ", "mapped_file ")),
    2: (("anon ", "file ", "shmem ", "file_mapped ", "kernel "),
        ("kernel_stack ", "pagetables ", "sec_pagetables ", "percpu ", "sock ", "vmalloc ", "slab ")),
}


def _lookup(text: str, keys: tuple[str, ...], kb: bool) -> dict[str, int]:
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


def _stat_get(stat: Mapping[str, int], version: int, v2: str, v1: tuple[str, ...]) -> int | None:
    if version == 2:
        return stat.get(v2)
    for k in v1:
        if k in stat:
            return stat[k]
    return None


_V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock", "vmalloc", "slab")


def _v2_kernel(stat: Mapping[str, int]) -> int | None:
    """v2 ``kernel`` (Linux 5.18+), or the sum of its parts on older kernels."""
    if "kernel" in stat:
        return stat["kernel"]
    parts = [stat[k] for k in _V2_KERNEL_PARTS if k in stat]
    return sum(parts) if parts else None


_SHORT_WAIT_S = 0.05

# With the native loop, a Python thread still drains its rows, refreshes the process
# tree and reads the sparse columns, at this period (or the sample period if longer).
_HOUSEKEEPING_S = 0.5
# Below this rate a Python thread costs next to nothing; the native loop buys nothing.
NATIVE_MIN_RATE_HZ = 4.0


def native_module() -> Any | None:
    """memgap._fastsample, or None where it was not built (no C compiler at install)."""
    try:
        return importlib.import_module("memgap._fastsample")
    except ImportError:
        return None


def _fd(reader: FileReader | None) -> int:
    fd = reader.fileno() if reader is not None else None
    return -1 if fd is None else fd


class _NativeLoop:
    """memgap._fastsample.FastSampler set up with the high-rate path's files and keys,
    and the decoding of its rows into the columns' values."""

    def __init__(self, mod: Any, rate_hz: float, full_rate_hz: float, proc_root: Path,
                 cgroup: CgroupRef | None) -> None:
        self.mod = mod
        # (path, layout, keys, reopen, read on every tick)
        sources: list[tuple[str, int, tuple[str, ...], bool, bool]] = [
            (str(proc_root / "meminfo"), mod.KB, _MEMINFO_KEYS, True, False)]
        self.cg_first: tuple[str, ...] = ()
        self.cg_fallback: tuple[str, ...] = ()
        if cgroup is not None:
            usage = "memory.usage_in_bytes" if cgroup.version == 1 else "memory.current"
            self.cg_first, self.cg_fallback = _CG_STAT_KEYS[cgroup.version]
            sources.append((str(cgroup.path / usage), mod.SINGLE, (), True, True))
            sources.append((str(cgroup.path / "memory.stat"), mod.KV, self.cg_first + self.cg_fallback, True, False))
            if cgroup.version == 1:
                sources.append((str(cgroup.path / "memory.kmem.usage_in_bytes"), mod.SINGLE, (), True, False))
        self.has_cgroup = cgroup is not None
        self.has_kmem = cgroup is not None and cgroup.version == 1
        full_every = max(1, round(rate_hz / full_rate_hz)) if full_rate_hz > 0 else 1
        self.fs = mod.FastSampler(rate_hz, sources, mod.KB, _STATUS_KEYS,
                                  tuple(mod.MAX if k == "VmHWM:" else mod.SUM for k in _STATUS_KEYS),
                                  full_every=full_every)
        self.row_len: int = self.fs.row_len
        self.missing: int = mod.MISSING
        # Where a totals-only row keeps its values.
        self.i_usage: int | None = 2 + len(_MEMINFO_KEYS) if cgroup is not None else None
        self.i_count: int = self.row_len - 2
        self.i_resident: int = self.row_len - 1

    def drain(self, sample_now: bool) -> array.array[int]:
        """The rows since the last drain, flat, ``row_len`` values each (``self.missing``
        where a tick did not read it)."""
        raw = array.array("q")
        raw.frombytes(self.fs.drain(sample_now=sample_now))
        return raw

    def split(self, r_raw: list[int]) -> tuple[int, bool, dict[str, int], int | None, dict[str, int],
                                                 int | None, dict[str, int], int, int | None]:
        """(t_ns, full tick, meminfo by key, cgroup usage, memory.stat by key, v1 kmem,
        status sums by key, group files read, statm resident bytes) -- keys as ``_lookup``
        names them, absent where missing or not read at that tick."""
        r: list[int | None] = [None if v == self.missing else v for v in r_raw]
        def named(keys: tuple[str, ...], vals: list[int | None]) -> dict[str, int]:
            return {k.rstrip(": "): v for k, v in zip(keys, vals, strict=True) if v is not None}

        i = 2
        host = named(_MEMINFO_KEYS, r[i:i + len(_MEMINFO_KEYS)])
        i += len(_MEMINFO_KEYS)
        usage: int | None = None
        stat: dict[str, int] = {}
        kmem: int | None = None
        if self.has_cgroup:
            usage = r[i]
            i += 1
            first = named(self.cg_first, r[i:i + len(self.cg_first)])
            i += len(self.cg_first)
            fallback = named(self.cg_fallback, r[i:i + len(self.cg_fallback)])
            i += len(self.cg_fallback)
            stat = first if len(first) >= len(self.cg_first) - 1 else {**first, **fallback}
            if self.has_kmem:
                kmem = r[i]
                i += 1
        status = named(_STATUS_KEYS, r[i:i + len(_STATUS_KEYS)])
        i += len(_STATUS_KEYS)
        t_ns = r[0]
        assert t_ns is not None
        return t_ns, bool(r[1]), host, usage, stat, kmem, status, r[i] or 0, r[i + 1]


GpuProcessReader = Callable[[], "Mapping[int, int | None] | str"]


def nvidia_driver_present(root: Path = Path("/")) -> bool:
    return (root / "proc/driver/nvidia").exists() or (root / "dev/nvidiactl").exists()


def nvml_process_memory() -> Mapping[int, int | None] | str:
    """pid -> GPU memory used, over every GPU (None where NVML cannot say), or why NVML
    cannot be read. One reading; the sampler keeps a ``NvmlProcessMemory`` instead."""
    reader = NvmlProcessMemory()
    try:
        return reader()
    finally:
        reader.close()


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
            usage = "memory.usage_in_bytes" if cgroup.version == 1 else "memory.current"
            self._cg_usage = FileReader(cgroup.path / usage)
            self._cg_stat = FileReader(cgroup.path / "memory.stat")
            if cgroup.version == 1:
                self._cg_kmem = FileReader(cgroup.path / "memory.kmem.usage_in_bytes")
        self._hwm_max: int | None = None
        self._native: _NativeLoop | None = None
        want = self.config.native
        mod = native_module() if want is not False else None
        if want and mod is None:
            raise ValueError("the native sampler (memgap._fastsample) is not built here")
        if mod is not None and (want or self.config.rate_hz > NATIVE_MIN_RATE_HZ):
            self._native = _NativeLoop(mod, self.config.rate_hz, self.config.full_rate_hz, proc_root, cgroup)

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
        name = "memory.max_usage_in_bytes" if self.cgroup.version == 1 else "memory.peak"
        try:
            self.series.kernel_cgroup_peak_bytes = int((self.cgroup.path / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            # memory.peak exists from Linux 5.19 on; older v2 kernels have no watermark.
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
        period = max(1.0 / self.config.rate_hz, _HOUSEKEEPING_S)
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
        if self._fill_host(row, _lookup(text, _MEMINFO_KEYS, kb=True)):
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
        first, fallback = _CG_STAT_KEYS[self.cgroup.version]
        stat = _lookup(stat_text, first, kb=False)
        if len(stat) < len(first) - 1:  # v2 "kernel" is 5.18+; anything else missing: older layout
            stat.update(_lookup(stat_text, fallback, kb=False))
        if not stat:
            try:
                stat = parse_memory_stat(stat_text, source=str(self.cgroup.path / "memory.stat"))
            except Exception as e:  # noqa: BLE001
                self._note(f"cgroup: {e}")
                return
        kmem: int | None = None
        if self.cgroup.version == 1 and self._cg_kmem is not None:
            kmem_text = self._cg_kmem.read_text()
            if kmem_text is not None and kmem_text.strip().isdigit():
                kmem = int(kmem_text)
        self._fill_cgroup_stat(row, stat, kmem)

    def _fill_cgroup_stat(self, row: dict[str, Any], stat: Mapping[str, int], kmem: int | None) -> None:
        assert self.cgroup is not None
        v = self.cgroup.version
        # v1: total_* are hierarchical (include children); the run's cgroup has none, but
        # prefer them so a nested layout (docker --cgroup-parent) reads the same.
        row["cgroup_anon_bytes"] = _stat_get(stat, v, "anon", ("total_rss", "rss"))
        row["cgroup_file_bytes"] = _stat_get(stat, v, "file", ("total_cache", "cache"))
        row["cgroup_shmem_bytes"] = _stat_get(stat, v, "shmem", ("total_shmem", "shmem"))
        row["cgroup_file_mapped_bytes"] = _stat_get(stat, v, "file_mapped", ("total_mapped_file", "mapped_file"))
        row["cgroup_kmem_bytes"] = _v2_kernel(stat) if v == 2 else kmem

    def _refresh_tree(self, t: float) -> None:
        if t - self._tree_at >= self.config.tree_refresh_s:  # also when empty: a gone tree is not re-walked every tick
            self._tree = process_tree(self.pid, self.proc_root)
            self._tree_at = t
            self._sync_status_readers()
            if self._native is not None:
                self._native.fs.set_group([
                    (_fd(self._status.get(k)), _fd(self._statm.get(k))) for k in self._tree])

    def _sample_processes(self, row: dict[str, Any], t: float) -> None:
        self._refresh_tree(t)
        totals = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        seen = 0
        for key in self._tree:
            reader = self._status.get(key)
            text = reader.read_text() if reader is not None else None
            if text is None:
                continue
            kb = _lookup(text, _STATUS_KEYS, kb=True)
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
        fast_none = [cols[c] for c in COLUMNS if c not in _FAST_COLUMNS]
        t_col, usage_col, rss_col, count_col = (cols[c] for c in _FAST_COLUMNS)
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
