from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from memgap.engines import llamacpp
from memgap.engines.llamacpp import (
    LlamaCppEngine,
    LlamaCppOptions,
    embedded_model_path,
    find_server,
)
from memgap.errors import EngineNotFound, UsageError
from memgap.spec import RunSpec


def fake_server(tmp: Path, help_text: str) -> Path:
    """A stand-in executable that prints a help text like llama-server's."""
    p = tmp / "bin" / "llama-server"
    p.parent.mkdir(parents=True)
    p.write_text(f"#!/bin/sh\ncat <<'EOF'\n{help_text}\nEOF\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


@pytest.fixture(autouse=True)
def _clear_caches() -> None:
    llamacpp._help_text.cache_clear()
    llamacpp.server_version.cache_clear()


def test_command_has_every_option(tmp_path: Path) -> None:
    server = fake_server(tmp_path, "-lm, --load-mode MODE")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    eng = LlamaCppEngine(
        LlamaCppOptions(model_path=model, ctx_size=4096, parallel=2, threads=3, mmap=False, kv_type="q8_0",
                        kv_unified=True, server_path=server, extra_args=("--flash-attn", "on"))
    )
    cmd = eng.command("127.0.0.1", 18123)
    argv = list(cmd.argv)

    def after(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert argv[0] == str(server.resolve())
    assert after("--model") == str(model)
    assert after("--port") == "18123" and after("--host") == "127.0.0.1"
    assert after("--ctx-size") == "4096" and after("--parallel") == "2" and after("--threads") == "3"
    assert after("--cache-type-k") == "q8_0" and after("--cache-type-v") == "q8_0"
    assert "--kv-unified" in argv and "--no-kv-unified" not in argv
    assert after("--load-mode") == "none"  # this build has --load-mode instead of --no-mmap
    assert after("--verbosity") == "4"  # KV/buffer lines are printed only at 4
    assert "--metrics" in argv and after("--cache-ram") == "0"
    assert argv[-2:] == ["--flash-attn", "on"]
    assert cmd.env["LD_LIBRARY_PATH"] == str(server.resolve().parent)
    assert model in cmd.read_paths
    opts = eng.options()
    assert opts["threads"] == 3 and opts["model_path"] == str(model) and opts["extra_args"] == ["--flash-attn", "on"]


def test_older_builds_get_no_mmap(tmp_path: Path) -> None:
    server = fake_server(tmp_path, "--no-mmap  do not memory-map model")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    argv = LlamaCppEngine(LlamaCppOptions(model_path=model, mmap=False, server_path=server)).command("h", 1).argv
    assert "--no-mmap" in argv and "--load-mode" not in argv
    argv = LlamaCppEngine(LlamaCppOptions(model_path=model, mmap=True, server_path=server)).command("h", 1).argv
    assert "--no-mmap" not in argv


@pytest.mark.parametrize(
    ("opts", "msg"),
    [
        ({"ctx_size": 0}, r"engine\.ctx_size"),
        ({"parallel": -1}, r"engine\.parallel"),
        ({"threads": 0}, r"engine\.threads"),
        ({"kv_type": "f8"}, r"engine\.kv_type"),
    ],
)
def test_bad_options(opts: dict[str, object], msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        RunSpec.from_dict({"engine": opts})


def test_missing_model_and_server(tmp_path: Path) -> None:
    server = fake_server(tmp_path, "")
    with pytest.raises(UsageError, match="no such file"):
        LlamaCppEngine(LlamaCppOptions(model_path=tmp_path / "nope.gguf", server_path=server))
    with pytest.raises(EngineNotFound, match="llama-server not found"):
        find_server(tmp_path / "missing")


def test_env_var_names_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = fake_server(tmp_path, "")
    monkeypatch.setenv("MEMGAP_LLAMA_SERVER", str(server))
    assert find_server() == server.resolve()


@pytest.mark.skipif(not os.environ.get("CI") and not Path(".venv").exists(), reason="needs the installed engine")
def test_embedded_model_is_the_smollm2_gguf() -> None:
    p = embedded_model_path()
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with p.open("rb") as f:
        assert f.read(4) == b"GGUF"
