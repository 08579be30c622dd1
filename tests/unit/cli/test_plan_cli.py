"""``memgap plan`` end to end through ``main(argv)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main

MODELS = Path(__file__).parents[2] / "fixtures" / "models"
GiB = 1 << 30


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main(["plan", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_seed_study_native_vs_container(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--model", str(MODELS / "deepseek-r1-distill-qwen-7b"),
                   "--kv-budget", "37.26GiB", "--kv-budget", "13.31GiB", "--context", "8192")
    assert out["bytes_per_token"] == 57344
    assert out["kv_dtype"] == "bf16"
    native, container = out["budgets"]
    assert native["kv_budget_bytes"] == round(37.26 * GiB)
    assert (native["max_tokens"], container["max_tokens"]) == (697677, 249224)
    assert (native["max_sequences"], container["max_sequences"]) == (85, 30)
    assert container["first_over_this_sequences"] == pytest.approx(2.83, abs=0.01)
    assert container["ratio_sequences_vs_first"] == pytest.approx(30 / 85, abs=1e-4)


def test_budgets_keep_their_order_and_sizes_parse(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--layers", "30", "--kv-heads", "3", "--head-dim", "64",
                   "-b", "512MiB", "-b", "1e9", "-b", "180MiB")
    assert [b["kv_budget_bytes"] for b in out["budgets"]] == [512 << 20, 10**9, 180 << 20]
    assert out["budgets"][2]["max_tokens"] == 8192  # llama.cpp's 180.00 MiB at 8192 cells
    assert out["budgets"][0]["max_sequences"] is None  # no --context


def test_concurrency_gives_longest_context(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--layers", "30", "--kv-heads", "3", "--head-dim", "64",
                   "-b", "180MiB", "--concurrency", "4")
    assert out["budgets"][0]["max_context"] == 2048


def test_mla_and_sliding_window_models(capsys: pytest.CaptureFixture[str]) -> None:
    v3 = run_json(capsys, "--model", str(MODELS / "deepseek-v3"), "-b", "10GiB", "--context", "4096")
    assert v3["bytes_per_token"] == 61 * 576 * 2
    oss = run_json(capsys, "--model", str(MODELS / "gpt-oss-120b"), "-b", "10GiB", "--context", "8192")
    row = oss["budgets"][0]
    assert row["bytes_per_sequence"] == (18 * 8192 + 18 * 128) * 8 * 64 * 2 * 2
    assert row["max_sequences"] > row["max_tokens"] // 8192  # windowed layers cost less
    assert row["vllm_max_concurrency"] is None  # the uniform-model formula does not apply


def test_quantized_type_override(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "--model", str(MODELS / "smollm2-135m"), "-b", "1GiB", "--kv-dtype", "q4_0")
    assert out["bytes_per_token"] == 30 * 2 * 6 * 18


def test_text_output_names_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", str(MODELS / "deepseek-r1-distill-qwen-7b"),
                 "-b", "37.26GiB", "-b", "13.31GiB", "--context", "8192"]) == 0
    out = capsys.readouterr().out
    assert "57,344 B" in out
    assert "37.26GiB holds 2.83x the sequences of 13.31GiB" in out


@pytest.mark.parametrize("argv", [
    ["-b", "1GiB"],
    ["-b", "lots", "--layers", "2", "--kv-heads", "1", "--head-dim", "8"],
    ["-b", "1GiB", "--layers", "2", "--kv-heads", "1", "--head-dim", "8", "--kv-dtype", "q2_k"],
    ["-b", "1GiB", "--model", "/nonexistent/config.json"],
    ["-b", "1GiB", "--layers", "2", "--kv-heads", "1", "--head-dim", "8", "--context", "0"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", *argv]) == 2
    assert "memgap: error:" in capsys.readouterr().err


def test_kv_bound_shape_fills_the_first_budget_at_the_given_concurrency(capsys: pytest.CaptureFixture[str]) -> None:
    # 1024 and 3072 cells of SmolLM2 (23,040 B each): the capacity test's two budgets
    out = run_json(capsys, "--model", str(MODELS / "smollm2-135m"), "-b", str(1024 * 23040),
                   "-b", str(3072 * 23040), "--kv-bound-at", "4")
    shape = out["kv_bound_shape"]
    assert (shape["kv_tokens"], shape["tokens_per_request"], shape["prompt_tokens"], shape["output_tokens"]) == (
        1024, 256, 64, 192)
    assert out["context"] == 256
    assert [b["max_sequences"] for b in out["budgets"]] == [4, 12]
    assert out["budgets"][1]["first_over_this_sequences"] == pytest.approx(1 / 3, abs=1e-3)
    assert main(["plan", "-b", str(1024 * 23040), "--model", str(MODELS / "smollm2-135m"), "--kv-bound-at", "4"]) == 0
    printed = capsys.readouterr().out
    assert "prompt 64 + output 192 = 256 tokens per request" in printed and "--ctx-size 1024 --parallel 4" in printed
    assert main(["plan", "-b", "1GiB", "--model", str(MODELS / "smollm2-135m"), "--kv-bound-at", "4",
                 "--context", "100"]) != 0
