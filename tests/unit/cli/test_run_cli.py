"""Bad input to ``memgap run``: one line naming what was wrong, exit 2, nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.cli.main import main


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--env", "bogus"], "unknown environment 'bogus'"),
        (["--env", "native", "--env", "native"], "each environment once"),
        (["--memory-limit", "12zz"], "--memory-limit (environment.memory_limit_bytes): unknown unit"),
        (["--env", "native", "--memory-limit", "1GiB"], "--memory-limit needs an environment with its own cgroup"),
        (["--requests", "0"], "requests"),
        (["--kv-type", "f8"], "--kv-type"),
        (["--sample-rate", "0"], "--sample-rate"),
        (["--api", "embeddings"], "api"),
        (["--store", "/nonexistent-dir/x.db", "--env", "native"], "does not exist"),
        (["--attach", "http://127.0.0.1:9", "--env", "native"], "--attach measures an engine that is already running"),
        (["--attach", "http://127.0.0.1:9", "--pid", "1", "--container", "c"], "at most one of pid, container, cgroup"),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["run", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("memgap: error: ") and "\n" not in err
    assert needle in err
    assert not (tmp_path / "memgap.db").exists()  # nothing written for bad input


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--no-such-option"]) == 2
    assert "--no-such-option" in capsys.readouterr().err
