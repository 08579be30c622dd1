"""Experiment files: every field validated, errors name the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.errors import UsageError
from memgap.experiment import key_lines, load_experiment, parse_experiment, plan_changes

REPO = Path(__file__).resolve().parents[2]


def _err(text: str) -> str:
    with pytest.raises(UsageError) as e:
        parse_experiment(text, origin="x.toml")
    return str(e.value)


def test_minimal_file_gets_defaults() -> None:
    exp = parse_experiment('[study]\nname = "s"\n')
    assert exp.study.environments == ["native", "sandbox"] and exp.study.iterations == 5
    assert exp.study_id == "study:s"
    assert [m.name for m in exp.metrics] == ["kv_cache_bytes", "output_tokens_per_s"]
    assert exp.metrics[1].relative == pytest.approx(0.10)


def test_unknown_key_is_named_with_its_line() -> None:
    msg = _err('[study]\nname = "s"\n\n[engine]\nctx_size = 1\nctx_sise = 4096\n')
    assert "x.toml:6: engine.ctx_sise: unknown key" in msg


def test_bad_values_name_key_and_line() -> None:
    text = ('[study]\nname = "s"\niterations = "sometimes"\nenvironments = ["native", "sandboxx"]\n'
            '[[variants]]\nname = "a"\n[[variants]]\nname = "b"\nengine = { ctx_size = -1 }\n'
            '[[metrics]]\nname = "kv_cache_bytes"\nmargin = "ten"\n[workload]\nrequests = 0\n')
    msg = _err(text)
    assert 'x.toml:3: study.iterations: must be a whole number >= 1 or "auto"' in msg
    assert "x.toml:4: study.environments: unknown environment 'sandboxx'" in msg
    assert "x.toml:9: variants[1].engine.ctx_size" in msg
    assert 'x.toml:12: metrics[0].margin: a relative margin is written like "10%"' in msg
    assert "x.toml:14: workload.requests" in msg


def test_missing_study_and_toml_syntax() -> None:
    assert "no [study] table" in _err("[engine]\nctx_size = 1\n")
    assert "not valid TOML" in _err("[study\nname=1")
    assert "x.toml:1: study.name: required key is missing" in _err("[study]\nseed = 1\n")


def test_min_above_max_iterations() -> None:
    assert "min_iterations (5) > max_iterations (4)" in _err(
        '[study]\nname = "s"\nmin_iterations = 5\nmax_iterations = 4\n')


def test_fingerprint_ignores_cooldown_but_not_workload() -> None:
    a = parse_experiment('[study]\nname = "s"\n')
    b = parse_experiment('[study]\nname = "s"\n[cooldown]\npause_s = 30\n')
    c = parse_experiment('[study]\nname = "s"\n[workload]\nrequests = 3\n')
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert plan_changes(a.plan_settings(), c.plan_settings()) == ["workload.requests: 32 -> 3"]


def test_overrides_are_validated() -> None:
    exp = parse_experiment('[study]\nname = "s"\n')
    assert exp.updated("workload", requests=4).cell_spec(environment="native").workload.requests == 4
    with pytest.raises(UsageError, match="workload.requests"):
        exp.updated("workload", requests=0)


def test_example_files_are_valid() -> None:
    files = sorted((REPO / "examples").glob("*.toml"))
    assert files
    for f in files:
        load_experiment(f)


def test_key_lines_tables_arrays_and_inline() -> None:
    lines = key_lines('a = 1\n[t]\nb = 2 # c\n[[arr]]\nx = 1\n[[arr]]\ny = { z = 3 }\n[t.sub]\n"q" = 1\n')
    assert lines[("a",)] == 1 and lines[("t", "b")] == 3
    assert lines[("arr", 0, "x")] == 5 and lines[("arr", 1, "y", "z")] == 7
    assert lines[("t", "sub", "q")] == 9


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_text_is_a_file_or_a_usage_error(text: str) -> None:
    try:
        parse_experiment(text)
    except UsageError:
        pass
    key_lines(text)
