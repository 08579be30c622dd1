"""vLLM's OpenAI-compatible server (``vllm serve``).

The adapter only builds the command and reads text; the environment runs it, so the
same adapter works natively or in a container whose image holds vLLM (the host need
not have it). Flags: vllm/engine/arg_utils.py (``--gpu-memory-utilization``,
``--max-model-len``, ``--max-num-seqs``, ``--kv-cache-dtype``, ``--block-size``,
``--tensor-parallel-size``, ``--enforce-eager``)."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.engines.base import EngineCommand, ModelFile
from memgap.errors import UsageError

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")
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
    from memgap.modelcfg import model_identity

    return model_identity(Path(model))


@dataclass(frozen=True)
class VllmOptions:
    model: str  # a local directory (preferred: it can be identified) or a hub id
    executable: str = "vllm"
    gpu_memory_utilization: float | None = None  # None: vLLM's default (0.9; 0.92 in newer releases)
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    served_model_name: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        if not self.model:
            raise UsageError("vLLM needs a model (a local directory or a hub id)")
        check_fraction("--gpu-memory-utilization", self.gpu_memory_utilization)
        check_positive("--max-model-len", self.max_model_len)
        check_positive("--max-num-seqs", self.max_num_seqs)
        check_positive("--block-size", self.block_size)
        check_positive("--tensor-parallel-size", self.tensor_parallel_size)
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise UsageError(f"--kv-cache-dtype {self.kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}")


class VllmEngine:
    name = "vllm"
    ready_line = READY_LINE

    def __init__(self, opts: VllmOptions) -> None:
        opts.validate()
        self.opts = opts

    def command(self, host: str, port: int) -> EngineCommand:
        o = self.opts
        argv = [o.executable, "serve", o.model, "--host", host, "--port", str(port),
                "--tensor-parallel-size", str(o.tensor_parallel_size), "--kv-cache-dtype", o.kv_cache_dtype]
        if o.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", f"{o.gpu_memory_utilization:g}"]
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
        return EngineCommand(
            argv=tuple(argv),
            # Colour codes off (they are stripped when parsing anyway) and logs unbuffered,
            # so the memory lines reach the log before the engine is declared ready.
            env={"NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "VLLM_LOGGING_LEVEL": "INFO"},
            read_paths=local_paths(o.model),
        )

    def health_path(self) -> str:
        return "/health"

    def metrics_path(self) -> str | None:
        return "/metrics"

    def version(self) -> str | None:
        v = run_version([self.opts.executable, "--version"])
        return f"vllm {v}" if v else None

    def model(self) -> ModelFile:
        return model_of(self.opts.model)

    def options(self) -> dict[str, Any]:
        d = asdict(self.opts)
        d["extra_args"] = list(self.opts.extra_args)
        return d

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("vllm", text)
