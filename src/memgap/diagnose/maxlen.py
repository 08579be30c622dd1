"""Case 8: the KV cache cannot hold one request of the longest length the engine was
started for, so vLLM refuses to start.

vLLM checks, once it knows its cache, that one request of ``max_model_len`` tokens fits
in it (vllm/v1/core/kv_cache_utils.py ``_check_enough_kv_cache_memory``), and refuses
with "To serve at least one request with the model's max seq len (N), (X GiB KV cache is
needed, which is larger than the available KV cache memory (Y GiB). Based on the
available memory, the estimated maximum model length is M." -- or, with nothing left for
the cache at all, "No available memory for the cache blocks". Both are among the
failures people report most (a long default context on a small card or a busy machine).
The figures come from the engine's own refusal (``memgap.engines.logs.vllm``): its
sizes print in GiB with two decimals, so a small cache prints as 0.0 and is left
unknown; the estimate and the block counts are exact."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from memgap.diagnose.base import KV_BELOW_MAX_LEN, NO_MEMORY_FOR_KV, Diagnosis, gib

MAX_LEN_REFUSAL = "To serve at least one request"
NO_MEMORY_REFUSAL = "No available memory for the cache blocks"


def is_kv_refusal(refusal: str | None) -> bool:
    return bool(refusal) and str(refusal).startswith((MAX_LEN_REFUSAL, NO_MEMORY_REFUSAL))


def max_len_cause(report: Mapping[str, Any], *, engine: str = "vLLM") -> Diagnosis | None:
    """Why the engine refused for want of KV cache, with the length that would have fit
    and what to change; None for any other refusal (or none)."""
    refusal = str(report.get("refusal") or "")
    extra: Mapping[str, Any] = report.get("extra") or {}
    if refusal.startswith(NO_MEMORY_REFUSAL):
        frac, total = report.get("kv_fraction"), report.get("device_total_bytes")
        budget = f" (gpu_memory_utilization {frac:g} of {gib(total)})" if frac is not None and total else ""
        return Diagnosis(8, NO_MEMORY_FOR_KV,
                         f"{engine} refused to start: no memory was left for the KV cache once the model and its "
                         f"buffers were in its budget{budget}.", {"utilization": frac, "total_bytes": total},
                         "Raise --gpu-memory-utilization, give an explicit --kv-cache-memory, or use a smaller model.")
    if not refusal.startswith(MAX_LEN_REFUSAL):
        return None
    max_len, fits = extra.get("max_model_len"), extra.get("estimated_max_model_len")
    needed, available = extra.get("kv_needed_bytes"), extra.get("kv_available_bytes")
    blocks, from_memory = report.get("kv_cache_blocks"), extra.get("blocks_from_memory")
    numbers: dict[str, Any] = {"max_model_len": max_len, "estimated_max_model_len": fits, "kv_needed_bytes": needed,
                               "kv_available_bytes": available, "kv_cache_blocks": blocks,
                               "blocks_from_memory": from_memory}
    what = f"max_model_len {max_len}" if max_len is not None else "its max_model_len"
    sentence = f"{engine} refused to start: its KV cache cannot hold one request of {what}"
    if needed is not None and available is not None:
        sentence += f" ({gib(needed)} needed, {gib(available)} there)"
    if fits:
        sentence += f"; at most {fits} tokens fit"
    sentence += "."
    more = "give the KV cache more room (--kv-cache-memory, or a higher --gpu-memory-utilization)"
    if isinstance(blocks, int) and from_memory is not None:
        sentence += (f" Its cache was set to {blocks} blocks (--num-gpu-blocks-override; the memory allowed "
                     f"{from_memory:,}), and vLLM keeps one of them back.")
        if fits and max_len and blocks > 1 and fits % (blocks - 1) == 0:
            block = fits // (blocks - 1)
            need = math.ceil(max_len / block) + 1
            numbers["blocks_needed"] = need
            more = f"override with at least {need} blocks of {block} tokens"
    remedy = (f"Start with --max-model-len {fits} or less, or {more}." if fits else
              f"Lower --max-model-len, or {more}.")
    return Diagnosis(8, KV_BELOW_MAX_LEN, sentence, numbers, remedy)
