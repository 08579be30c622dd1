"""Run selectors: grammar (with property tests over garbage) and selection over a real store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.analysis.selectors import FIELDS, Selector, parse_selector, select_runs
from memgap.errors import UsageError
from memgap.importers import blank_record
from memgap.store import Store


def test_run_id() -> None:
    assert parse_selector(" 3f2a9c1b04de ") == Selector(text=" 3f2a9c1b04de ", run_id="3f2a9c1b04de")


def test_key_values_keep_order_and_strip_spaces() -> None:
    sel = parse_selector("model=deepseek, environment = native")
    assert sel.run_id is None
    assert list(sel.where.items()) == [("model", "deepseek"), ("environment", "native")]
    assert sel.describe() == "model=deepseek, environment=native"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("colour=red", "unknown key 'colour'"),
        ("model=", "has no value"),
        ("=x", "is not key=value"),
        ("model=a=b", "more than one"),
        ("model=a,model=b", "given twice"),
        ("model=a,,env", "is not key=value"),
        ("has space", "neither a run id"),
    ],
)
def test_bad_selectors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_selector(text)


def test_same_key_twice_with_same_value_is_fine() -> None:
    assert dict(parse_selector("model=a,model=a").where) == {"model": "a"}


@given(st.text(max_size=60))
def test_garbage_is_a_usage_error_or_a_valid_selector(text: str) -> None:
    try:
        sel = parse_selector(text)
    except UsageError:
        return
    assert (sel.run_id is None) != (not sel.where)
    assert set(sel.where) <= set(FIELDS)
    assert all(v and "," not in v and "=" not in v for v in sel.where.values())


@given(st.dictionaries(st.sampled_from(FIELDS),
                       st.text(st.characters(blacklist_characters=",=", blacklist_categories=("Cs",)), min_size=1)
                       .filter(lambda s: s.strip() == s and s), min_size=1))
def test_round_trip(where: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in where.items())
    assert dict(parse_selector(text).where) == where


def _rec(run_id: str, env: str, model: str, status: str = "ok", created: str = "2026-01-01T00:00:00",
         source: str | None = None) -> dict[str, Any]:
    r = blank_record()
    r.update(run_id=run_id, environment=env, model=model, status=status, engine="llamacpp",
             created_at=created)
    if source:
        r["source"] = source
    return r


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "s.db")
    s.add_run(_rec("aaa111", "native", "m1", created="2026-01-01T00:00:01"))
    s.add_run(_rec("aaa222", "sandbox", "m1", created="2026-01-01T00:00:02"))
    s.add_run(_rec("bbb333", "native", "m2", status="failed", created="2026-01-01T00:00:03"))
    s.add_run(_rec("bs-x", "native", "m2", created="2026-01-01T00:00:04", source="benchmark-spark"))
    return s


def test_select_by_fields(store: Store) -> None:
    assert [r.run_id for r in select_runs(store, "environment=native")] == ["aaa111", "bbb333", "bs-x"]
    assert [r.run_id for r in select_runs(store, "environment=native", default_status="ok")] == ["aaa111", "bs-x"]
    assert [r.run_id for r in select_runs(store, "model=m2,status=failed", default_status="ok")] == ["bbb333"]
    assert [r.run_id for r in select_runs(store, "source=benchmark-spark")] == ["bs-x"]


def test_select_by_id_and_unique_prefix(store: Store) -> None:
    assert select_runs(store, "bbb333")[0].run_id == "bbb333"
    assert select_runs(store, "bbb")[0].run_id == "bbb333"
    with pytest.raises(UsageError, match="ambiguous: aaa111, aaa222"):
        select_runs(store, "aaa")
    with pytest.raises(UsageError, match="no run 'zzz'"):
        select_runs(store, "zzz")


def test_no_match_lists_what_the_store_has(store: Store) -> None:
    with pytest.raises(UsageError, match=r"no runs match environment=docker .*environment: native, sandbox"):
        select_runs(store, "environment=docker")
