"""SGLang's server (``python -m sglang.launch_server``).

Flags: python/sglang/srt/server_args.py (``--model-path``, ``--mem-fraction-static``,
``--context-length``, ``--max-running-requests``, ``--kv-cache-dtype``, ``--tp-size``,
``--enable-metrics``). Leaving ``--mem-fraction-static`` out lets SGLang derive it from
the card, which is what its users get by default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.vllm import local_paths, model_of, run_version
from memgap.errors import UsageError
from memgap.spec import SglangSpec

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

KV_CACHE_DTYPES = ("auto", "fp8_e4m3", "fp8_e5m2", "bf16", "bfloat16")
READY_LINE = "The server is fired up and ready to roll!"


SglangOptions = SglangSpec  # the options live in the run spec


class SglangEngine:
    name = "sglang"
    ready_line = READY_LINE

    def __init__(self, opts: SglangSpec) -> None:
        opts.require_model()
        if opts.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise UsageError(f"engine.kv_cache_dtype (--kv-cache-dtype): {opts.kv_cache_dtype!r} is not one of "
                             f"{', '.join(KV_CACHE_DTYPES)}")
        self.opts = opts

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
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
        if o.max_total_tokens is not None:
            argv += ["--max-total-tokens", str(o.max_total_tokens)]
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
        return self.opts.model_dump(mode="json")

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("sglang", text)
