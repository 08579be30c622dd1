"""`memgap run` with --ray / --resume / [cluster]: what is refused, and how, before any run."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.cli.main import main


def _exp(tmp: Path, extra: str = "") -> Path:
    p = tmp / "exp.toml"
    p.write_text('[study]\nname = "s"\nenvironments = ["native"]\niterations = 1\n' + extra)
    return p


def test_ray_and_resume_need_an_experiment_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--ray", "auto"]) == 2
    assert "--ray and --resume run a study: give its experiment file" in capsys.readouterr().err


def test_resume_of_a_study_that_is_not_there_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(_exp(tmp_path)), "--store", str(tmp_path / "s.db"), "--resume"]) == 2
    assert "--resume: study 's' is not in" in capsys.readouterr().err


def test_a_host_axis_without_a_cluster_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = _exp(tmp_path, '[cluster]\nhosts = ["a", "b"]\n')
    assert main(["run", str(exp), "--store", str(tmp_path / "s.db")]) == 2
    assert "runs on a Ray cluster: give --ray ADDRESS or [cluster] address" in capsys.readouterr().err


def test_an_unreachable_cluster_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(**kw: object) -> None:
        raise ConnectionError(f"Could not find any running Ray instance at {kw['address']}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    assert main(["run", str(_exp(tmp_path)), "--store", str(tmp_path / "s.db"), "--ray", "10.9.9.9:6379"]) == 2
    err = capsys.readouterr().err
    assert "cannot join the Ray cluster at '10.9.9.9:6379'" in err and "memgap_slot" in err
