"""SGLang memory lines.

Format strings, from sgl-project/sglang (python/sglang/srt/...):

- model_executor/model_runner.py: ``f"Load weight begin. avail mem={x:.2f} GB"``,
  ``f"Load weight end. type={...}, dtype={...}, avail mem={x:.2f} GB, mem usage={y:.2f} GB."``
  (newer builds insert ``elapsed=... s, `` first; old ones stop after ``avail mem``),
  ``f"Memory pool end. avail mem={x:.2f} GB"``, and
  ``f"Capture cuda graph end. Time elapsed: {t:.2f} s. mem usage={x:.2f} GB. avail mem={y:.2f} GB."``
  (both orders of the last two occur; old builds print neither).
- mem_cache/memory_pool.py: ``f"KV Cache is allocated. #tokens: {n}, K size: {k:.2f} GB, V size: {v:.2f} GB"``;
  MLA pools: ``f"KV Cache is allocated. #tokens: {n}, KV size: {x:.2f} GB"``.
- managers/scheduler.py: ``f"max_total_num_tokens={n}, chunked_prefill_size=..., ...,
  context_len=..., available_gpu_mem={x:.2f} GB"``.
- server_args dump: ``mem_fraction_static=0.88``.

"GB" is ``1 << 30`` bytes throughout (``GB = 1024 * 1024 * 1024`` in memory_pool.py,
``get_available_gpu_memory`` divides by ``1 << 30``). Lines start with
``[2025-01-01 12:00:00 TP0] ``; lines of ranks other than 0 are skipped."""

from __future__ import annotations

import re

from memgap.engines.logs._found import Found
from memgap.engines.logs._text import NUM, GiB, iter_lines, other_rank, to_bytes, to_float, to_int
from memgap.engines.report import EngineReport

ENGINE = "sglang"

SIGNATURES = (
    re.compile(r"\bsglang\b", re.IGNORECASE),
    re.compile(r"Load weight (?:begin|end)\. "),
    re.compile(r"KV Cache is allocated\. "),
    re.compile(r"max_total_num_tokens="),
    re.compile(r"The server is fired up and ready to roll"),
)

_LOAD_BEGIN_RE = re.compile(rf"Load weight begin\. avail mem=({NUM}) ?GB")
_LOAD_END_RE = re.compile(r"Load weight end\. ")
_AVAIL_RE = re.compile(rf"avail mem=({NUM}) ?GB")
_USAGE_RE = re.compile(rf"mem usage=({NUM}) ?GB")
_ELAPSED_RE = re.compile(rf"(?:Time elapsed: |elapsed=)({NUM}) ?s")
_KV_KV_RE = re.compile(rf"KV Cache is allocated\..*?#tokens: ({NUM}), K size: ({NUM}) ?GB, V size: ({NUM}) ?GB")
_KV_MLA_RE = re.compile(rf"KV Cache is allocated\..*?#tokens: ({NUM}), KV size: ({NUM}) ?GB")
_POOL_END_RE = re.compile(rf"Memory pool end\. avail mem=({NUM}) ?GB")
_GRAPH_END_RE = re.compile(r"Capture (?:cuda|target decode CUDA) graph end\.")
_MAX_TOKENS_RE = re.compile(r"\bmax_total_num_tokens=(\d+)")
_AVAIL_GPU_RE = re.compile(rf"available_gpu_mem=({NUM}) ?GB")
_MAX_RUNNING_RE = re.compile(r"\bmax_running_requests=(\d+)")
_CONTEXT_RE = re.compile(r"\bcontext_len=(\d+)")
_FRACTION_RE = re.compile(rf"\bmem_fraction_static=({NUM})")


def parse(text: str) -> EngineReport:
    f = Found()
    for line in iter_lines(text):
        if other_rank(line):
            continue
        if m := _LOAD_BEGIN_RE.search(line):
            f.note("avail_before_load_bytes", to_bytes(m.group(1), GiB), line)
        elif _LOAD_END_RE.search(line):
            if m := _USAGE_RE.search(line):
                f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
            if m := _AVAIL_RE.search(line):
                f.note("avail_after_load_bytes", to_bytes(m.group(1), GiB), line)
        elif m := _KV_KV_RE.search(line):
            k, v = to_bytes(m.group(2), GiB), to_bytes(m.group(3), GiB)
            f.fig("kv_cache_tokens", to_int(m.group(1)), line)
            if k is not None and v is not None:
                f.fig("kv_cache_bytes", k + v, line)
                f.note("k_bytes", k, line)
                f.note("v_bytes", v, line)
        elif m := _KV_MLA_RE.search(line):
            f.fig("kv_cache_tokens", to_int(m.group(1)), line)
            f.fig("kv_cache_bytes", to_bytes(m.group(2), GiB), line)
        elif m := _POOL_END_RE.search(line):
            f.note("avail_after_pool_bytes", to_bytes(m.group(1), GiB), line)
        elif _GRAPH_END_RE.search(line):
            if m := _USAGE_RE.search(line):
                f.fig("compute_bytes", to_bytes(m.group(1), GiB), line)
            if m := _AVAIL_RE.search(line):
                f.note("avail_after_graph_bytes", to_bytes(m.group(1), GiB), line)
            if m := _ELAPSED_RE.search(line):
                f.note("graph_capture_s", to_float(m.group(1)), line)
        elif m := _MAX_TOKENS_RE.search(line):
            # Scheduler's view of the pool; the memory pool's own line wins when present.
            f.fig_once("kv_cache_tokens", to_int(m.group(1)), line)
            f.note("max_total_num_tokens", to_int(m.group(1)), line)
            if m2 := _AVAIL_GPU_RE.search(line):
                f.note("available_gpu_mem_bytes", to_bytes(m2.group(1), GiB), line)
            if m2 := _MAX_RUNNING_RE.search(line):
                f.note("max_running_requests", to_int(m2.group(1)), line)
            if m2 := _CONTEXT_RE.search(line):
                f.note("context_len", to_int(m2.group(1)), line)
        if m := _FRACTION_RE.search(line):
            f.fig("kv_fraction", to_float(m.group(1)), line)
    return f.report(ENGINE)
