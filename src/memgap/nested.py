"""One walk down a path of keys through nested mappings and pydantic models: the run
record's fields (``"engine_report.kv_cache_tokens"``), a table's columns, an engine's
JSON report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel


def value_at(doc: Any, path: str | Sequence[str]) -> Any:
    """The value at ``path`` (dotted, or a sequence of keys), or None where a step is
    missing or not a mapping or model."""
    cur = doc
    for key in path.split(".") if isinstance(path, str) else path:
        if isinstance(cur, BaseModel):
            cur = getattr(cur, key, None)
        elif isinstance(cur, Mapping):
            cur = cur.get(key)
        else:
            return None
    return cur
