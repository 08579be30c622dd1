"""Property tests: every parser survives any text and finds nothing in garbage."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.engines.logs import _MODULES, ENGINES, detect_engine, parse_engine_log

_FIGURES = ("model_bytes", "peak_bytes", "kv_cache_bytes", "kv_cache_tokens", "kv_cache_blocks",
            "kv_fraction", "device_total_bytes", "compute_bytes")

# Garbage that looks like logs: letters, digits, punctuation the patterns use, ANSI
# escapes and line breaks, but none of the engines' key phrases.
_log_alphabet = st.sampled_from(list(string.ascii_letters + string.digits + " .,:;=()[]/-_\n\r\t\x1b%#"))
_fragments = st.sampled_from([
    "MiB", "GiB", "GB", " = ", "size", "cells", "layers", "seqs", "K (f16): ", "TP1", "[TRT-LLM]",
    "\x1b[31m", "1,234", "-3.5", "nan", "1e400", "took", "tokens", "avail mem=",
])
garbage = st.lists(st.one_of(st.text(_log_alphabet, max_size=40), _fragments), max_size=60).map("".join)


@pytest.mark.parametrize("engine", [*ENGINES, "auto"])
@settings(max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=400), garbage))
def test_never_raises_and_finds_nothing_in_garbage(engine: str, text: str) -> None:
    r = parse_engine_log(engine, text)
    assert all(getattr(r, name) is None for name in _FIGURES)
    assert r.kv_caches == ()
    # A miss is visible: nothing found, and (for engines that declare their lines) every
    # figure the engine's log should carry is named as missing.
    assert not r.found_any and r.refusal is None
    if engine in ("vllm", "sglang", "trtllm"):
        assert r.missing == _MODULES[engine].EXPECTED[_MODULES[engine].DEFAULT_VARIANT]
    r.to_dict()


def test_a_parser_that_crashes_still_reports_a_visible_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> None:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(_MODULES["vllm"], "parse", boom)
    r = parse_engine_log("vllm", "Available KV cache memory: 1.00 GiB")
    assert r.engine == "vllm" and not r.found_any
    assert r.missing == _MODULES["vllm"].EXPECTED["gpu"]


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400))
def test_detect_never_raises(text: str) -> None:
    assert detect_engine(text) in (*ENGINES, None)


def test_unknown_engine_and_non_text_give_empty_report() -> None:
    assert parse_engine_log("no-such-engine", "x").engine == "unknown"
    assert parse_engine_log("vllm", None).is_empty()  # type: ignore[arg-type]


@pytest.mark.parametrize("engine", ENGINES)
def test_huge_line_is_fast_enough(engine: str) -> None:
    # A 2 MB line of digits and commas: no pattern may backtrack on it (lines are
    # cut at 64 KiB and no pattern starts with an unbounded class).
    r = parse_engine_log(engine, "1," * 1_000_000 + " MiB GiB")
    assert r.kv_cache_bytes is None
