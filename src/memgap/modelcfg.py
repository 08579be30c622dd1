"""A model's KV layout, read from a Hugging Face ``config.json`` or a GGUF file.

Only what the KV cache and the weights need: layers, KV heads, head dims, MLA latent
size, sliding windows, default dtype, context length and the size of the weights."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from memgap.errors import UsageError
from memgap.kv import KvLayout

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str  # "hf-config" | "gguf"
    layout: KvLayout
    dtype: str | None  # the weights' dtype, which engines use for the cache by default
    max_context: int | None
    weights_bytes: int | None  # files on disk; None when only a config.json is there


def read_model_config(path: Path) -> ModelConfig:
    """``path`` is a ``config.json``, a directory holding one, or a ``.gguf`` file."""
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise UsageError(f"{path}: no config.json in this directory")
        return _from_hf(cfg, weights_dir=path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    if path.suffix.lower() == ".gguf":
        return _from_gguf(path)
    return _from_hf(path, weights_dir=path.parent)


# --- Hugging Face config.json -------------------------------------------------------


def _from_hf(path: Path, *, weights_dir: Path) -> ModelConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not a readable JSON config ({e})") from e
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a config.json must hold a JSON object")
    cfg = hf_text_config(raw)
    layout = hf_layout(cfg, where=str(path))
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or raw.get("torch_dtype") or raw.get("dtype")
    name = raw.get("_name_or_path") or weights_dir.name or path.stem
    ctx = cfg.get("max_position_embeddings")
    return ModelConfig(
        name=str(name),
        source="hf-config",
        layout=layout,
        dtype=str(dtype) if dtype else None,
        max_context=int(ctx) if isinstance(ctx, int) else None,
        weights_bytes=_weights_bytes(weights_dir),
    )


def hf_text_config(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs (Gemma 3, LLaVA, Qwen2-VL...) nest the language model."""
    if "num_hidden_layers" not in raw:
        for key in ("text_config", "language_config", "llm_config"):
            sub = raw.get(key)
            if isinstance(sub, dict) and "num_hidden_layers" in sub:
                return sub
    return raw


def _int(cfg: Mapping[str, Any], key: str, where: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise UsageError(f"{where}: {key} is missing or not an integer ({v!r})")
    return v


def hf_layout(cfg: Mapping[str, Any], *, where: str = "config") -> KvLayout:
    layers = _int(cfg, "num_hidden_layers", where)
    heads = _int(cfg, "num_attention_heads", where)
    kv_heads = cfg.get("num_key_value_heads")
    if kv_heads is None:
        kv_heads = cfg.get("multi_query_group_num") or heads  # ChatGLM names it so
    if not isinstance(kv_heads, int):
        raise UsageError(f"{where}: num_key_value_heads is not an integer ({kv_heads!r})")
    if cfg.get("kv_lora_rank"):
        # MLA (DeepSeek-V2/V3, Kimi K2): one latent row per token and layer.
        mla = _int(cfg, "kv_lora_rank", where) + int(cfg.get("qk_rope_head_dim") or 0)
        return KvLayout(layers=layers, kv_heads=1, head_dim_k=mla, head_dim_v=0, mla_dim=mla)
    head_dim = cfg.get("head_dim")
    if not isinstance(head_dim, int) or head_dim <= 0:
        head_dim = _int(cfg, "hidden_size", where) // heads
    v_dim = cfg.get("v_head_dim")
    head_dim_v = v_dim if isinstance(v_dim, int) and v_dim > 0 else head_dim
    window, swa = _hf_sliding(cfg, layers)
    return KvLayout(layers=layers, kv_heads=kv_heads, head_dim_k=head_dim, head_dim_v=head_dim_v,
                    window=window, swa_layers=swa)


def _hf_sliding(cfg: Mapping[str, Any], layers: int) -> tuple[int | None, int]:
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or window <= 0:
        return None, 0
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        # Gemma 3, gpt-oss, newer Qwen: an explicit per-layer list.
        return window, sum(1 for t in types[:layers] if "sliding" in str(t))
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 1:
        # Gemma 2/3 configs: every pattern-th layer is global, the rest slide.
        return window, layers - layers // pattern
    if cfg.get("use_sliding_window") is False:
        # Qwen2 carries a sliding_window value but switches it off here.
        return None, 0
    if isinstance(cfg.get("max_window_layers"), int) and cfg.get("use_sliding_window"):
        # Qwen2 with use_sliding_window: layers from max_window_layers on slide.
        return window, max(0, layers - int(cfg["max_window_layers"]))
    # Mistral-style: every layer slides.
    return window, layers


def _weights_bytes(directory: Path) -> int | None:
    try:
        files = [p for p in directory.iterdir() if p.suffix.lower() in _WEIGHT_SUFFIXES and p.is_file()]
    except OSError:
        return None
    return sum(p.stat().st_size for p in files) if files else None


# --- GGUF ---------------------------------------------------------------------------


def _from_gguf(path: Path) -> ModelConfig:
    meta = read_gguf_metadata(path)
    arch = str(meta.get("general.architecture", ""))
    if not arch:
        raise UsageError(f"{path}: GGUF without general.architecture")
    layout = gguf_layout(meta, arch, where=str(path))
    ctx = meta.get(f"{arch}.context_length")
    return ModelConfig(
        name=str(meta.get("general.name") or path.stem),
        source="gguf",
        layout=layout,
        dtype="f16",  # llama.cpp's default cache type, whatever the weights' quantization
        max_context=int(ctx) if isinstance(ctx, int) else None,
        weights_bytes=path.stat().st_size,
    )


# GGUF value types (gguf.GGUFValueType): fixed-size scalars as struct formats.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_MAX_ARRAY_KEPT = 4096


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file; arrays longer than 4096 elements (the
    tokenizer's) are skipped without being decoded.

    gguf's ``GGUFReader`` decodes every tokenizer string and takes about 9 s on a 2-core
    machine for a 49k-token vocabulary; ``probe`` must finish in seconds, so this reads
    the header directly (format: gguf-py/gguf/gguf_reader.py, docs/gguf.md) and the
    tests check it agrees with ``GGUFReader``."""
    try:
        with path.open("rb") as f:
            return _GgufHeader(f).read()
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a readable GGUF file ({e})") from e


class _GgufHeader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.order = "<"

    def _unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("file ends inside the header")
        return struct.unpack(self.order + fmt, data)[0]

    def _string(self) -> str:
        n = self._unpack("Q")
        if n > 1 << 24:
            raise ValueError(f"implausible string length {n}")
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("file ends inside a string")
        return data.decode("utf-8", errors="replace")

    def _value(self, vtype: int, keep: bool) -> Any:
        if vtype in _GGUF_SCALARS:
            return self._unpack(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            if keep:
                return self._string()
            self.f.seek(self._unpack("Q"), 1)
            return None
        if vtype == _GGUF_ARRAY:
            etype, count = self._unpack("I"), self._unpack("Q")
            keep_items = keep and count <= _MAX_ARRAY_KEPT
            if not keep_items and etype in _GGUF_SCALARS:
                self.f.seek(count * struct.calcsize(_GGUF_SCALARS[etype]), 1)
                return None
            items = [self._value(etype, keep_items) for _ in range(count)]
            return items if keep_items else None
        raise ValueError(f"unknown GGUF value type {vtype}")

    def read(self) -> dict[str, Any]:
        if self.f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic")
        version = self._unpack("I")
        if version & 0xFFFF == 0:  # a big-endian file read as little-endian
            self.order = ">"
            version = struct.unpack(">I", struct.pack("<I", version))[0]
        if version == 1:
            raise ValueError("GGUF v1 is not supported")
        self._unpack("Q")  # tensor count
        kv_count = self._unpack("Q")
        out: dict[str, Any] = {}
        for _ in range(kv_count):
            key = self._string()
            vtype = self._unpack("I")
            value = self._value(vtype, keep=not key.startswith("tokenizer."))
            if value is not None:
                out[key] = value
        return out


def gguf_layout(meta: Mapping[str, Any], arch: str, *, where: str = "gguf") -> KvLayout:
    def get(key: str) -> Any:
        return meta.get(f"{arch}.{key}")

    layers = get("block_count")
    heads = get("attention.head_count")
    kv_heads = get("attention.head_count_kv")
    if not isinstance(layers, int) or layers <= 0:
        raise UsageError(f"{where}: {arch}.block_count missing")
    if isinstance(heads, list):
        heads = max(heads)
    if isinstance(kv_heads, list):
        # Per-layer counts (OpenELM, hybrid models with 0 for recurrent layers): the
        # cache only holds the attention layers; use their mean per attention layer.
        attn = [h for h in kv_heads if h]
        layers = len(attn) or layers
        kv_heads = round(sum(attn) / len(attn)) if attn else None
    if kv_heads is None:
        kv_heads = heads
    if not isinstance(kv_heads, int) or not isinstance(heads, int) or heads <= 0:
        raise UsageError(f"{where}: attention head counts missing")
    lora = get("attention.kv_lora_rank")
    if isinstance(lora, int) and lora > 0:
        rope = get("rope.dimension_count") or 0
        mla = lora + int(rope)
        return KvLayout(layers=layers, kv_heads=1, head_dim_k=mla, head_dim_v=0, mla_dim=mla)
    key_len = get("attention.key_length")
    val_len = get("attention.value_length")
    if not isinstance(key_len, int):
        emb = get("embedding_length")
        if not isinstance(emb, int):
            raise UsageError(f"{where}: {arch}.embedding_length missing")
        key_len = emb // heads
    if not isinstance(val_len, int):
        val_len = key_len
    window = get("attention.sliding_window")
    swa = 0
    if isinstance(window, int) and window > 0:
        pattern = get("attention.sliding_window_pattern")
        if isinstance(pattern, list):
            swa = sum(1 for p in pattern[:layers] if p)
        elif isinstance(pattern, int) and pattern > 1:
            swa = layers - layers // pattern
        else:
            swa = layers
    else:
        window = None
    return KvLayout(layers=layers, kv_heads=kv_heads, head_dim_k=key_len, head_dim_v=val_len,
                    window=window, swa_layers=swa)


def describe(layout: KvLayout) -> str:
    if layout.mla_dim is not None:
        s = f"{layout.layers} layers, MLA latent {layout.mla_dim}"
    else:
        hd = (f"{layout.head_dim_k}" if layout.head_dim_k == layout.head_dim_v
              else f"{layout.head_dim_k}/{layout.head_dim_v}")
        s = f"{layout.layers} layers, {layout.kv_heads} KV heads, head_dim {hd}"
    if layout.swa_layers:
        s += f", {layout.swa_layers} sliding-window layers (window {layout.window})"
    return s


__all__: Sequence[str] = (
    "ModelConfig", "describe", "gguf_layout", "hf_layout", "read_model_config",
)
