"""TensorRT-LLM: its OpenAI-compatible server (``trtllm-serve serve``) and its
benchmark (``trtllm-bench``: prepare a dataset, build an engine, run ``throughput``,
the seed study's own method).

Flags: tensorrt_llm/commands/serve.py (``--backend``, ``--tp_size``,
``--max_batch_size``, ``--max_num_tokens``, ``--max_seq_len``,
``--kv_cache_free_gpu_memory_fraction``) and tensorrt_llm/bench (``--model``,
``--model_path``, ``prepare-dataset``, ``build``, ``throughput --dataset
--kv_cache_free_gpu_mem_fraction --engine_dir --report_json``; note the two spellings of
the fraction flag)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.vllm import check_fraction, check_positive, local_paths, model_of, run_version
from memgap.errors import UsageError

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

BACKENDS = ("pytorch", "tensorrt", "_autodeploy")
READY_LINE = "Application startup complete."
_ENV = {"PYTHONUNBUFFERED": "1", "TLLM_LOG_LEVEL": "INFO"}


def _version(python: str) -> str | None:
    v = run_version([python, "-c", "import importlib.metadata as m; print(m.version('tensorrt_llm'))"])
    return f"tensorrt_llm {v}" if v else None


@dataclass(frozen=True)
class TrtllmServeOptions:
    model: str
    executable: str = "trtllm-serve"
    python: str = "python3"  # only to ask the installed version
    backend: str = "pytorch"
    kv_cache_free_gpu_memory_fraction: float | None = None  # None: TensorRT-LLM's 0.9
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    tp_size: int = 1
    extra_llm_api_options: Path | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        if not self.model:
            raise UsageError("TensorRT-LLM needs a model (a local directory or a hub id)")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        check_fraction("--kv_cache_free_gpu_memory_fraction", self.kv_cache_free_gpu_memory_fraction)
        for name in ("max_batch_size", "max_num_tokens", "max_seq_len", "tp_size"):
            check_positive(f"--{name}", getattr(self, name))


class TrtllmServeEngine:
    name = "trtllm"
    ready_line = READY_LINE

    def __init__(self, opts: TrtllmServeOptions) -> None:
        opts.validate()
        self.opts = opts

    def command(self, host: str, port: int) -> EngineCommand:
        o = self.opts
        argv = [o.executable, "serve", o.model, "--host", host, "--port", str(port), "--backend", o.backend,
                "--tp_size", str(o.tp_size), "--log_level", "info"]
        if o.kv_cache_free_gpu_memory_fraction is not None:
            argv += ["--kv_cache_free_gpu_memory_fraction", f"{o.kv_cache_free_gpu_memory_fraction:g}"]
        for name in ("max_batch_size", "max_num_tokens", "max_seq_len"):
            value = getattr(o, name)
            if value is not None:
                argv += [f"--{name}", str(value)]
        read = list(local_paths(o.model))
        if o.extra_llm_api_options is not None:
            argv += ["--extra_llm_api_options", str(o.extra_llm_api_options)]
            read.append(o.extra_llm_api_options)
        argv += list(o.extra_args)
        return EngineCommand(argv=tuple(argv), env=dict(_ENV), read_paths=tuple(read))

    def health_path(self) -> str:
        return "/health"

    def metrics_path(self) -> str | None:
        return "/metrics"

    def version(self) -> str | None:
        return _version(self.opts.python)

    def model(self) -> ModelFile:
        return model_of(self.opts.model)

    def options(self) -> dict[str, Any]:
        d = asdict(self.opts)
        extra = self.opts.extra_llm_api_options
        d["extra_llm_api_options"] = None if extra is None else str(extra)
        d["extra_args"] = list(self.opts.extra_args)
        return d

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("trtllm", text)


@dataclass(frozen=True)
class TrtllmBenchOptions:
    """One ``trtllm-bench`` study step: synthetic requests of fixed lengths, as the
    seed study ran them."""

    model: str  # the hub name trtllm-bench uses for its tokenizer and config
    model_path: Path | None = None  # local checkpoint (else trtllm-bench downloads)
    executable: str = "trtllm-bench"
    python: str = "python3"
    backend: str = "pytorch"  # "tensorrt" builds an engine first (``build``)
    num_requests: int = 100
    input_len: int = 128
    output_len: int = 128
    concurrency: int | None = None
    max_batch_size: int | None = None
    kv_cache_free_gpu_mem_fraction: float | None = None
    tp_size: int = 1
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        if not self.model:
            raise UsageError("trtllm-bench needs --model (the model's hub name)")
        if self.backend not in ("pytorch", "tensorrt"):
            raise UsageError(f"trtllm-bench backend {self.backend!r} is not pytorch or tensorrt")
        check_fraction("--kv_cache_free_gpu_mem_fraction", self.kv_cache_free_gpu_mem_fraction)
        for name in ("num_requests", "input_len", "output_len", "concurrency", "max_batch_size", "tp_size"):
            check_positive(f"--{name}", getattr(self, name))


class TrtllmBench:
    """Builds the argument lists of a trtllm-bench study; an environment runs them in
    order in a working directory (``workdir``) that holds the dataset, engine and report."""

    name = "trtllm"

    def __init__(self, opts: TrtllmBenchOptions) -> None:
        opts.validate()
        self.opts = opts

    def _base(self) -> list[str]:
        argv = [self.opts.executable, "--model", self.opts.model]
        if self.opts.model_path is not None:
            argv += ["--model_path", str(self.opts.model_path)]
        return argv

    def _read(self, workdir: Path) -> tuple[Path, ...]:
        paths = [workdir]
        if self.opts.model_path is not None:
            paths.append(self.opts.model_path)
        return tuple(paths)

    def dataset_path(self, workdir: Path) -> Path:
        return workdir / "dataset.jsonl"

    def engine_dir(self, workdir: Path) -> Path:
        return workdir / "engine"

    def report_path(self, workdir: Path) -> Path:
        return workdir / "report.json"

    def prepare_dataset_command(self, workdir: Path) -> EngineCommand:
        o = self.opts
        argv = self._base() + [
            "prepare-dataset", "--output", str(self.dataset_path(workdir)),
            "token-norm-dist", "--num-requests", str(o.num_requests),
            "--input-mean", str(o.input_len), "--input-stdev", "0",
            "--output-mean", str(o.output_len), "--output-stdev", "0",
        ]
        return EngineCommand(argv=tuple(argv), env=dict(_ENV), read_paths=self._read(workdir))

    def build_command(self, workdir: Path) -> EngineCommand | None:
        """The engine build step; None for the PyTorch backend, which needs none."""
        if self.opts.backend != "tensorrt":
            return None
        argv = self._base() + ["--workspace", str(workdir), "build", "--dataset", str(self.dataset_path(workdir)),
                               "--tp_size", str(self.opts.tp_size)]
        return EngineCommand(argv=tuple(argv), env=dict(_ENV), read_paths=self._read(workdir))

    def throughput_command(self, workdir: Path, engine_dir: Path | None = None) -> EngineCommand:
        o = self.opts
        argv = self._base() + ["throughput", "--dataset", str(self.dataset_path(workdir)),
                               "--backend", o.backend, "--tp", str(o.tp_size),
                               "--report_json", str(self.report_path(workdir))]
        if o.backend == "tensorrt":
            argv += ["--engine_dir", str(engine_dir or self.engine_dir(workdir))]
        if o.kv_cache_free_gpu_mem_fraction is not None:
            argv += ["--kv_cache_free_gpu_mem_fraction", f"{o.kv_cache_free_gpu_mem_fraction:g}"]
        if o.concurrency is not None:
            argv += ["--concurrency", str(o.concurrency)]
        if o.max_batch_size is not None:
            argv += ["--max_batch_size", str(o.max_batch_size)]
        argv += list(o.extra_args)
        return EngineCommand(argv=tuple(argv), env=dict(_ENV), read_paths=self._read(workdir))

    def commands(self, workdir: Path) -> list[EngineCommand]:
        steps = [self.prepare_dataset_command(workdir), self.build_command(workdir), self.throughput_command(workdir)]
        return [s for s in steps if s is not None]

    def version(self) -> str | None:
        return _version(self.opts.python)

    def options(self) -> dict[str, Any]:
        d = asdict(self.opts)
        d["model_path"] = None if self.opts.model_path is None else str(self.opts.model_path)
        d["extra_args"] = list(self.opts.extra_args)
        return d

    def parse_log(self, text: str) -> EngineReport:
        """The run's stdout and stderr: memory lines and the final report."""
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("trtllm", text)
