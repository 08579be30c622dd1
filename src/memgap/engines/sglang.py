"""SGLang's server (``python -m sglang.launch_server``).

Flags: python/sglang/srt/server_args.py (``--model-path``, ``--mem-fraction-static``,
``--context-length``, ``--max-running-requests``, ``--kv-cache-dtype``, ``--tp-size``,
``--enable-metrics``). Leaving ``--mem-fraction-static`` out lets SGLang derive it from
the card, which is what its users get by default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.vllm import check_fraction, check_positive, local_paths, model_of, run_version
from memgap.errors import UsageError

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

KV_CACHE_DTYPES = ("auto", "fp8_e4m3", "fp8_e5m2", "bf16", "bfloat16")
READY_LINE = "The server is fired up and ready to roll!"


@dataclass(frozen=True)
class SglangOptions:
    model: str
    python: str = "python3"
    mem_fraction_static: float | None = None
    context_length: int | None = None
    max_running_requests: int | None = None
    kv_cache_dtype: str = "auto"
    tp_size: int = 1
    disable_cuda_graph: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> None:
        if not self.model:
            raise UsageError("SGLang needs a model (a local directory or a hub id)")
        check_fraction("--mem-fraction-static", self.mem_fraction_static)
        check_positive("--context-length", self.context_length)
        check_positive("--max-running-requests", self.max_running_requests)
        check_positive("--tp-size", self.tp_size)
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise UsageError(f"--kv-cache-dtype {self.kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}")


class SglangEngine:
    name = "sglang"
    ready_line = READY_LINE

    def __init__(self, opts: SglangOptions) -> None:
        opts.validate()
        self.opts = opts

    def command(self, host: str, port: int) -> EngineCommand:
        o = self.opts
        argv = [o.python, "-m", "sglang.launch_server", "--model-path", o.model, "--host", host,
                "--port", str(port), "--tp-size", str(o.tp_size), "--kv-cache-dtype", o.kv_cache_dtype,
                "--enable-metrics", "--log-level", "info"]
        if o.mem_fraction_static is not None:
            argv += ["--mem-fraction-static", f"{o.mem_fraction_static:g}"]
        if o.context_length is not None:
            argv += ["--context-length", str(o.context_length)]
        if o.max_running_requests is not None:
            argv += ["--max-running-requests", str(o.max_running_requests)]
        if o.disable_cuda_graph:
            argv.append("--disable-cuda-graph")
        argv += list(o.extra_args)
        return EngineCommand(argv=tuple(argv), env={"PYTHONUNBUFFERED": "1", "NO_COLOR": "1"},
                             read_paths=local_paths(o.model))

    def health_path(self) -> str:
        return "/health"

    def metrics_path(self) -> str | None:
        return "/metrics"

    def version(self) -> str | None:
        v = run_version([self.opts.python, "-c", "import importlib.metadata as m; print(m.version('sglang'))"])
        return f"sglang {v}" if v else None

    def model(self) -> ModelFile:
        return model_of(self.opts.model)

    def options(self) -> dict[str, Any]:
        d = asdict(self.opts)
        d["extra_args"] = list(self.opts.extra_args)
        return d

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("sglang", text)
