"""TensorRT-LLM memory lines, PyTorch and C++ backends.

Format strings, from NVIDIA/TensorRT-LLM:

- tensorrt_llm/_torch/pyexecutor/_util.py (KvCacheCreator):
  ``f"Peak memory during memory usage profiling (torch + non-torch): {peak:.2f} GiB, "
  f"available KV cache memory when calculating max tokens: {avail:.2f} GiB, "
  f"fraction is set {fraction}, kv size per token is {n}. device total memory {total:.2f} GiB, "
  f"temporary kv cache memory during profiling {tmp:.2f} GiB"``; older releases stop
  after ``max tokens: {avail} GiB``, or after ``kv size is {n}``, or end with
  ``device total memory {t} GiB, , tmp kv_mem {tmp} GiB``.
  ``f"Memory used after loading model weights (inside torch) in memory usage profiling: {x:.2f} GiB"``
  (and ``(outside torch)``), ``f"Memory used outside torch (e.g., NCCL and CUDA graphs) in
  memory usage profiling: {x:.2f} GiB"`` (older: without the parenthesis),
  ``f"Estimated max memory in KV cache : {x:.2f} GiB"``, ``f"Estimated max tokens in KV cache : {n}"``.
- cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp:
  ``"[MemUsageChange] Allocated %0.2f GiB for max tokens in paged KV cache (%d)."``,
  ``"Number of tokens per block: %d."``, ``"Number of blocks in KV cache primary pool: %d"``,
  ``"Memory usage when calculating max tokens in paged kv cache: total: %0.2f GiB, available: %0.2f GiB"``.
- checkpoint loading: ``f"Prefetching {x:.2f}GB checkpoint files."`` (``1024**3`` bytes).
- trtllm-bench's report (tensorrt_llm/bench/dataclasses/reporting.py), tab-aligned
  ``key:<tabs/spaces>value`` lines: ``Request Throughput (req/sec):``, ``Total Output
  Throughput (tokens/sec):`` (older: ``Token Throughput (tokens/sec):``, which counted
  output tokens), ``Total Token Throughput (tokens/sec):``, ``Total Latency (ms):``
  (older: ``(seconds)``), ``Number of requests:``, ``KV Memory Percentage: 90.00%``,
  ``TensorRT-LLM Version:`` (also ``TensorRT LLM Version:``).

The PyTorch backend first allocates a small temporary KV cache to profile with, then
the real one: both print ``[MemUsageChange] Allocated``, so the last such line is the
KV cache. C++ lines carry ``[TensorRT-LLM][INFO] ``, Python ones
``[12/20/2025-04:21:10] [TRT-LLM] [I] `` (``[TRT-LLM] [RANK 1] [I]`` on other ranks,
which are skipped: each rank repeats its own per-device figures)."""

from __future__ import annotations

import re

from memgap.engines.logs._found import Found
from memgap.engines.logs._text import NUM, GiB, iter_lines, other_rank, to_bytes, to_float, to_int
from memgap.engines.report import EngineReport

ENGINE = "trtllm"

SIGNATURES = (
    re.compile(r"\[TensorRT-LLM\]|\[TRT-LLM\]"),
    re.compile(r"tensorrt_llm|TensorRT-LLM|trtllm"),
    re.compile(r"for max tokens in paged KV cache"),
    re.compile(r"Peak memory during memory usage profiling"),
)

# The figures each runtime's start-up prints. "pytorch": the PyTorch backend (the
# default since 1.0), which profiles and then sizes the cache from the Peak line;
# "cpp": a TensorRT engine run by the C++ executor, which sizes from free memory.
EXPECTED: dict[str, tuple[str, ...]] = {
    "pytorch": ("peak_bytes", "kv_available_bytes", "kv_cache_bytes", "kv_cache_tokens",
                "model_bytes", "device_total_bytes", "kv_fraction"),
    "cpp": ("device_total_bytes", "free_at_sizing_bytes", "kv_cache_bytes", "kv_cache_tokens"),
}
DEFAULT_VARIANT = "pytorch"

# tensorrt_llm/_torch/pyexecutor/_util.py, the Peak line, in four historic forms:
#   f"Peak memory during memory usage profiling (torch + non-torch): {peak:.2f} GiB,
#   available KV cache memory when calculating max tokens: {avail:.2f} GiB"   (oldest: ends here)
#   + f", fraction is set {fraction}, kv size is {n}"                          (then: ends here)
#   + f". device total memory {total:.2f} GiB, , tmp kv_mem {tmp:.2f} GiB"    (then)
#   current: "..., fraction is set {f}, kv size per token is {n}. device total memory
#   {t:.2f} GiB, temporary kv cache memory during profiling {tmp:.2f} GiB".
# The oldest divides by (1 << 30), later ones by GB = 1 << 30. Each part is matched on
# its own, so every form gives what it has.
_PEAK_RE = re.compile(rf"Peak memory during memory usage profiling[^:]*: ({NUM}) ?GiB")
_AVAIL_RE = re.compile(rf"available KV cache memory when calculating max tokens: ({NUM}) ?GiB")
_FRACTION_RE = re.compile(rf"fraction is set ({NUM})")
_PER_TOKEN_RE = re.compile(rf"kv size (?:per token )?is ({NUM})")
_TOTAL_RE = re.compile(rf"device total memory ({NUM}) ?GiB")
_TMP_RE = re.compile(rf"(?:temporary kv cache memory during profiling|tmp kv_mem) ({NUM}) ?GiB")
# _util.py: f"Memory used after loading model weights (inside torch) in memory usage
# profiling: {x:.2f} GiB" and "(outside torch)"; f"Memory used outside torch (e.g., NCCL
# and CUDA graphs) in memory usage profiling: {x:.2f} GiB" (older: no parenthesis);
# f"Estimated max memory in KV cache : {x:.2f} GiB", f"Estimated max tokens in KV cache : {n}".
_MODEL_IN_RE = re.compile(rf"Memory used after loading model weights \(inside torch\)[^:]*: ({NUM}) ?GiB")
_MODEL_OUT_RE = re.compile(rf"Memory used after loading model weights \(outside torch\)[^:]*: ({NUM}) ?GiB")
_OUTSIDE_RE = re.compile(rf"Memory used outside torch(?: \([^)]*\))? in memory usage profiling: ({NUM}) ?GiB")
_EST_MEM_RE = re.compile(rf"Estimated max memory in KV cache ?: ({NUM}) ?GiB")
_EST_TOK_RE = re.compile(rf"Estimated max tokens in KV cache ?: ({NUM})")
# cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp: "[MemUsageChange] Allocated %0.2f
# GiB for max tokens in paged KV cache (%d)." (the size divided by 1 << 30) and
# "Memory usage when calculating max tokens in paged kv cache: total: %0.2f GiB,
# available: %0.2f GiB" (cudaMemGetInfo, or the host's free RAM with UVM, plus the pool's
# free bytes: what the C++ runtime sizes the cache from).
_ALLOC_RE = re.compile(rf"Allocated ({NUM}) ?GiB for max tokens in paged KV cache \(({NUM})\)")
_CALC_RE = re.compile(
    rf"Memory usage when calculating max tokens in paged kv cache: total: ({NUM}) ?GiB, available: ({NUM}) ?GiB"
)
# kvCacheManager.cpp: "Number of blocks in KV cache primary pool: %d"; newer builds:
# "Max KV cache blocks per sequence: %d [window size=%d], tokens per block=%d, primary
# blocks=%d, secondary blocks=%d, max sequence length=%d".
_BLOCKS_RE = re.compile(r"Number of blocks in KV cache primary pool: (\d+)|\bprimary blocks=(\d+)")
# kvCacheManager.cpp: "Number of tokens per block: %d."
_PER_BLOCK_RE = re.compile(r"Number of tokens per block: (\d+)")
# HfWeightLoader, tensorrt_llm/_torch/models/checkpoints/hf/weight_loader.py (older:
# _torch/pyexecutor/weight_loader.py): f"Prefetching {size / (1024**3):.2f}GB checkpoint files."
_PREFETCH_RE = re.compile(rf"Prefetching ({NUM}) ?GB checkpoint files")

# Lines only the PyTorch backend prints (its sizing, from _util.py).
_PYTORCH_ONLY_RE = re.compile(
    r"Peak memory during memory usage profiling|in memory usage profiling|Estimated max (?:memory|tokens) in KV cache"
)

# trtllm-bench report lines, tensorrt_llm/bench/dataclasses/reporting.py:
# (pattern, extra key, unit factor)
_BENCH: tuple[tuple[re.Pattern[str], str, float], ...] = (
    (re.compile(rf"^Request Throughput \(req/sec\):\s*({NUM}(?:[eE][-+]?\d+)?)"), "request_throughput", 1.0),
    (re.compile(rf"^(?:Total Output|Token) Throughput \(tokens/sec\):\s*({NUM}(?:[eE][-+]?\d+)?)"),
     "output_throughput", 1.0),
    (re.compile(rf"^Total Token Throughput \(tokens/sec\):\s*({NUM}(?:[eE][-+]?\d+)?)"), "token_throughput", 1.0),
    (re.compile(rf"^Total Latency \(ms\):\s*({NUM})"), "total_latency_s", 1e-3),
    (re.compile(rf"^Total Latency \(seconds\):\s*({NUM})"), "total_latency_s", 1.0),
    (re.compile(r"^Number of requests:\s*(\d+)"), "num_requests", 1.0),
)
_BENCH_KV_PCT_RE = re.compile(rf"^KV Memory Percentage:\s*({NUM})%")
_BENCH_VERSION_RE = re.compile(r"^TensorRT[- ]LLM Version:\s*(\S+)")


def parse(text: str) -> EngineReport:
    f = Found()
    allocations = 0
    variant: str | None = None
    found = False
    for line in iter_lines(text):
        if other_rank(line):
            continue
        before = len(f.evidence)
        if m := _PEAK_RE.search(line):
            f.fig("peak_bytes", to_bytes(m.group(1), GiB), line)
        if m := _AVAIL_RE.search(line):
            f.note("kv_available_bytes", to_bytes(m.group(1), GiB), line)
        if m := _FRACTION_RE.search(line):
            f.fig("kv_fraction", to_float(m.group(1)), line)
        if m := _PER_TOKEN_RE.search(line):
            f.note("kv_bytes_per_token", to_int(m.group(1)), line)
        if m := _TOTAL_RE.search(line):
            f.fig("device_total_bytes", to_bytes(m.group(1), GiB), line)
        if m := _TMP_RE.search(line):
            f.note("tmp_kv_bytes", to_bytes(m.group(1), GiB), line)
        if m := _MODEL_IN_RE.search(line):
            f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
        if m := _MODEL_OUT_RE.search(line):
            f.note("model_outside_torch_bytes", to_bytes(m.group(1), GiB), line)
        if m := _OUTSIDE_RE.search(line):
            f.note("outside_torch_bytes", to_bytes(m.group(1), GiB), line)
        if m := _EST_MEM_RE.search(line):
            f.note("estimated_kv_bytes", to_bytes(m.group(1), GiB), line)
        if m := _EST_TOK_RE.search(line):
            f.note("estimated_kv_tokens", to_int(m.group(1)), line)
        if m := _ALLOC_RE.search(line):
            b, n = to_bytes(m.group(1), GiB), to_int(m.group(2))
            if b is not None and n is not None:
                allocations += 1
                f.fig("kv_cache_bytes", b, line)
                f.fig("kv_cache_tokens", n, line)
        if m := _CALC_RE.search(line):
            f.fig_once("device_total_bytes", to_bytes(m.group(1), GiB), line)
            f.note("free_at_sizing_bytes", to_bytes(m.group(2), GiB), line)
        if m := _BLOCKS_RE.search(line):
            f.fig("kv_cache_blocks", to_int(m.group(1) or m.group(2)), line)
        if m := _PER_BLOCK_RE.search(line):
            f.note("tokens_per_block", to_int(m.group(1)), line)
        if m := _PREFETCH_RE.search(line):
            f.note("prefetch_bytes", to_bytes(m.group(1), GiB), line)
        if len(f.evidence) > before:
            found = True
            variant = _variant(variant, line)
        _bench_line(f, line)
    if "kv_fraction" not in f.figures and isinstance(f.extra.get("kv_memory_percent"), float):
        f.figures["kv_fraction"] = float(f.extra["kv_memory_percent"]) / 100
    if allocations:
        f.extra["kv_allocations"] = allocations
    elif "kv_available_bytes" in f.extra:
        # No allocation line (log cut short, or a release that does not print it): the
        # budget the sizing rule computed is the best figure there is.
        avail = f.extra["kv_available_bytes"]
        if isinstance(avail, int):
            f.figures["kv_cache_bytes"] = avail
    # The benchmark summary is evidence too, but not a memory line: found_any says
    # whether any start-up memory line was there.
    if found and variant is None:  # only lines both runtimes print: say the default
        variant = DEFAULT_VARIANT
    return f.report(ENGINE).with_coverage(
        EXPECTED[variant or DEFAULT_VARIANT], variant=variant, found_any=found
    )


def _variant(current: str | None, line: str) -> str | None:
    """PyTorch-backend lines decide; C++ sizing lines alone mean the C++ executor."""
    if current == "pytorch" or _PYTORCH_ONLY_RE.search(line):
        return "pytorch"
    if _CALC_RE.search(line):
        return "cpp"
    return current


def _bench_line(f: Found, line: str) -> None:
    # The report is printed without a logger prefix; anchor at the line start so log
    # lines that merely quote these words do not count.
    text = line.strip()
    if not text or text[0] not in "RTNKt":
        return
    for pattern, key, factor in _BENCH:
        if m := pattern.search(text):
            v = to_float(m.group(1))
            f.note(key, None if v is None else (int(v) if key == "num_requests" else v * factor), line)
            return
    if m := _BENCH_KV_PCT_RE.search(text):
        f.note("kv_memory_percent", to_float(m.group(1)), line)
    elif m := _BENCH_VERSION_RE.search(text):
        f.note("trtllm_version", m.group(1), line)
