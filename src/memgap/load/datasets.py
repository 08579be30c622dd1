"""Prompt and output lengths of a workload: fixed, uniform, or from a dataset file.

Lengths are drawn with ``random.Random(seed)`` so the same spec plans the same requests.
A dataset file is one the user supplies (memgap ships none), in one of two forms:

- JSONL of prompts, one object a line: ``{"prompt": "..."}`` (or ``"text"``), optionally
  with ``"output_tokens"`` (or ``"max_tokens"``) for that request's output length;
- ShareGPT-style conversations, as a JSON list or JSONL: ``{"conversations": [{"from":
  "human", "value": "..."}, {"from": "gpt", "value": "..."}]}`` (``role``/``content``
  keys are read too). The first human turn is the prompt and the reply that follows it
  sets the output length (counted with the server's tokenizer where it has one).

Entries without a usable prompt are skipped and counted, never silently replaced.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memgap.errors import UsageError

_HUMAN = ("human", "user")
_MODEL = ("gpt", "assistant", "chatgpt", "bard", "bing", "model")


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    prompt: str
    output_tokens: int | None = None  # given by the file
    output_text: str | None = None  # the reference reply (ShareGPT), to count


@dataclass(frozen=True)
class Dataset:
    source: str
    format: str  # "prompts" or "sharegpt"
    entries: tuple[DatasetEntry, ...]
    skipped: int  # objects without a usable prompt

    def info(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "entries": len(self.entries), "skipped": self.skipped}


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _turn(turn: Any) -> tuple[str, str] | None:
    if not isinstance(turn, dict):
        return None
    who = turn.get("from", turn.get("role"))
    text = turn.get("value", turn.get("content"))
    if isinstance(who, str) and isinstance(text, str):
        return who.lower(), text
    return None


def _sharegpt_entry(obj: dict[str, Any]) -> DatasetEntry | None:
    turns = obj.get("conversations", obj.get("conversation", obj.get("messages")))
    if not isinstance(turns, list):
        return None
    parsed = [t for t in (_turn(x) for x in turns) if t is not None]
    for i, (who, text) in enumerate(parsed):
        if who in _HUMAN and text.strip():
            reply = next((t for w, t in parsed[i + 1 :] if w in _MODEL), None)
            return DatasetEntry(text, None, reply if reply and reply.strip() else None)
    return None


def _prompt_entry(obj: dict[str, Any]) -> DatasetEntry | None:
    text = obj.get("prompt", obj.get("text"))
    if not isinstance(text, str) or not text.strip():
        return None
    return DatasetEntry(text, _positive_int(obj.get("output_tokens", obj.get("max_tokens"))))


def parse_dataset(text: str, source: str = "<dataset>") -> Dataset:
    """A dataset from the text of its file (JSON list or JSONL). Raises UsageError."""
    stripped = text.lstrip()
    objects: list[Any]
    if stripped.startswith("["):
        try:
            loaded = json.loads(stripped)
        except ValueError as e:
            raise UsageError(f"dataset {source}: not valid JSON: {e}") from None
        objects = loaded if isinstance(loaded, list) else [loaded]
    else:
        objects = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                objects.append(json.loads(line))
            except ValueError as e:
                raise UsageError(f"dataset {source}, line {lineno}: not JSON: {e}") from None
    dicts = [o for o in objects if isinstance(o, dict)]
    sharegpt = any(k in d for d in dicts for k in ("conversations", "conversation", "messages"))
    make = _sharegpt_entry if sharegpt else _prompt_entry
    entries = [e for e in (make(d) for d in dicts) if e is not None]
    if not entries:
        raise UsageError(
            f"dataset {source}: no usable prompts (expected JSONL of {{\"prompt\": ...}} "
            "or ShareGPT-style {\"conversations\": [...]})"
        )
    return Dataset(source, "sharegpt" if sharegpt else "prompts", tuple(entries), len(objects) - len(entries))


def load_dataset(path: str | Path) -> Dataset:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"dataset {p}: cannot read: {e}") from None
    return parse_dataset(text, str(p))


def sample_entries(entries: Sequence[DatasetEntry], n: int, seed: int) -> list[DatasetEntry]:
    """``n`` entries in a seeded random order: each entry once before any repeats."""
    if not entries:
        return []
    rng = random.Random(seed)
    out: list[DatasetEntry] = []
    while len(out) < n:
        batch = list(entries)
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out


def draw_lengths(low: int, high: int | None, n: int, seed: int) -> list[int]:
    """``n`` lengths: all ``low`` when ``high`` is None, else uniform on [low, high]."""
    if high is None or high == low:
        return [low] * n
    if high < low:
        raise UsageError(f"length range: maximum {high} is below minimum {low}")
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(n)]
