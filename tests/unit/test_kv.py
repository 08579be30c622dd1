"""KV arithmetic against figures engines print."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.errors import UsageError
from memgap.kv import KvLayout, capacity, kv_dtype, max_context, vllm_max_concurrency

MiB, GiB = 1 << 20, 1 << 30
SMOL = KvLayout(layers=30, kv_heads=3, head_dim_k=64, head_dim_v=64)
DEEPSEEK_7B = KvLayout(layers=28, kv_heads=4, head_dim_k=128, head_dim_v=128)


def test_smollm2_f16_8192_cells_is_llamacpp_180_mib() -> None:
    # llama.cpp printed: size =  180.00 MiB (  2048 cells,  30 layers,  4/4 seqs), K (f16): 90.00 MiB
    assert SMOL.bytes_per_token(kv_dtype("f16")) * 8192 == 180 * MiB


def test_ggml_block_types() -> None:
    # q8_0: 34 bytes per 32 values; q4_0: 18 per 32 (ggml-common.h block_q8_0 / block_q4_0).
    # A K row of SmolLM2 is 3 * 64 = 192 values = 6 blocks.
    assert SMOL.layer_bytes_per_token(kv_dtype("q8_0")) == 2 * 6 * 34
    assert SMOL.layer_bytes_per_token(kv_dtype("q4_0")) == 2 * 6 * 18
    # mixed -ctk q8_0 -ctv f16
    assert SMOL.layer_bytes_per_token(kv_dtype("q8_0"), kv_dtype("f16")) == 6 * 34 + 192 * 2
    assert SMOL.bytes_per_token(kv_dtype("q8_0")) * 8192 / MiB == pytest.approx(95.625)


def test_rows_round_up_to_whole_blocks() -> None:
    odd = KvLayout(layers=1, kv_heads=1, head_dim_k=40, head_dim_v=40)
    assert odd.layer_bytes_per_token(kv_dtype("q4_0")) == 2 * 2 * 18


def test_dtype_aliases_and_unknown() -> None:
    assert kv_dtype("torch.bfloat16").name == "bf16"
    assert kv_dtype("FP8_E4M3").name == "fp8"
    assert kv_dtype("float16").block_bytes == 2
    with pytest.raises(UsageError, match="unknown KV cache type"):
        kv_dtype("q3_k")


def test_seed_study_ratio_of_concurrent_sequences() -> None:
    # DeepSeek-R1-Distill-Qwen-7B, bf16: 28 * 4 * (128+128) * 2 = 57,344 B/token,
    # the "kv size per token" TensorRT-LLM logs for it.
    bf16 = kv_dtype("bf16")
    assert DEEPSEEK_7B.bytes_per_token(bf16) == 57344
    native = capacity(round(37.26 * GiB), DEEPSEEK_7B, bf16, context=8192)
    docker = capacity(round(13.31 * GiB), DEEPSEEK_7B, bf16, context=8192)
    assert native.max_tokens == round(37.26 * GiB) // 57344 == 697677
    assert (native.max_sequences, docker.max_sequences) == (85, 30)
    assert native.max_sequences / docker.max_sequences == pytest.approx(2.83, abs=0.01)


def test_vllm_maximum_concurrency_line() -> None:
    # A public vLLM 0.7 (v0) log of DeepSeek-R1-Distill-Qwen-7B with max_model_len 2048:
    #   model weights take 14.27GiB; ... the rest of the memory reserved for KV Cache is 12.80GiB.
    #   # CUDA blocks: 14984, # CPU blocks: 4681
    #   Maximum concurrency for 2048 tokens per request: 117.06x
    # 14984 blocks of 16 tokens at 57,344 B/token is 12.80 GiB once printed with %.2f.
    bf16 = kv_dtype("bf16")
    exact = 14984 * 16 * 57344
    assert round(exact / GiB, 2) == 12.80
    assert round(vllm_max_concurrency(exact, DEEPSEEK_7B, bf16, context=2048), 2) == 117.06
    # from the printed (rounded) budget alone, within the rounding of %.2f GiB
    assert vllm_max_concurrency(round(12.80 * GiB), DEEPSEEK_7B, bf16, context=2048) == pytest.approx(117.06, abs=0.05)


def test_mla_one_latent_row_per_layer() -> None:
    v3 = KvLayout(layers=61, kv_heads=1, head_dim_k=576, head_dim_v=0, mla_dim=512 + 64)
    assert v3.bytes_per_token(kv_dtype("bf16")) == 61 * 576 * 2


def test_sliding_window_layers_hold_at_most_the_window() -> None:
    gpt_oss = KvLayout(layers=36, kv_heads=8, head_dim_k=64, head_dim_v=64, window=128, swa_layers=18)
    per_layer = 8 * 128 * 2
    assert gpt_oss.sequence_bytes(100, kv_dtype("bf16")) == 36 * 100 * per_layer
    assert gpt_oss.sequence_bytes(8192, kv_dtype("bf16")) == (18 * 8192 + 18 * 128) * per_layer
    cap = capacity(10 * GiB, gpt_oss, kv_dtype("bf16"), context=8192)
    assert cap.max_sequences == 10 * GiB // ((18 * 8192 + 18 * 128) * per_layer)
    assert cap.max_tokens == 10 * GiB // (36 * per_layer)


def test_max_context_inverts_sequence_bytes() -> None:
    bf16 = kv_dtype("bf16")
    assert max_context(round(37.26 * GiB), 85, DEEPSEEK_7B, bf16) == round(37.26 * GiB) // 85 // 57344
    swa = KvLayout(layers=4, kv_heads=1, head_dim_k=8, head_dim_v=8, window=16, swa_layers=2)
    for n in (1, 3):
        ctx = max_context(10_000, n, swa, kv_dtype("f16"))
        assert swa.sequence_bytes(ctx, kv_dtype("f16")) * n <= 10_000
        assert swa.sequence_bytes(ctx + 1, kv_dtype("f16")) * n > 10_000


@given(
    layers=st.integers(1, 128), heads=st.integers(1, 64), hd=st.integers(1, 512),
    budget=st.integers(0, 2**40), ctx=st.integers(1, 2**20),
)
def test_capacity_is_consistent(layers: int, heads: int, hd: int, budget: int, ctx: int) -> None:
    lay = KvLayout(layers=layers, kv_heads=heads, head_dim_k=hd, head_dim_v=hd)
    cap = capacity(budget, lay, kv_dtype("f16"), context=ctx)
    assert cap.max_tokens * cap.bytes_per_token <= budget < (cap.max_tokens + 1) * cap.bytes_per_token
    assert cap.max_sequences == cap.max_tokens // ctx


def test_bad_layouts_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        KvLayout(layers=0, kv_heads=1, head_dim_k=1, head_dim_v=1)
    with pytest.raises(UsageError):
        KvLayout(layers=2, kv_heads=1, head_dim_k=1, head_dim_v=1, swa_layers=1)
    with pytest.raises(UsageError):
        capacity(-1, SMOL, kv_dtype("f16"))


def test_sequences_in_kv_by_cells_and_by_blocks() -> None:
    from memgap.kv import sequences_in_kv

    # llama.cpp: --ctx-size 1024 and 3072 at 256 tokens per request (the sweep test's budgets)
    assert sequences_in_kv(1024, 256) == 4 and sequences_in_kv(3072, 256) == 12
    assert sequences_in_kv(1023, 256) == 3
    # vLLM: 16-token blocks, a 200-token request takes 13 blocks; 4096 tokens = 256 blocks
    assert sequences_in_kv(4096, 200, block_size=16) == 256 // 13 == 19
    assert sequences_in_kv(4096, 200) == 20  # without block rounding one more fits
    # vLLM keeps one block back: 5 blocks of 128 hold two 256-token requests, 4 hold one
    assert sequences_in_kv(640, 256, block_size=128, reserved_blocks=1) == 2
    assert sequences_in_kv(512, 256, block_size=128, reserved_blocks=1) == 1
    assert sequences_in_kv(512, 256, block_size=128) == 2 and sequences_in_kv(0, 256, block_size=16, reserved_blocks=1) == 0
    with pytest.raises(UsageError):
        sequences_in_kv(4096, 0)


@given(st.integers(2, 10**7), st.integers(1, 512), st.sampled_from([1, 16, 128]))
def test_kv_bound_shape_fills_the_budget_at_its_concurrency(kv: int, n: int, block: int) -> None:
    from memgap.kv import kv_bound_shape, sequences_in_kv

    try:
        shape = kv_bound_shape(kv, n, block_size=block)
    except UsageError:
        assert kv // n // block * block < 2
        return
    assert shape.prompt_tokens >= 1 and shape.output_tokens >= 1
    assert shape.prompt_tokens + shape.output_tokens == shape.tokens_per_request
    # exactly n fit: the KV budget binds at n, and request n + 1 waits
    assert sequences_in_kv(kv, shape.tokens_per_request, block_size=block) >= n
    assert sequences_in_kv(kv, shape.tokens_per_request + block, block_size=block) < n or shape.tokens_per_request + block > kv


def test_kv_bound_shape_for_the_sweep_budget() -> None:
    from memgap.kv import kv_bound_shape

    shape = kv_bound_shape(1024, 4)
    assert (shape.tokens_per_request, shape.prompt_tokens, shape.output_tokens) == (256, 64, 192)
    assert kv_bound_shape(1000, 3, prompt_share=0.5).tokens_per_request == 333
    with pytest.raises(UsageError):
        kv_bound_shape(10, 0)
