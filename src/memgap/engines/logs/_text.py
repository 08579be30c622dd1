"""Text helpers shared by the engine log parsers: ANSI stripping, line splitting,
numbers with thousands separators, and the engines' size units.

Every engine here prints binary units: llama.cpp divides by 1024*1024 and says MiB;
vLLM, SGLang and TensorRT-LLM divide by ``1 << 30`` (SGLang and older vLLM call it
"GB" all the same: ``GB = 1024 * 1024 * 1024`` in sglang/srt/mem_cache/memory_pool.py,
``get_available_gpu_memory`` returning ``free_gpu_memory / (1 << 30)`` in
sglang/srt/utils.py (0.3.6), ``float_bytes / 2**30`` in vllm's old model_runner;
TensorRT-LLM's ``Prefetching {x:.2f}GB`` divides by ``1024**3``). So every "GB" an
engine prints is read as GiB here."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

MiB = 1 << 20
GiB = 1 << 30

# CSI sequences (colours, cursor moves) and the two-byte ESC forms some loggers emit.
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")

# A number as the engines print it: optional sign, digits with optional thousands
# separators, optional decimals. No nested quantifiers, so no catastrophic
# backtracking on garbage.
NUM = r"-?[0-9][0-9,]*(?:\.[0-9]+)?"

# Ranks other than 0 repeat rank 0's per-device figures; keep rank 0 (or untagged).
# SGLang: "[2025-01-01 12:00:00 TP1]"; vLLM: "(VllmWorker rank=1 pid=..)",
# "(Worker_TP1_EP1 pid=..)", and one engine core per data-parallel rank,
# "(EngineCore_DP1 pid=..)"; TensorRT-LLM's Python logger: "[TRT-LLM] [RANK 1] [I]".
_RANK_RE = re.compile(
    r"\bTP(\d+)\b|\brank[= ](\d+)\b|Worker_TP(\d+)|EngineCore_DP(\d+)|\[RANK (\d+)\]"
)


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


# No engine prints a memory line this long; longer lines (binary junk, a dumped
# tensor) are cut so that no pattern ever scans megabytes.
MAX_LINE = 64 * 1024


def iter_lines(text: str) -> Iterator[str]:
    """Lines without ANSI codes or trailing whitespace; progress bars that redraw with
    ``\\r`` count as separate lines."""
    for raw in re.split(r"\r\n|\r|\n", text):
        line = strip_ansi(raw[:MAX_LINE]).rstrip()
        if line:
            yield line


def to_float(s: str) -> float | None:
    try:
        v = float(s.replace(",", "").replace("_", ""))
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def to_int(s: str) -> int | None:
    v = to_float(s)
    if v is None or v != int(v) or abs(v) > 2**62:
        return None
    return int(v)


def to_bytes(s: str, unit: int) -> int | None:
    v = to_float(s)
    if v is None or abs(v) > 2**62 / unit:
        return None
    return int(round(v * unit))


def other_rank(line: str) -> bool:
    """True for a line tagged with a tensor-parallel rank other than 0."""
    m = _RANK_RE.search(line)
    if not m:
        return False
    rank = next(g for g in m.groups() if g is not None)
    return rank != "0"
