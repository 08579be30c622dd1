"""The memory ledger of one run: where the memory was at engine-ready and at peak (pure).

The ledger splits the **measured total** -- host memory not free, ``MemTotal - MemFree``:
what cudaMemGetInfo reports as used on a unified-memory GPU, the figure a TensorRT-LLM or
SGLang sizing rule subtracts from -- into disjoint categories, each with the source of
its number, and an explicit ``unexplained`` remainder, so the categories always add up
to the total::

    run's charge (cgroup usage; without a cgroup: the process tree's RSS)
      model weights in anon memory, KV cache, compute buffers   engine log
      other engine anon memory                                  anon - the above
      page cache charged to the run, mapped / not mapped        memory.stat
      shmem / tmpfs charged to the run                          memory.stat
      kernel memory charged to the run                          kmem / stat kernel
    GPU memory invisible to the cgroup                          NVML per process
    page cache the run maps but another cgroup was charged for  RssFile - mapped_file
    other page cache                                            Cached - the above
    other memory outside the run                                total - Cached - run
    unexplained                                                 total - all the above

``unexplained`` is where independent readings disagree: the cgroup's usage counter
against the sum of its memory.stat parts, and engine figures that exceed the anon memory
they should live in (not all resident). A category that would come out negative is set
to 0 and its shortfall lands in ``unexplained``, with a note.

llama.cpp with mmap (its default) keeps the weights in page cache: they are counted in
the mapped page cache of whichever cgroup read the file first (cgroup v1 and v2 charge a
page to its first toucher), and ``model weights in anon memory`` is 0."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memgap.collect.cgroup import MEMORY_FILES
from memgap.diagnose.gpu_source import gpu_memory_source
from memgap.memory import memory_summary
from memgap.series import MemorySeries

MARKS = ("start", "ready", "peak", "end")

# key -> title, in ledger order. ``unexplained`` is always last.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("model_weights_anon", "model weights in anon memory"),
    ("kv_cache", "KV cache"),
    ("compute_buffers", "compute/activation buffers"),
    ("engine_anon_other", "other engine anon memory"),
    ("page_cache_mapped", "page cache charged to the run, mapped"),
    ("page_cache_unmapped", "page cache charged to the run, not mapped"),
    ("shmem", "shmem/tmpfs charged to the run"),
    ("kernel", "kernel memory charged to the run"),
    ("gpu_outside_cgroup", "GPU memory invisible to the cgroup"),
    ("page_cache_mapped_elsewhere", "page cache the run maps, charged elsewhere"),
    ("outside_page_cache", "other page cache (outside the run)"),
    ("outside_other", "other memory outside the run"),
    ("unexplained", "unexplained"),
)
TITLES: Mapping[str, str] = dict(CATEGORIES)
RUN_CATEGORIES = ("model_weights_anon", "kv_cache", "compute_buffers", "engine_anon_other",
                  "page_cache_mapped", "page_cache_unmapped", "shmem", "kernel")
# What lies outside the run: on a busy host (and at a run's peak) these can dwarf the run's
# own categories, so a chart of the ledger shows them apart, as context.
OUTSIDE_CATEGORIES = ("outside_page_cache", "outside_other")

NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Category:
    key: str
    bytes: int | None  # None: not measured (the source says why)
    source: str

    @property
    def title(self) -> str:
        return TITLES[self.key]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "bytes": self.bytes, "source": self.source}


@dataclass(frozen=True)
class Ledger:
    run_id: str
    at: str  # a mark: ready, peak, start, end
    t_s: float | None
    total_bytes: int | None
    total_source: str
    run_total_bytes: int | None  # the run's own memory (cgroup usage, or RSS - RssFile without one)
    run_total_source: str
    categories: tuple[Category, ...]
    # What the engine said of itself, beside the ledger (not part of the sum): peak,
    # device total, fraction, and engine buffers that live in device memory.
    engine: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def get(self, key: str) -> Category:
        for c in self.categories:
            if c.key == key:
                return c
        raise KeyError(key)

    def bytes(self, key: str) -> int | None:
        return self.get(key).bytes

    @property
    def measured(self) -> bool:
        return self.total_bytes is not None

    def unexplained_fraction(self, of: str = "total") -> float | None:
        u = self.bytes("unexplained")
        base = self.total_bytes if of == "total" else self.run_total_bytes
        if u is None or not base:
            return None
        return abs(u) / base

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "at": self.at, "t_s": self.t_s,
            "total_bytes": self.total_bytes, "total_source": self.total_source,
            "run_total_bytes": self.run_total_bytes, "run_total_source": self.run_total_source,
            "categories": [c.to_dict() for c in self.categories],
            "engine": dict(self.engine), "notes": list(self.notes),
        }


def rows_at(record: Mapping[str, Any], series: Mapping[str, Any] | MemorySeries | None = None
            ) -> dict[str, dict[str, Any] | None]:
    """One sample row per mark: recomputed from the raw series when given, else the
    record's own ``memory.at``."""
    if series is not None:
        s = series if isinstance(series, MemorySeries) else MemorySeries.from_dict(series)
        if len(s):
            return dict(memory_summary(s)["at"])
    at = (record.get("memory") or {}).get("at") or {}
    return {m: at.get(m) for m in MARKS}


def run_ledgers(record: Mapping[str, Any], series: Mapping[str, Any] | MemorySeries | None = None,
                marks: tuple[str, ...] = ("ready", "peak")) -> dict[str, Ledger]:
    rows = rows_at(record, series)
    return {m: ledger_at(record, rows.get(m), at=m) for m in marks}


def run_ledger(record: Mapping[str, Any], series: Mapping[str, Any] | MemorySeries | None = None,
               at: str = "ready") -> Ledger:
    return ledger_at(record, rows_at(record, series).get(at), at=at)


def _g(row: Mapping[str, Any], key: str) -> int | None:
    v = row.get(key)
    return None if v is None else int(v)


def _cgroup_version(record: Mapping[str, Any]) -> int | None:
    v = (record.get("environment_info") or {}).get("cgroup_version")
    if v is None:
        v = (record.get("host") or {}).get("cgroup_version")
    return int(v) if isinstance(v, int | str) and str(v) in ("1", "2") else None


def _gpu_unified(record: Mapping[str, Any]) -> bool | None:
    """True when a GPU of the run's host shares host memory (GB10, GH200), from the
    record's host facts (memgap.hostinfo: NVML's view of each device)."""
    gpus = (record.get("host") or {}).get("gpus")
    if not isinstance(gpus, list) or not gpus:
        return None
    flags = [g.get("unified_memory") for g in gpus if isinstance(g, dict)]
    if any(f is True for f in flags):
        return True
    return False if flags and all(f is False for f in flags) else None


def _engine_on_host(report: Mapping[str, Any]) -> bool | None:
    """Whether the engine's buffers (weights, KV, compute) live in host memory. llama.cpp
    names the buffer's device in each line (``CPU KV buffer``, ``CUDA0 KV buffer``)."""
    ev = " ".join(report.get("evidence") or ())
    if report.get("engine") == "llamacpp" or "llama" in ev:
        devices = {"CUDA", "ROCm", "Metal", "Vulkan", "SYCL"}
        return not any(d in ev for d in devices)
    if report.get("engine") in ("trtllm", "vllm", "sglang"):
        return False  # GPU engines: device memory (unified or not, not the cgroup's anon)
    return None


def ledger_at(record: Mapping[str, Any], row: Mapping[str, Any] | None, *, at: str) -> Ledger:
    """The ledger of one sample row (a mark of the run). Pure."""
    report = record.get("engine_report") or {}
    options = record.get("engine_options") or {}
    on_host = _engine_on_host(report)
    mmap = options.get("mmap")
    engine_info: dict[str, Any] = {
        k: report.get(k) for k in ("peak_bytes", "device_total_bytes", "kv_fraction", "model_bytes",
                                   "kv_cache_bytes", "compute_bytes", "kv_cache_tokens")
    }
    engine_info["buffers_on_host"] = on_host
    notes: list[str] = []
    run_id = str(record.get("run_id"))
    host_total = (record.get("memory") or {}).get("host_total_bytes")

    if row is None or row.get("host_free_bytes") is None or host_total is None:
        src = record.get("source", "memgap")
        notes.append(f"no memory samples at {at} (source: {src}): the memory layers were not measured; "
                     "only the engine's own figures are known")
        cats = [Category(k, None, NOT_MEASURED) for k, _ in CATEGORIES]
        if on_host is not False:
            cats = _replace(cats, "kv_cache", report.get("kv_cache_bytes"), "engine log")
            cats = _replace(cats, "compute_buffers", report.get("compute_bytes"), "engine log")
        return Ledger(run_id, at, None, None, NOT_MEASURED, None, NOT_MEASURED, tuple(cats),
                      engine_info, tuple(notes))

    cgv = _cgroup_version(record)
    has_cg = row.get("cgroup_usage_bytes") is not None
    free, cached = _g(row, "host_free_bytes"), _g(row, "host_cached_bytes")
    total = int(host_total) - (free or 0)
    total_source = "/proc/meminfo MemTotal - MemFree (what cudaMemGetInfo calls used on unified memory)"
    cat: dict[str, tuple[int | None, str]] = {}
    shortfall = 0

    def put(key: str, value: int | None, source: str) -> None:
        nonlocal shortfall
        if value is not None and value < 0:
            shortfall += value
            notes.append(f"{TITLES[key]} came out {value} B (below 0): set to 0, the difference is in unexplained")
            value = 0
        cat[key] = (value, source)

    # Sources in the cgroup version's own names (v1's subtree total_* keys are read where
    # present; a source names the key as the kernel documents it).
    names = MEMORY_FILES[cgv or 2]
    kernel_source = names.kmem or f"{names.stat} {names.kernel}"
    if has_cg:
        usage = _g(row, "cgroup_usage_bytes")
        anon, file_ = _g(row, "cgroup_anon_bytes"), _g(row, "cgroup_file_bytes")
        mapped, shm = _g(row, "cgroup_file_mapped_bytes"), _g(row, "cgroup_shmem_bytes")
        kmem = _g(row, "cgroup_kmem_bytes")
        run_total, run_source = usage, f"cgroup {names.usage}"
        run_charge, run_file = usage, file_
        anon_src = f"cgroup {names.stat} {names.anon}"
    else:
        usage = _g(row, "process_rss_bytes")
        anon, shm = _g(row, "process_anon_bytes"), _g(row, "process_shmem_bytes")
        mapped = _g(row, "process_file_bytes")
        file_ = None if mapped is None or shm is None else mapped + shm
        kmem = None
        # Nothing is charged to the run alone: the files it maps are listed as page cache
        # mapped elsewhere, as in a cgroup that did not read them first, and the run's own
        # memory is the rest of its resident set -- comparable with a cgroup's usage.
        run_charge = None if usage is None or mapped is None else usage - mapped
        run_total = run_charge
        run_source = "/proc/PID/status VmRSS - RssFile, summed over the engine's processes"
        run_file = shm
        anon_src = "/proc/PID/status RssAnon"
        notes.append("the run has no cgroup of its own: its share is the process tree's resident memory; "
                     "page cache it read but does not map cannot be told apart from other page cache")

    # Engine buffers inside the run's anon memory.
    engine_anon = 0
    if on_host and anon is not None:
        w = report.get("model_bytes")
        if mmap is True or mmap is None and w is None:
            put("model_weights_anon", 0 if mmap else None,
                "engine runs with mmap: weights are page cache (mapped)" if mmap else NOT_MEASURED)
        else:
            put("model_weights_anon", w, "engine log (model buffer)")
            engine_anon += w or 0
        for key, val in (("kv_cache", report.get("kv_cache_bytes")), ("compute_buffers", report.get("compute_bytes"))):
            put(key, val, "engine log" if val is not None else NOT_MEASURED)
            engine_anon += val or 0
        put("engine_anon_other", anon - engine_anon, f"{anon_src} - engine buffers above")
    else:
        why = "engine buffers are in device memory (see engine figures)" if on_host is False else NOT_MEASURED
        for key in ("model_weights_anon", "kv_cache", "compute_buffers"):
            put(key, None, why)
        put("engine_anon_other", anon, anon_src if anon is not None else NOT_MEASURED)
        if on_host is False:
            notes.append("the engine's buffers are in device memory: listed under engine figures, not in the sum")

    if has_cg:
        pc = None if file_ is None or shm is None else file_ - shm
        pcm = None if pc is None or mapped is None else min(mapped, pc)
        put("page_cache_mapped", pcm, f"cgroup {names.stat} {names.file_mapped} (bounded by {names.file} - shmem)")
        put("page_cache_unmapped", None if pc is None or pcm is None else pc - pcm,
            f"cgroup {names.stat} {names.file} - shmem - mapped")
        put("shmem", shm, f"cgroup {names.stat} {names.shmem}")
        put("kernel", kmem, f"cgroup {kernel_source}" if kmem is not None else NOT_MEASURED)
        proc_file = _g(row, "process_file_bytes")
        proc_shm = _g(row, "process_shmem_bytes")
        elsewhere = None
        if proc_file is not None and mapped is not None:
            elsewhere = max(proc_file + (proc_shm or 0) - mapped, 0)
        cat["page_cache_mapped_elsewhere"] = (
            elsewhere, "/proc/PID/status RssFile + RssShmem - cgroup mapped (first toucher was another cgroup)"
            if elsewhere is not None else NOT_MEASURED)
    else:
        cat["page_cache_mapped"] = (None, "no cgroup of its own: see page cache mapped elsewhere")
        cat["page_cache_unmapped"] = (None, "not measured: no cgroup of its own")
        put("shmem", shm, "/proc/PID/status RssShmem")
        cat["kernel"] = (None, "not measured: no cgroup of its own")
        elsewhere = mapped
        cat["page_cache_mapped_elsewhere"] = (
            mapped, "/proc/PID/status RssFile (no cgroup of its own: charged to whoever read it first)"
            if mapped is not None else NOT_MEASURED)

    gpu = _g(row, "gpu_process_used_bytes")
    unified = _gpu_unified(record)
    if (source := gpu_memory_source(record, gpu)) is not None:  # which NVML reading, and why (issue 14, case 7)
        notes.append(source.sentence)
    if gpu is None:
        cat["gpu_outside_cgroup"] = (None, "not measured: no NVML per-process reading in this run")
    elif unified:
        cat["gpu_outside_cgroup"] = (gpu, "NVML per-process used memory (unified memory: host memory the "
                                          "cgroup is not charged for)")
    else:
        # Discrete device memory is not host memory: beside the ledger, not in its sum.
        engine_info["gpu_process_used_bytes"] = gpu
        cat["gpu_outside_cgroup"] = (None, "device memory of a discrete GPU (or one not known to be unified): "
                                           "not host memory, listed under engine figures")
        gpu = None

    if cached is not None and run_file is not None:
        put("outside_page_cache", cached - run_file - (elsewhere or 0),
            "/proc/meminfo Cached - the run's page cache and shmem - mapped elsewhere")
    else:
        cat["outside_page_cache"] = (None, NOT_MEASURED)
    if run_charge is not None and cached is not None and run_file is not None:
        put("outside_other", total - (gpu or 0) - run_charge - (cached - run_file),
            "total - Cached - the run's anon and kernel memory")
    else:
        cat["outside_other"] = (None, NOT_MEASURED)

    known = sum(v for k, (v, _) in cat.items() if v is not None)
    cat["unexplained"] = (total - known, "total - every category above")
    if run_total is None:
        notes.append("the run's own charge was not measured at this mark")
    missing = [TITLES[k] for k in RUN_CATEGORIES if cat.get(k, (None, ""))[0] is None
               and not cat[k][1].startswith("engine buffers")]
    if missing:
        notes.append("not measured, so inside unexplained or other categories: " + ", ".join(missing))
    if shortfall:
        notes.append(f"categories clamped at 0 moved {shortfall} B into unexplained")
    cats = [Category(k, cat.get(k, (None, NOT_MEASURED))[0], cat.get(k, (None, NOT_MEASURED))[1])
            for k, _ in CATEGORIES]
    t = row.get("t_s")
    return Ledger(run_id, at, None if t is None else float(t), total, total_source, run_total, run_source,
                  tuple(cats), engine_info, tuple(notes))


def _replace(cats: list[Category], key: str, value: int | None, source: str) -> list[Category]:
    return [Category(key, value, source if value is not None else NOT_MEASURED) if c.key == key else c
            for c in cats]
