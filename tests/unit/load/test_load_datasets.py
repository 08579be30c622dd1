"""Length distributions and dataset files, alone and through the client (TEST DOUBLE server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai_stream_double import OpenAIStreamDouble, double_token_count

from memgap.errors import UsageError
from memgap.load.client import run_workload_sync
from memgap.load.datasets import (
    DatasetEntry,
    draw_lengths,
    load_dataset,
    parse_dataset,
    sample_entries,
)
from memgap.load.spec import WorkloadSpec

SHAREGPT = [
    {"id": "a", "conversations": [
        {"from": "human", "value": "tell me about rivers"},
        {"from": "gpt", "value": "rivers carry water to the sea"},
        {"from": "human", "value": "and lakes"},
    ]},
    {"id": "b", "conversations": [{"from": "system", "value": "be kind"}, {"from": "human", "value": "hello"}]},
    {"id": "c", "conversations": [{"from": "gpt", "value": "no human turn"}]},
    {"id": "d", "conversations": [{"role": "user", "content": "name a stone"}, {"role": "assistant", "content": "granite"}]},
]  # fmt: skip


def test_prompt_jsonl_with_and_without_output_lengths() -> None:
    text = "\n".join(
        [json.dumps({"prompt": "one two", "output_tokens": 7}), "", json.dumps({"text": "three"}),
         json.dumps({"prompt": ""}), json.dumps({"prompt": "x", "max_tokens": 0}), "[1]"[1:2]]
    )  # fmt: skip
    ds = parse_dataset(text, "f.jsonl")
    assert ds.format == "prompts"
    assert ds.entries == (DatasetEntry("one two", 7), DatasetEntry("three"), DatasetEntry("x"))
    assert ds.skipped == 2  # the empty prompt and the bare number
    assert ds.info() == {"source": "f.jsonl", "format": "prompts", "entries": 3, "skipped": 2}


def test_sharegpt_list_takes_first_human_turn_and_its_reply() -> None:
    ds = parse_dataset(json.dumps(SHAREGPT))
    assert ds.format == "sharegpt"
    assert ds.entries == (
        DatasetEntry("tell me about rivers", None, "rivers carry water to the sea"),
        DatasetEntry("hello", None, None),
        DatasetEntry("name a stone", None, "granite"),
    )
    assert ds.skipped == 1
    jsonl = parse_dataset("\n".join(json.dumps(c) for c in SHAREGPT))
    assert jsonl.entries == ds.entries


@pytest.mark.parametrize("text", ["", "{not json}\n", "[", json.dumps([{"prompt": ""}]), "[1, 2]"])
def test_unusable_datasets_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_dataset(text)


def test_load_dataset_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_dataset(tmp_path / "nope.jsonl")


@given(st.text(max_size=200))
def test_parse_dataset_raises_only_usage_error(text: str) -> None:
    try:
        ds = parse_dataset(text)
    except UsageError:
        return
    assert ds.entries and all(e.prompt.strip() for e in ds.entries)


def test_sample_entries_covers_each_before_repeating_and_is_seeded() -> None:
    entries = [DatasetEntry(str(i)) for i in range(5)]
    got = sample_entries(entries, 12, seed=3)
    assert len(got) == 12
    assert sorted(e.prompt for e in got[:5]) == ["0", "1", "2", "3", "4"]
    assert sorted(e.prompt for e in got[5:10]) == ["0", "1", "2", "3", "4"]
    assert got == sample_entries(entries, 12, seed=3)
    assert got != sample_entries(entries, 12, seed=4)
    assert sample_entries([], 3, 0) == []


@given(st.integers(1, 500), st.integers(0, 500), st.integers(0, 60), st.integers(0, 2**31))
def test_uniform_lengths_stay_in_range(low: int, extra: int, n: int, seed: int) -> None:
    got = draw_lengths(low, low + extra, n, seed)
    assert len(got) == n and all(low <= x <= low + extra for x in got)
    assert got == draw_lengths(low, low + extra, n, seed)


def test_fixed_lengths_and_bad_range() -> None:
    assert draw_lengths(8, None, 3, 0) == [8, 8, 8]
    assert len(set(draw_lengths(1, 1000, 50, 0))) > 10  # really drawn
    with pytest.raises(UsageError):
        draw_lengths(8, 4, 3, 0)


@pytest.mark.parametrize(
    "kwargs",
    [{"prompt_tokens_max": 4}, {"output_tokens_max": 1, "output_tokens": 2},
     {"prompt_tokens_max": 200, "distinct_prompts": False}],
)  # fmt: skip
def test_spec_refuses_bad_ranges(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        WorkloadSpec(prompt_tokens=8, **kwargs)  # type: ignore[arg-type]


def spec(**kw: object) -> WorkloadSpec:
    base: dict[str, object] = {"requests": 6, "concurrency": 2, "warmup_requests": 1, "timeout_s": 10.0}
    base.update(kw)
    return WorkloadSpec(**base)  # type: ignore[arg-type]


def test_client_uniform_lengths_are_exact_per_request(stream_double: OpenAIStreamDouble) -> None:
    res = run_workload_sync(
        stream_double.base_url, spec(prompt_tokens=10, prompt_tokens_max=30, output_tokens=2, output_tokens_max=6)
    )
    bodies = [r.body for r in stream_double.state.received]
    p_lens = [double_token_count(b["prompt"]) for b in bodies]
    o_lens = [b["max_tokens"] for b in bodies]
    assert all(10 <= n <= 30 for n in p_lens) and len(set(p_lens)) > 1
    assert all(2 <= n <= 6 for n in o_lens) and len(set(o_lens)) > 1
    assert res.prompt_info["exact"] == 7
    assert sorted(r.max_tokens or 0 for r in res.records) == sorted(o_lens)
    again = run_workload_sync(
        stream_double.base_url, spec(prompt_tokens=10, prompt_tokens_max=30, output_tokens=2, output_tokens_max=6)
    )
    assert [r.max_tokens for r in again.records] == [r.max_tokens for r in res.records]  # seeded


def test_client_sends_dataset_prompts_with_their_lengths(
    stream_double: OpenAIStreamDouble, tmp_path: Path
) -> None:
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(SHAREGPT))
    res = run_workload_sync(stream_double.base_url, spec(dataset=str(path), output_tokens=5, requests=5))
    sent = {r.body["prompt"]: r.body["max_tokens"] for r in stream_double.state.received}
    # the reply's length by the server's tokenizer less its BOS ("granite" is 2 tokens to the
    # double); no reply: output_tokens
    assert sent == {"tell me about rivers": 6, "hello": 5, "name a stone": 2}
    info = res.prompt_info
    assert info["dataset"]["format"] == "sharegpt" and info["dataset"]["entries"] == 3
    assert info["prompts"] == 6 and info["tokenizer"] == "server"
    assert info["measured_tokens_min"] == 2 and info["measured_tokens_max"] == 5
