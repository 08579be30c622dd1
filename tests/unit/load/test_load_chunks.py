import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.load.chunks import Chunk, StreamFormatError, parse_chunk


def test_role_only_and_empty_chat_chunks_carry_no_text() -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
    assert parse_chunk(json.dumps(role)).text == ""
    empty = {"choices": [{"index": 0, "delta": {"content": ""}}]}
    assert parse_chunk(json.dumps(empty)).text == ""
    assert parse_chunk(
        json.dumps({"choices": [{"delta": {}, "finish_reason": "length"}]})
    ) == Chunk(finish_reason="length")


def test_content_and_reasoning_deltas_and_completion_text() -> None:
    assert parse_chunk('{"choices": [{"delta": {"content": " hi"}}]}').text == " hi"
    assert parse_chunk('{"choices": [{"delta": {"reasoning_content": "hm"}}]}').text == "hm"
    assert parse_chunk('{"choices": [{"text": "x", "finish_reason": null}]}').text == "x"


def test_llama_cpp_final_chunks() -> None:
    # completion: the last chunk has empty text, usage and timings
    last = {
        "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}],
        "usage": {"completion_tokens": 16, "prompt_tokens": 9, "total_tokens": 25},
        "timings": {"cache_n": 3, "prompt_n": 6},
    }
    assert parse_chunk(json.dumps(last)) == Chunk("", "length", 16, 9, 3)
    # chat: usage comes in a chunk with an empty choices list
    usage = {"choices": [], "usage": {"completion_tokens": 4, "prompt_tokens": 30}}
    assert parse_chunk(json.dumps(usage)) == Chunk(completion_tokens=4, prompt_tokens=30)


def test_vllm_cached_tokens() -> None:
    obj = {
        "choices": [],
        "usage": {
            "completion_tokens": 1,
            "prompt_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 2},
        },
    }
    assert parse_chunk(json.dumps(obj)).cached_prompt_tokens == 2


def test_error_payload() -> None:
    c = parse_chunk('{"error": {"code": 500, "message": "slot failed", "type": "server_error"}}')
    assert c.error == "500 slot failed"
    assert parse_chunk('{"error": "plain"}').error == "plain"


@pytest.mark.parametrize("bad", ["", "{", "[1, 2]", "null", "42", "[" * 5000])
def test_not_an_object_is_typed_error(bad: str) -> None:
    with pytest.raises(StreamFormatError):
        parse_chunk(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "delta",
                    "text",
                    "content",
                    "usage",
                    "completion_tokens",
                    "prompt_tokens",
                    "timings",
                    "cache_n",
                    "error",
                    "finish_reason",
                    "reasoning",
                    "prompt_tokens_details",
                    "cached_tokens",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_any_json_never_raises_but_typed_error(value: object) -> None:
    try:
        c = parse_chunk(json.dumps(value))
    except StreamFormatError:
        assert not isinstance(value, dict)
        return
    assert isinstance(c.text, str)
    assert c.completion_tokens is None or isinstance(c.completion_tokens, int)


@given(st.text(max_size=200))
def test_any_text_never_raises_but_typed_error(text: str) -> None:
    try:
        parse_chunk(text)
    except StreamFormatError:
        pass
