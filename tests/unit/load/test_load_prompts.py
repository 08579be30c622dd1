import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from openai_stream_double import double_token_count

from memgap.load.prompts import WORDS, CountTokens, build_prompt_with


async def double_count(text: str) -> int | None:
    return double_token_count(text)


async def no_tokenizer(text: str) -> int | None:
    return None


def build(count: CountTokens, n: int, seed: int) -> tuple[str, int | None]:
    return asyncio.run(build_prompt_with(count, n, seed))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=3, max_value=600), st.integers(min_value=0, max_value=2**32))
def test_exact_length_by_the_servers_tokenizer(n: int, seed: int) -> None:
    text, measured = build(double_count, n, seed)
    assert measured == n == double_token_count(text)
    assert set(text.split()) <= set(WORDS)


def test_deterministic_per_seed() -> None:
    assert build(double_count, 64, 1) == build(double_count, 64, 1)
    assert build(double_count, 64, 1)[0] != build(double_count, 64, 2)[0]


def test_without_tokenizer_one_word_per_token_and_none() -> None:
    text, measured = build(no_tokenizer, 50, 0)
    assert measured is None and len(text.split()) == 50


def test_impossible_length_returns_what_it_measured() -> None:
    # one word + BOS is already 2 tokens: 1 cannot be met, and the result says so
    text, measured = build(double_count, 1, 0)
    assert measured == double_token_count(text) and measured >= 2
