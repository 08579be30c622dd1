"""memgap.nested.value_at: one walk through records (dicts or models) and JSON reports."""

from __future__ import annotations

from pydantic import BaseModel

from memgap.nested import value_at


class _Inner(BaseModel):
    p50: float | None = None


class _Outer(BaseModel):
    ttft_s: _Inner
    engine_report: dict[str, int]


def test_dotted_and_key_paths_through_mappings_and_models() -> None:
    doc = {"engine_report": {"kv_cache_tokens": 4096, "memory.total": 7}, "ttft_s": {"p50": 0.25}}
    assert value_at(doc, "engine_report.kv_cache_tokens") == 4096
    assert value_at(doc, ("engine_report", "memory.total")) == 7  # a key with a dot in it
    model = _Outer(ttft_s=_Inner(p50=0.5), engine_report={"kv_cache_tokens": 8})
    assert value_at(model, "ttft_s.p50") == 0.5
    assert value_at(model, "engine_report.kv_cache_tokens") == 8  # a mapping inside a model


def test_a_missing_step_or_a_leaf_on_the_way_is_none() -> None:
    doc = {"a": {"b": 3}, "n": None}
    assert value_at(doc, "a.c") is None
    assert value_at(doc, "a.b.c") is None  # 3 is not a mapping
    assert value_at(doc, "n.x") is None
    assert value_at(None, "a") is None
    assert value_at(_Inner(), "nope") is None
