"""SGLang memory lines.

Each pattern below cites the f-string it reads, from sgl-project/sglang
(python/sglang/srt/...), checked in the released wheels 0.3.6, 0.4.6 and 0.5.23.

Units: every "GB" SGLang prints is GiB. ``get_available_gpu_memory`` returns
``free_gpu_memory / (1 << 30)`` (utils.py 0.3.6, utils/common.py 0.5.23) and the KV
pools divide by ``GB = 1024 * 1024 * 1024`` (mem_cache/memory_pool.py). "avail mem" is
``torch.cuda.mem_get_info`` free memory (on integrated GPUs, 0.5.x reads
``psutil.virtual_memory().available`` instead), so "mem usage" is a difference of two
device-wide readings, not the model's own allocation.

Lines start with ``[2025-01-01 12:00:00 TP0] `` (``DP0 TP0 EP0`` under data-parallel
attention); lines of ranks other than 0 are skipped."""

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

# The figures SGLang's start-up prints (0.4.x on); 0.3.x lacks the pool line and
# "mem usage", and the scheduler's available_gpu_mem came in 0.5, so older logs list
# those as missing. "cpu": the CPU backend says available_cpu_mem instead.
EXPECTED: dict[str, tuple[str, ...]] = {
    "gpu": ("model_bytes", "kv_cache_bytes", "kv_cache_tokens", "avail_after_pool_bytes",
            "available_gpu_mem_bytes"),
    "cpu": ("model_bytes", "kv_cache_bytes", "kv_cache_tokens", "avail_after_pool_bytes",
            "available_cpu_mem_bytes"),
}
DEFAULT_VARIANT = "gpu"

# model_executor/model_runner.py load_model():
#   0.3.6: f"Load weight begin. avail mem={x:.2f} GB"
_LOAD_BEGIN_RE = re.compile(rf"Load weight begin\. avail mem=({NUM}) ?GB")
#   0.3.6: f"Load weight end. type={..}, dtype={..}, avail mem={x:.2f} GB"
#   0.4.6: f"Load weight end. type={..}, dtype={..}, avail mem={x:.2f} GB, mem usage={y:.2f} GB."
#   0.5.x: f"Load weight end. elapsed={t:.2f} s, type={..}, [dtype={..}, | {quant_str}, ]
#          avail mem={x:.2f} GB, mem usage={y:.2f} GB."
#   0.5.23 startup_weight_load.py also logs "Load weight end. Committed real weights
#   after CUDA graph capture in %.2f s ..." with no memory figure (ignored).
_LOAD_END_RE = re.compile(r"Load weight end\. ")
_AVAIL_RE = re.compile(rf"avail mem=({NUM}) ?GB")
_USAGE_RE = re.compile(rf"mem usage=({NUM}) ?GB")
_ELAPSED_RE = re.compile(rf"(?:Time elapsed: |elapsed=)({NUM}) ?s")
# mem_cache/memory_pool.py, MHATokenToKVPool:
#   0.4.6: f"KV Cache is allocated. #tokens: {size}, K size: {k:.2f} GB, V size: {v:.2f} GB"
#   0.5.23: f"{label} KV Cache is allocated. dtype: {dtype}, #tokens: {n}, K size: {k:.2f} GB,
#           V size: {v:.2f} GB", where the label is absent for the main pool and e.g.
#           "SWA" for the sliding-window pool of a hybrid model (both are the KV cache);
#           a pool mapped after graph capture says "VA upper bound" instead of "is
#           allocated" (an address-space bound, not memory: ignored).
# MLATokenToKVPool: f"KV Cache is allocated. [dtype: .., ]#tokens: {n}, KV size: {x:.2f} GB"
_KV_LABEL = r"(?:^|[\]\s])(?:([A-Za-z][\w -]{0,40}?) )?KV Cache is allocated\."
_KV_KV_RE = re.compile(
    rf"{_KV_LABEL}.*?#tokens: ({NUM}), K size: ({NUM}) ?GB, V size: ({NUM}) ?GB"
)
_KV_MLA_RE = re.compile(rf"{_KV_LABEL}.*?#tokens: ({NUM}), KV size: ({NUM}) ?GB")
# model_executor/model_runner.py (0.3.6, 0.4.6) and mem_cache/kv_cache_configurator.py
# (0.5.23): f"Memory pool end. avail mem={x:.2f} GB"
_POOL_END_RE = re.compile(rf"Memory pool end\. avail mem=({NUM}) ?GB")
# model_runner.py 0.4.6: f"Capture cuda graph end. Time elapsed: {t:.2f} s. avail
# mem={y:.2f} GB. mem usage={x:.2f} GB." (other builds swap the last two; 0.3.6 prints
# no end line). 0.5.23 model_runner_components/cuda_graph_setup.py: f"Capture {role}
# {decode|verify|prefill} CUDA graph end. [bs=[..], ]elapsed={t:.2f} s, mem usage={x:.2f}
# GB, avail mem={y:.2f} GB." with role "target" or "draft" (one line per graph kind:
# the graphs' memory is their sum).
_GRAPH_END_RE = re.compile(r"Capture ([\w ]{0,60}?)graph end\.")
# managers/scheduler.py:
#   0.3.6: f"max_total_num_tokens={n}, max_prefill_tokens={..}, max_running_requests={..},
#          context_len={..}"
#   0.4.6: the same with chunked_prefill_size={..} second
#   0.5.23: ... f"context_len={..}, available_gpu_mem={x:.2f} GB" ("available_cpu_mem" on CPU)
# A count is whole: "=10.1" is not 10 tokens (found by the format property test).
_MAX_TOKENS_RE = re.compile(r"\bmax_total_num_tokens=(\d+)(?![\d.])")
_AVAIL_DEV_RE = re.compile(rf"\bavailable_(gpu|cpu)_mem=({NUM}) ?GB")
_MAX_RUNNING_RE = re.compile(r"\bmax_running_requests=(\d+)(?![\d.])")
_CONTEXT_RE = re.compile(r"\bcontext_len=(\d+)(?![\d.])")
# server_args dump: "mem_fraction_static=0.88"
_FRACTION_RE = re.compile(rf"\bmem_fraction_static=({NUM})")


class _Start:
    """KV pools and CUDA graphs of one server start. A hybrid model logs one line per
    pool (the full-attention pool and the "SWA" one) and the cache is their sum; a
    speculative draft model, loaded after the target, logs pools and graphs of its own,
    kept apart. A start ends with the scheduler's max_total_num_tokens line (printed
    once the target and the draft are both up); a crash before it followed by a
    restart in the same file would count the restart as a draft (not seen so far)."""

    def __init__(self) -> None:
        self.models = 0  # "Load weight end" lines since the last scheduler line
        self._forget()

    def _forget(self) -> None:
        self.pools: list[int] = []
        self.draft_pools: list[int] = []
        self.tokens: int | None = None
        self.graphs: list[int] = []
        self.draft_graphs: list[int] = []

    def load_end(self) -> None:
        self.models += 1
        if self.models == 1:  # a new start: forget the previous one's figures
            self._forget()

    def scheduler_line(self) -> None:
        self.models = 0

    def pool(self, label: str | None, size: int, tokens: int | None) -> None:
        if self.target():
            self.pools.append(size)
            if label is None and tokens is not None:
                self.tokens = tokens
        else:
            self.draft_pools.append(size)

    def target(self) -> bool:
        """True while the lines belong to the served (target) model."""
        return self.models <= 1

    def graph(self, name: str, size: int) -> bool:
        """Record a graph capture; True when it is the target model's."""
        # 0.5.x names the role ("target decode", "draft extend"); older lines do not.
        ours = "target" in name or ("draft" not in name and self.target())
        (self.graphs if ours else self.draft_graphs).append(size)
        return ours


def parse(text: str) -> EngineReport:
    f = Found()
    start = _Start()
    cpu = False
    memory_lines = 0
    for line in iter_lines(text):
        if other_rank(line):
            continue
        if m := _LOAD_BEGIN_RE.search(line):
            if start.models == 0:  # the target's; a draft's load begins after it
                f.note("avail_before_load_bytes", to_bytes(m.group(1), GiB), line)
            memory_lines += 1
        elif _LOAD_END_RE.search(line) and (m := _AVAIL_RE.search(line)):
            start.load_end()
            if start.models == 1:
                f.note("avail_after_load_bytes", to_bytes(m.group(1), GiB), line)
                if m := _USAGE_RE.search(line):
                    f.fig("model_bytes", to_bytes(m.group(1), GiB), line)
            elif m := _USAGE_RE.search(line):
                f.note("draft_model_bytes", to_bytes(m.group(1), GiB), line)
            memory_lines += 1
        elif m := _KV_KV_RE.search(line):
            k, v = to_bytes(m.group(3), GiB), to_bytes(m.group(4), GiB)
            if k is not None and v is not None:
                start.pool(m.group(1), k + v, to_int(m.group(2)))
                f.note("k_bytes" if m.group(1) is None else f"{_key(m.group(1))}_k_bytes", k, line)
                f.note("v_bytes" if m.group(1) is None else f"{_key(m.group(1))}_v_bytes", v, line)
                memory_lines += 1
        elif m := _KV_MLA_RE.search(line):
            kv = to_bytes(m.group(3), GiB)
            if kv is not None:
                start.pool(m.group(1), kv, to_int(m.group(2)))
                f.note("kv_bytes" if m.group(1) is None else f"{_key(m.group(1))}_kv_bytes", kv, line)
                memory_lines += 1
        elif m := _POOL_END_RE.search(line):
            if start.target():
                f.note("avail_after_pool_bytes", to_bytes(m.group(1), GiB), line)
            memory_lines += 1
        elif g := _GRAPH_END_RE.search(line):
            ours = True
            if (m := _USAGE_RE.search(line)) and (b := to_bytes(m.group(1), GiB)) is not None:
                ours = start.graph(g.group(1), b)
                memory_lines += 1
            if ours and (m := _AVAIL_RE.search(line)):
                f.note("avail_after_graph_bytes", to_bytes(m.group(1), GiB), line)
            if ours and (m := _ELAPSED_RE.search(line)):
                f.note("graph_capture_s", to_float(m.group(1)), line)
        elif m := _MAX_TOKENS_RE.search(line):
            start.scheduler_line()
            f.note("max_total_num_tokens", to_int(m.group(1)), line)
            if m2 := _AVAIL_DEV_RE.search(line):
                cpu = m2.group(1) == "cpu"
                f.note(f"available_{m2.group(1)}_mem_bytes", to_bytes(m2.group(2), GiB), line)
            if m2 := _MAX_RUNNING_RE.search(line):
                f.note("max_running_requests", to_int(m2.group(1)), line)
            if m2 := _CONTEXT_RE.search(line):
                f.note("context_len", to_int(m2.group(1)), line)
            memory_lines += 1
        if m := _FRACTION_RE.search(line):
            f.fig("kv_fraction", to_float(m.group(1)), line)
    if start.pools:
        f.figures["kv_cache_bytes"] = sum(start.pools)
        if len(start.pools) > 1:
            f.extra["kv_pools"] = len(start.pools)
    if start.draft_pools:
        f.extra["draft_kv_cache_bytes"] = sum(start.draft_pools)
    if start.graphs:
        f.figures["compute_bytes"] = sum(start.graphs)
    if start.draft_graphs:
        f.extra["draft_graph_bytes"] = sum(start.draft_graphs)
    # The pool's own count wins; the scheduler's max_total_num_tokens (the same number
    # for plain models) stands in when the pool line is absent (0.3.x).
    tokens = start.tokens if start.tokens is not None else f.extra.get("max_total_num_tokens")
    if isinstance(tokens, int):
        f.figures["kv_cache_tokens"] = tokens
    variant = ("cpu" if cpu else "gpu") if memory_lines else None
    return f.report(ENGINE).with_coverage(
        EXPECTED[variant or DEFAULT_VARIANT], variant=variant, found_any=memory_lines > 0
    )


def _key(label: str) -> str:
    """ "SWA" -> "swa", "MiniMax MSA-v1 main NVFP4" -> "minimax_msa_v1_main_nvfp4"."""
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")
