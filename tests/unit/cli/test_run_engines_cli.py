"""``memgap run --engine trtllm|sglang`` on a machine without them: exit 3 with one line
naming what is missing and how to get it, before anything is created (no store, no
scratch folder, no process)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from memgap.cli.main import main


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--engine", "trtllm", "--model", "/models/x"],
         ["TensorRT-LLM is not installed", "trtllm-serve not found on PATH", "pip install tensorrt_llm",
          "--image nvcr.io/nvidia/tensorrt-llm/release"]),
        (["--engine", "trtllm", "--set", "engine.mode=bench", "--model", "org/x", "--set", "engine.model_path=/m"],
         ["trtllm-bench not found on PATH"]),
        (["--engine", "trtllm", "--set", "engine.executable=/nonexistent/trtllm-serve", "--model", "/models/x"],
         ["/nonexistent/trtllm-serve not found."]),
        (["--engine", "sglang", "--model", "org/x", "--engine-python", sys.executable],
         ["SGLang is not installed", "has no module 'sglang'", "--engine-python", "--image lmsysorg/sglang"]),
        (["--engine", "sglang", "--model", "org/x", "--engine-python", "/nonexistent/python3"],
         ["the interpreter '/nonexistent/python3' was not found"]),
    ],
)
def test_engine_not_installed(args: list[str], needles: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str], no_leftovers: None) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + ":/usr/bin:/bin")  # no TensorRT-LLM on it
    rc = main(["run", *args, "--store", str(tmp_path / "r.db")])
    err = capsys.readouterr().err.strip()
    assert rc == 3, err
    assert err.startswith("memgap: error: ") and "\n" not in err
    for needle in needles:
        assert needle in err
    assert list(tmp_path.iterdir()) == []  # not even the store


def test_an_image_brings_its_own_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--image: the engine lives in the image, so the host's install is not asked for
    (what fails next is the container runtime, not the engine check)."""
    from memgap.engines.registry import engine_for_run
    from memgap.spec import RunSpec

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    spec = RunSpec.from_dict({"engine": {"kind": "sglang", "model": "org/x"},
                              "environment": {"name": "docker", "container": {"image": "lmsysorg/sglang"}}})
    assert engine_for_run(spec).name == "sglang"
