"""llama.cpp (``llama-server -lv 4``) memory lines.

Format strings, from ggml-org/llama.cpp:

- src/llama-kv-cache.cpp:
  ``"%s: size = %7.2f MiB (%6u cells, %3d layers, %2u/%u seqs), K (%s): %7.2f MiB, V (%s): %7.2f MiB"``
  with ``n_seq_max, n_stream`` as the two seq numbers; ``n_stream = unified ? 1 : n_seq_max``
  and ``cells`` is per stream, so the cache holds ``cells * n_stream`` tokens.
  Older builds printed ``llama_kv_cache_unified: size = ...`` and, before that,
  ``KV self size = %7.2f MiB, K (%s): ..., V (%s): ...``.
- src/llama-kv-cache.cpp: ``"%s: %10s KV buffer size = %8.2f MiB"``
- src/llama-model.cpp: ``"%s: %12s model buffer size = %8.2f MiB"``
- src/llama-context.cpp: ``"%s: %10s compute buffer size = %8.2f MiB"`` and
  ``"%s: %10s  output buffer size = %8.2f MiB"``; ``"%s: n_ctx = %u"`` and friends.

A log may hold several server starts (a restart appends to the same file). A start
begins at common's build line: ``common_params_print_info: build N (hash) with ...``
(common/common.cpp; ``build: N (hash) with ...`` and ``main: build = N (hash)`` in older
builds); only the last start is read. Without any build line, a repeated
``llama_model_loader: loaded meta data`` header marks a new start (this would misread a
speculative-decoding draft model as a restart, but llama-server always prints the
build line, so the fallback only serves fragments)."""

from __future__ import annotations

import re
from types import MappingProxyType

from memgap.engines.logs._text import NUM, MiB, iter_lines, to_bytes, to_int
from memgap.engines.report import EngineReport, KvCacheLine

ENGINE = "llamacpp"

# Lines only llama.cpp prints; used by auto-detection.
SIGNATURES = (
    re.compile(r"llama_model_loader: "),
    re.compile(r"\bllama_(?:kv_cache|context|model_load|new_context)\w*: "),
    re.compile(r"\bload_tensors: "),
    re.compile(r"\b(?:model|compute|KV) buffer size = "),
)

_START_RE = re.compile(r"\bbuild(?:: | = | )\d+ \(")
_LOADER_RE = re.compile(r"llama_model_loader: loaded meta data with")

_KV_RE = re.compile(
    rf"\bsize = *({NUM}) MiB \( *(\d+) cells, *(\d+) layers, *(\d+)(?:/(\d+))? seqs\), "
    rf"K \(([\w.]+)\): *({NUM}) MiB, V \(([\w.]+)\): *({NUM}) MiB"
)
_KV_SELF_RE = re.compile(rf"\bKV self size *= *({NUM}) MiB")
_RECURRENT_RE = re.compile(rf"\bsize = *({NUM}) MiB \([^)]*\), R \([\w.]+\): *{NUM} MiB, S \(")
_BUF_RE = re.compile(rf"(\S{{1,64}}) +(model|KV|compute|output|RS) buffer size = *({NUM}) MiB")
_FREE_RE = re.compile(rf"using device (\S{{1,64}}) \([^\n]*\) - *({NUM}) MiB free")
_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_CPARAM_RE = re.compile(r"llama_context: +(n_ctx|n_ctx_per_seq|n_ctx_seq|n_seq_max|n_batch|n_ubatch) += +(\d+)")
_FLAG_RE = re.compile(r"llama_context: +(kv_unified|flash_attn|causal_attn) += +(\S+)")


def _last_start(lines: list[str]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if _START_RE.search(line)]
    if not starts:
        starts = [i for i, line in enumerate(lines) if _LOADER_RE.search(line)]
    return lines[starts[-1]:] if starts else lines


def parse(text: str) -> EngineReport:
    lines = _last_start(list(iter_lines(text)))
    evidence: list[str] = []
    kv_lines: list[KvCacheLine] = []
    buffers: dict[str, list[int]] = {"model": [], "KV": [], "compute": [], "output": [], "RS": []}
    kv_self: list[int] = []
    extra: dict[str, float | int | str] = {}
    recurrent = 0
    for line in lines:
        m = _KV_RE.search(line)
        if m:
            kv = _kv_line(m)
            if kv is not None:
                kv_lines.append(kv)
                evidence.append(line)
            continue
        m = _RECURRENT_RE.search(line)
        if m:
            b = to_bytes(m.group(1), MiB)
            if b is not None:
                recurrent += b
                extra["recurrent_state_bytes"] = recurrent
                evidence.append(line)
            continue
        m = _KV_SELF_RE.search(line)
        if m:
            b = to_bytes(m.group(1), MiB)
            if b is not None:
                kv_self.append(b)
                evidence.append(line)
            continue
        m = _BUF_RE.search(line)
        if m:
            b = to_bytes(m.group(3), MiB)
            if b is not None:
                buffers[m.group(2)].append(b)
                evidence.append(line)
            continue
        m = _FREE_RE.search(line)
        if m:
            b = to_bytes(m.group(2), MiB)
            if b is not None:
                extra[f"device_free_bytes.{m.group(1)}"] = b
                evidence.append(line)
            continue
        m = _OFFLOAD_RE.search(line)
        if m:
            extra["offloaded_layers"] = int(m.group(1))
            extra["total_layers"] = int(m.group(2))
            evidence.append(line)
            continue
        m = _CPARAM_RE.search(line)
        if m:
            extra[m.group(1)] = int(m.group(2))
            evidence.append(line)
            continue
        m = _FLAG_RE.search(line)
        if m:
            extra[m.group(1)] = m.group(2).strip("'\"")
            evidence.append(line)
    if buffers["output"]:
        extra["output_bytes"] = sum(buffers["output"])
    if kv_lines:
        kv_bytes: int | None = sum(k.size_bytes for k in kv_lines)
        # Several caches (SWA + full, or a draft model's) hold the *same* tokens; the
        # SWA one only a window of them. The capacity is the largest, not the sum.
        kv_tokens: int | None = max(k.tokens for k in kv_lines)
    else:
        kv_bytes = _sum_or_none(buffers["KV"]) if buffers["KV"] else _sum_or_none(kv_self)
        kv_tokens = None
    return EngineReport(
        engine=ENGINE,
        model_bytes=_sum_or_none(buffers["model"]),
        peak_bytes=None,
        kv_cache_bytes=kv_bytes,
        kv_cache_tokens=kv_tokens,
        kv_cache_blocks=None,
        kv_fraction=None,
        device_total_bytes=None,
        compute_bytes=_sum_or_none(buffers["compute"]),
        kv_caches=tuple(kv_lines),
        extra=MappingProxyType(extra),
        evidence=tuple(evidence),
    )


def _kv_line(m: re.Match[str]) -> KvCacheLine | None:
    size, k_bytes, v_bytes = (to_bytes(m.group(i), MiB) for i in (1, 7, 9))
    cells, layers, seqs = (to_int(m.group(i)) for i in (2, 3, 4))
    # Builds before the n_stream split printed one number, "%2u seqs": one stream.
    streams = to_int(m.group(5)) if m.group(5) is not None else 1
    if (
        size is None or k_bytes is None or v_bytes is None or cells is None
        or layers is None or seqs is None or streams is None
    ):
        return None
    return KvCacheLine(
        size_bytes=size, cells=cells, layers=layers, seqs=seqs, streams=streams,
        k_type=m.group(6), v_type=m.group(8), k_bytes=k_bytes, v_bytes=v_bytes,
    )


def _sum_or_none(xs: list[int]) -> int | None:
    return sum(xs) if xs else None
