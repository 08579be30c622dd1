"""vLLM memory lines (v1 engine, with the v0 forms still met in old logs).

Format strings, from vllm-project/vllm:

- vllm/v1/worker/gpu_model_runner.py: ``"Model loading took %s GiB memory and %.6f seconds"``
  (older: ``"Model loading took %.4f GiB and %.6f seconds"``; v0 model_runner.py:
  ``"Loading model weights took %.4f GB"``, computed with ``2**30``).
- vllm/v1/worker/gpu_worker.py: ``"Available KV cache memory: %s GiB"`` (older ``%.2f``;
  a ``(process-scoped)`` suffix in some builds) and the debug line
  ``"Initial free memory: %s GiB; Requested memory: %f (util), %s GiB"``.
- vllm/v1/core/kv_cache_utils.py: ``"GPU KV cache size: %s tokens"`` and
  ``"Maximum concurrency for %s tokens per request: %.2fx"``, numbers formatted
  ``f"{n:,}"``; newer builds print both on one line separated by ``", "``.
- vllm/v1/worker/gpu_model_runner.py: ``"Graph capturing finished in %.0f secs, took %.2f GiB"``
  and ``"CUDA graph pool memory: %s GiB (actual), %s GiB (estimated), ..."``.
- v0 worker.py: ``"the current vLLM instance can use total_gpu_memory (%.2fGiB) x
  gpu_memory_utilization (%.2f) = %.2fGiB"``, ``"model weights take %.2fGiB;
  non_torch_memory takes %.2fGiB; PyTorch activation peak memory takes %.2fGiB; the
  rest of the memory reserved for KV Cache is %.2fGiB."`` and executor_base.py
  ``"# %s blocks: %d, # CPU blocks: %d"``.

Lines carry prefixes such as ``(EngineCore_0 pid=123) INFO 05-06 12:00:01
[gpu_worker.py:123] ``; patterns are searched anywhere in the line. Under tensor
parallelism each rank prints its own per-device figures: lines tagged with a rank
other than 0 are skipped. A figure printed twice (a restart in the same file) keeps
its last value."""

from __future__ import annotations

import re

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
)

_LOAD_RE = re.compile(rf"Model loading took ({NUM}) ?GiB(?: memory)? and ({NUM}) seconds")
_LOAD_OLD_RE = re.compile(rf"Loading model weights took ({NUM}) ?GB")
_AVAIL_RE = re.compile(rf"Available KV cache memory: ({NUM}) ?GiB")
_TOKENS_RE = re.compile(rf"(?:GPU|NPU|XPU|TPU|CPU) KV cache size: ({NUM}) tokens")
_CONC_RE = re.compile(rf"Maximum concurrency for ({NUM}) tokens per request: ({NUM})x")
_GRAPH_RE = re.compile(rf"Graph capturing finished in ({NUM}) secs?, took ({NUM}) ?GiB")
_GRAPH_POOL_RE = re.compile(rf"CUDA graph pool memory: ({NUM}) ?GiB \(actual\)")
_INIT_FREE_RE = re.compile(
    rf"Initial free memory:? ({NUM}) ?GiB; Requested memory: ({NUM}) \(util\), ({NUM}) ?GiB"
)
_TOTAL_RE = re.compile(
    rf"total_gpu_memory \(({NUM}) ?GiB\) x gpu_memory_utilization \(({NUM})\) = ({NUM}) ?GiB"
)
_V0_SPLIT_RE = re.compile(
    rf"model weights take ({NUM}) ?GiB; non_torch_memory takes ({NUM}) ?GiB; "
    rf"(?:PyTorch )?activation peak memory takes ({NUM}) ?GiB;[^;]*KV Cache is ({NUM}) ?GiB"
)
_BLOCKS_RE = re.compile(r"# \w+ blocks: ([0-9][0-9,]*), # CPU blocks: ([0-9][0-9,]*)")


def parse(text: str) -> EngineReport:
    f = Found()
    for line in iter_lines(text):
        if other_rank(line):
            continue
        if m := _LOAD_RE.search(line):
            f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
            f.note("model_load_s", to_float(m.group(2)), line)
        elif m := _LOAD_OLD_RE.search(line):
            f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
        if m := _AVAIL_RE.search(line):
            f.fig("kv_cache_bytes", to_bytes(m.group(1), GiB), line)
        if m := _TOKENS_RE.search(line):
            f.fig("kv_cache_tokens", to_int(m.group(1)), line)
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
        if m := _TOTAL_RE.search(line):
            f.fig("device_total_bytes", to_bytes(m.group(1), GiB), line)
            f.fig("kv_fraction", to_float(m.group(2)), line)
            f.note("requested_bytes", to_bytes(m.group(3), GiB), line)
        if m := _V0_SPLIT_RE.search(line):
            f.fig_once("model_bytes", to_bytes(m.group(1), GiB), line)
            f.note("non_torch_bytes", to_bytes(m.group(2), GiB), line)
            f.note("activation_peak_bytes", to_bytes(m.group(3), GiB), line)
            f.fig("kv_cache_bytes", to_bytes(m.group(4), GiB), line)
        if m := _BLOCKS_RE.search(line):
            f.fig("kv_cache_blocks", to_int(m.group(1)), line)
            f.note("cpu_blocks", to_int(m.group(2)), line)
    pool = f.extra.get("cuda_graph_pool_bytes")
    if "compute_bytes" not in f.figures and isinstance(pool, int):
        f.figures["compute_bytes"] = pool
    return f.report(ENGINE)
