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

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.engines.base import REPORT_MARKER, EngineCommand, EngineStep, ModelFile
from memgap.engines.vllm import local_paths, model_of, run_version
from memgap.errors import EngineNotFound, UsageError
from memgap.spec import TrtllmSpec

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

BACKENDS = ("pytorch", "tensorrt", "_autodeploy")
READY_LINE = "Application startup complete."
_ENV = {"PYTHONUNBUFFERED": "1", "TLLM_LOG_LEVEL": "INFO"}


def _version(python: str) -> str | None:
    v = run_version([python, "-c", "import importlib.metadata as m; print(m.version('tensorrt_llm'))"])
    return f"tensorrt_llm {v}" if v else None


TrtllmServeOptions = TrtllmSpec  # the options live in the run spec


class TrtllmServeEngine:
    name = "trtllm"
    ready_line = READY_LINE

    def __init__(self, opts: TrtllmSpec) -> None:
        opts.require_model()
        self.opts = opts

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
        o = self.opts
        argv = [o.executable or "trtllm-serve", "serve", o.model, "--host", host, "--port", str(port), "--backend", o.backend,
                "--tp_size", str(o.tp_size), "--log_level", "info"]
        if o.free_gpu_memory_fraction is not None:
            argv += ["--kv_cache_free_gpu_memory_fraction", f"{o.free_gpu_memory_fraction:g}"]
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
        return self.opts.model_dump(mode="json")

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("trtllm", text)


@dataclass(frozen=True)
class BenchLoad:
    """What trtllm-bench drives itself: synthetic requests of fixed lengths, as the seed
    study ran them (from the run's workload)."""

    num_requests: int = 100
    input_len: int = 128
    output_len: int = 128
    concurrency: int | None = None
    warmup: int | None = None  # None: trtllm-bench's own (2)
    # memgap's client streams; throughput --streaming does too, and its report then has TTFT
    streaming: bool = True


class TrtllmBench:
    """Builds the argument lists of a trtllm-bench study; an environment runs them in
    order in a working directory (``workdir``) that holds the dataset, engine and report.
    It drives its own load (``self_driven``): memgap samples memory during ``throughput``
    and reads the workload's figures from its ``--report_json``."""

    name = "trtllm"
    self_driven = True

    def __init__(self, opts: TrtllmSpec, load: BenchLoad | None = None) -> None:
        opts.require_model()
        if opts.backend not in ("pytorch", "tensorrt"):
            raise UsageError(f"engine.backend: trtllm-bench runs pytorch or tensorrt, not {opts.backend!r}")
        if Path(opts.model).exists():
            # tensorrt_llm/bench/dataclasses/general.py, BenchmarkEnvironment.verify_model_name:
            # "Model is a file or directory, please provide a model name."
            raise UsageError(f"engine.model: trtllm-bench takes a model name, not the path {opts.model!r}; "
                             "give the local checkpoint as engine.model_path")
        self.opts = opts
        self.load = load or BenchLoad()
        for name in ("num_requests", "input_len", "output_len", "concurrency"):
            v = getattr(self.load, name)
            if v is not None and v < 1:
                raise UsageError(f"trtllm-bench {name}: must be >= 1, got {v}")

    def _base(self) -> list[str]:
        argv = [self.opts.executable or "trtllm-bench", "--model", self.opts.model]
        if self.opts.model_path is not None:
            argv += ["--model_path", str(self.opts.model_path)]
        return argv

    def _command(self, argv: list[str], workdir: Path) -> EngineCommand:
        """The step's command: it reads the checkpoint (and an executable given as a
        path) and writes the dataset, engine and report in ``workdir``."""
        read = [p for p in (self.opts.model_path,) if p is not None]
        exe = self.opts.executable
        if exe is not None and os.sep in exe:
            read.append(Path(exe))
        return EngineCommand(argv=tuple(argv), env=dict(_ENV), read_paths=tuple(read), write_paths=(workdir,))

    def dataset_path(self, workdir: Path) -> Path:
        return workdir / "dataset.jsonl"

    def engine_dir(self, workdir: Path) -> Path:
        """Where ``build`` saves the engine: tensorrt_llm/bench/build/build.py,
        ``Path(bench_env.workspace, model_name, f"tp_{tp_size}_pp_{pp_size}")``."""
        return workdir / self.opts.model / f"tp_{self.opts.tp_size}_pp_1"

    def report_path(self, workdir: Path) -> Path:
        return workdir / "report.json"

    def prepare_dataset_command(self, workdir: Path) -> EngineCommand:
        o = self.load
        argv = self._base() + [
            "prepare-dataset", "--output", str(self.dataset_path(workdir)),
            "token-norm-dist", "--num-requests", str(o.num_requests),
            "--input-mean", str(o.input_len), "--input-stdev", "0",
            "--output-mean", str(o.output_len), "--output-stdev", "0",
        ]
        return self._command(argv, workdir)

    def build_command(self, workdir: Path) -> EngineCommand | None:
        """The engine build step; None for the PyTorch backend, which needs none."""
        if self.opts.backend != "tensorrt":
            return None
        argv = self._base() + ["--workspace", str(workdir), "build", "--dataset", str(self.dataset_path(workdir)),
                               "--tp_size", str(self.opts.tp_size)]
        return self._command(argv, workdir)

    def throughput_command(self, workdir: Path, engine_dir: Path | None = None) -> EngineCommand:
        o, load = self.opts, self.load
        argv = self._base() + ["throughput", "--dataset", str(self.dataset_path(workdir)),
                               "--backend", o.backend, "--tp", str(o.tp_size),
                               "--report_json", str(self.report_path(workdir))]
        if o.backend == "tensorrt":
            argv += ["--engine_dir", str(engine_dir or self.engine_dir(workdir))]
        if o.free_gpu_memory_fraction is not None:
            argv += ["--kv_cache_free_gpu_mem_fraction", f"{o.free_gpu_memory_fraction:g}"]
        if load.concurrency is not None:
            argv += ["--concurrency", str(load.concurrency)]
        if load.warmup is not None:
            argv += ["--warmup", str(load.warmup)]
        if load.streaming:
            argv.append("--streaming")
        if o.max_batch_size is not None:
            argv += ["--max_batch_size", str(o.max_batch_size)]
        argv += list(o.extra_args)
        return self._command(argv, workdir)

    def commands(self, workdir: Path) -> list[EngineCommand]:
        return [s.command for s in self.steps(workdir)]

    def steps(self, workdir: Path) -> list[EngineStep]:
        """prepare-dataset, build (TensorRT backend only), throughput (the measured one)."""
        build = self.build_command(workdir)
        return [
            EngineStep("prepare-dataset", self.prepare_dataset_command(workdir)),
            *([EngineStep("build", build)] if build is not None else []),
            EngineStep("throughput", self.throughput_command(workdir), measured=True),
        ]

    def version(self) -> str | None:
        return _version(self.opts.python)

    def model(self) -> ModelFile:
        """The local checkpoint (``model_path``); ``model`` alone is a hub name that
        trtllm-bench would fetch, which memgap cannot identify."""
        if self.opts.model_path is None:
            raise EngineNotFound(f"engine.model_path: trtllm-bench needs the local checkpoint of {self.opts.model!r} "
                                 "so memgap can identify the model (--set engine.model_path=DIR)")
        return model_of(str(self.opts.model_path))

    def options(self) -> dict[str, Any]:
        return {**self.opts.model_dump(mode="json"), "bench_load": asdict(self.load)}

    def workload_summary(self, workdir: Path) -> tuple[dict[str, Any] | None, str | None]:
        from memgap.engines.trtllm_report import parse_bench_report, workload_summary

        path = self.report_path(workdir)
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return None, None
        try:
            return workload_summary(parse_bench_report(text)), text
        except ValueError:
            return None, text

    def parse_log(self, text: str) -> EngineReport:
        """The steps' stdout and stderr (memory lines and the printed overview), then the
        report JSON after ``REPORT_MARKER``: the device total and KV fraction it gives
        fill what the log did not say."""
        from memgap.engines.logs import parse_engine_log
        from memgap.engines.trtllm_report import parse_bench_report

        log, _, report_text = text.partition(REPORT_MARKER)
        report = parse_engine_log("trtllm", log)
        if not report_text.strip():
            return report
        try:
            bench = parse_bench_report(report_text.strip())
        except ValueError:
            return report
        filled: dict[str, Any] = {}
        if report.device_total_bytes is None and bench.device_total_bytes is not None:
            filled["device_total_bytes"] = bench.device_total_bytes
        if report.kv_fraction is None and bench.kv_fraction is not None:
            filled["kv_fraction"] = bench.kv_fraction
        if not filled:
            return report
        said = ", ".join(f"{k}={v}" for k, v in filled.items())
        return replace(report, **filled, evidence=(*report.evidence, f"report_json: {said}"),
                       missing=tuple(m for m in report.missing if m not in filled))
