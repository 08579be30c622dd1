"""What one OpenAI-style streaming chunk says: generated text, usage, an error.

Handles both `/v1/completions` (``choices[].text``) and `/v1/chat/completions`
(``choices[].delta.content``) chunks. A chat stream's first chunk is often role-only
(``{"delta": {"role": "assistant", "content": null}}``, llama.cpp and vLLM both send one)
and the last ones carry only ``finish_reason`` or only ``usage`` (with ``choices: []``):
none of those is a token, so :attr:`Chunk.text` is empty for them.

Field sources (llama.cpp ``tools/server/server-task.cpp``): completion chunks always end
with a final chunk that has ``usage`` and ``timings``; chat chunks carry ``usage`` only with
``stream_options.include_usage``; ``timings.cache_n`` counts prompt tokens taken from the
prompt cache. vLLM puts cached tokens in ``usage.prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from memgap.errors import MemgapError

DONE = "[DONE]"


class StreamFormatError(MemgapError):
    """A chunk is not the JSON object an OpenAI-compatible stream sends."""


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    error: str | None = None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _choice_text(choice: dict[str, Any]) -> str:
    text = choice.get("text")
    if isinstance(text, str):
        return text
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return ""
    # Reasoning models stream their thinking as reasoning_content (llama.cpp, older vLLM)
    # or reasoning (newer vLLM): those are generated tokens too.
    parts = [delta.get(k) for k in ("reasoning_content", "reasoning", "content")]
    return "".join(p for p in parts if isinstance(p, str))


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        msg = err.get("message")
        code = err.get("code")
        text = msg if isinstance(msg, str) else json.dumps(err)[:200]
        return f"{code} {text}" if isinstance(code, int) else text
    return str(err)[:200]


def parse_chunk(data: str) -> Chunk:
    """One ``data:`` payload (not ``[DONE]``) -> :class:`Chunk`. Raises StreamFormatError."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise StreamFormatError(f"chunk is not JSON: {data[:80]!r}") from e
    if not isinstance(obj, dict):
        raise StreamFormatError(f"chunk is not a JSON object: {data[:80]!r}")
    if "error" in obj:
        return Chunk(error=_error_text(obj["error"]))

    text = ""
    finish_reason = None
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict):
                text += _choice_text(choice)
                fr = choice.get("finish_reason")
                if isinstance(fr, str):
                    finish_reason = fr

    completion_tokens = prompt_tokens = cached = None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        completion_tokens = _int(usage.get("completion_tokens"))
        prompt_tokens = _int(usage.get("prompt_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            cached = _int(details.get("cached_tokens"))
    timings = obj.get("timings")
    if cached is None and isinstance(timings, dict):
        cached = _int(timings.get("cache_n"))
    return Chunk(text, finish_reason, completion_tokens, prompt_tokens, cached)
