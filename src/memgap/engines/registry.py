"""The engine registry, beside the environments': what each engine is, from its spec.

Each entry declares how the engine is launched (its adapter builds the command), how
readiness is seen, which sizing rule of :mod:`memgap.sizing` its KV cache follows and the
memory reading that rule takes, and what it needs in a container. The adapters are
imported only when an engine is made, so the registry itself is cheap to read (doctor,
probe, --help)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.errors import EngineNotFound
from memgap.spec import ENGINES, EngineSpec, RunSpec

if TYPE_CHECKING:
    from memgap.engines.base import Engine, SelfDrivenEngine


@dataclass(frozen=True)
class ContainerNeeds:
    """What an engine needs from a container runtime, beyond the model bind-mounted
    read-only (every engine's command lists the paths it reads)."""

    gpu: bool  # --gpus all / the CDI device, where the engine runs on a GPU
    ipc_host: bool  # passes tensors through shared memory (NCCL, torch multiprocessing)
    shm_size: str | None  # what it needs in /dev/shm when not --ipc=host (docker's default: 64m)
    image: str | None  # the image people run it from (memgap runs its own rootfs by default)


@dataclass(frozen=True)
class EngineInfo:
    kind: str
    adapter: str  # module:class
    title: str
    readiness: str  # how memgap sees the engine is ready
    sizing_rule: str | None  # memgap.sizing rule name; None: the KV size is fixed by options
    memory_reading: str  # what that rule reads
    metrics_path: str | None
    kv_usage_gauges: tuple[str, ...]
    queue_gauges: tuple[str, ...]
    container: ContainerNeeds
    self_driven: bool = False  # runs its own workload (trtllm-bench)
    health_path: str = "/health"  # answers 200 once the engine is ready


REGISTRY: dict[str, EngineInfo] = {
    "llamacpp": EngineInfo(
        kind="llamacpp", adapter="memgap.engines.llamacpp:LlamaCppEngine", title="llama.cpp (llama-server)",
        readiness="GET /health answers 200", sizing_rule=None,
        memory_reading="none: n_ctx (-c) fixes the KV cache (--fit alone reads MemAvailable)",
        metrics_path="/metrics",
        kv_usage_gauges=("llamacpp:kv_cache_usage_ratio",),
        queue_gauges=("llamacpp:requests_deferred", "llamacpp:requests_processing"),
        container=ContainerNeeds(gpu=False, ipc_host=False, shm_size=None, image="ghcr.io/ggml-org/llama.cpp:server"),
    ),
    "vllm": EngineInfo(
        kind="vllm", adapter="memgap.engines.vllm:VllmEngine", title="vLLM",
        readiness="GET /health answers 200 (after 'Application startup complete.')",
        sizing_rule="vllm",
        memory_reading="GPU: cudaMemGetInfo total (MemAvailable on integrated GPUs); "
        "CPU: the NUMA node's MemTotal and free+reclaimable, clamped by the cgroup limit",
        metrics_path="/metrics",
        kv_usage_gauges=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        queue_gauges=("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:num_preemptions_total"),
        container=ContainerNeeds(gpu=True, ipc_host=True, shm_size="8g", image="vllm/vllm-openai"),
    ),
    "sglang": EngineInfo(
        kind="sglang", adapter="memgap.engines.sglang:SglangEngine", title="SGLang",
        readiness="GET /health answers 200", sizing_rule="sglang",
        memory_reading="torch.cuda.mem_get_info free (~MemFree on unified memory)",
        metrics_path="/metrics",
        kv_usage_gauges=("sglang:token_usage",),
        queue_gauges=("sglang:num_queue_reqs", "sglang:num_running_reqs"),
        container=ContainerNeeds(gpu=True, ipc_host=True, shm_size="32g", image="lmsysorg/sglang"),
    ),
    "trtllm": EngineInfo(
        kind="trtllm", adapter="memgap.engines.trtllm:TrtllmServeEngine", title="TensorRT-LLM",
        readiness="serve: GET /health answers 200; bench: the throughput step exits",
        sizing_rule="trtllm-pytorch",
        memory_reading="cudaMemGetInfo free (~MemFree on unified memory: page cache counts as used)",
        metrics_path="/metrics",
        kv_usage_gauges=(),
        queue_gauges=(),
        container=ContainerNeeds(gpu=True, ipc_host=True, shm_size="1g", image="nvcr.io/nvidia/tensorrt-llm/release"),
    ),
}
assert tuple(REGISTRY) == ENGINES


def engine_info(kind: str) -> EngineInfo:
    return REGISTRY[kind]


# Modes in which an engine drives its own workload: memgap runs its steps and samples
# memory meanwhile, and reads throughput from the engine's own report.
SELF_DRIVEN: dict[tuple[str, str], str] = {("trtllm", "bench"): "memgap.engines.trtllm:TrtllmBench"}


def self_driven_adapter(spec: EngineSpec) -> str | None:
    mode = getattr(spec, "mode", None)
    return SELF_DRIVEN.get((spec.kind, mode)) if isinstance(mode, str) else None


def make_engine(spec: EngineSpec, **extra: Any) -> Engine:
    """The adapter for ``spec`` (checks what it can without starting anything)."""
    info = REGISTRY[spec.kind]
    module, cls = (self_driven_adapter(spec) or info.adapter).split(":")
    adapter = getattr(importlib.import_module(module), cls)
    return adapter(spec, **extra)


def engine_for_run(spec: RunSpec) -> Engine | SelfDrivenEngine:
    """The engine of one run: an attached engine (nothing to launch), a self-driven one
    (its load from the run's workload), or the adapter; an engine memgap would start from
    this machine's files must be installed here (EngineNotFound names what is missing)."""
    if spec.environment.attach is not None:
        from memgap.engines.attached import AttachedEngine

        return AttachedEngine(spec.engine, spec.environment.attach.url)
    if self_driven_adapter(spec.engine) is not None:
        from memgap.engines.trtllm import BenchLoad

        w = spec.workload
        load = BenchLoad(num_requests=w.requests, input_len=w.prompt_tokens, output_len=w.output_tokens,
                         concurrency=w.concurrency, warmup=w.warmup_requests)
        engine: Any = make_engine(spec.engine, load=load)
    else:
        engine = make_engine(spec.engine)
    container = spec.environment.container
    if not (container.image or container.rootfs):  # an image brings its own engine
        require_installed(spec.engine, engine)
    return engine


def _executable(name: str) -> Path | None:
    if os.sep in name:
        p = Path(name)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which(name)
    return Path(found) if found else None


def _has_module(python: str, module: str) -> bool | None:
    """Whether ``python`` can import ``module`` (found, not imported: cheap); None when the
    interpreter itself is missing."""
    if _executable(python) is None:
        return None
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return None


def _image_hint(kind: str) -> str:
    return f"or run it from an image (--env docker --image {REGISTRY[kind].container.image})"


_INSTALL = {
    "vllm": "scripts/setup.sh --engine vllm",
    "sglang": "pip install sglang; it needs an NVIDIA GPU",
    "trtllm": "pip install tensorrt_llm; it needs an NVIDIA GPU",
}


def require_installed(spec: EngineSpec, engine: Any) -> None:
    """Raise EngineNotFound, naming what is missing, when the engine memgap would start is
    not installed on this machine (llama.cpp's adapter checks its binary itself)."""
    title = REGISTRY[spec.kind].title
    if spec.kind in ("vllm", "sglang"):
        python = getattr(getattr(engine, "opts", spec), "python", None) or "python3"
        has = _has_module(python, spec.kind)
        if has is None:
            raise EngineNotFound(f"{title}: the interpreter {python!r} was not found; pass --engine-python, "
                                 f"{_image_hint(spec.kind)}")
        if not has:
            raise EngineNotFound(f"{title} is not installed: {python} has no module {spec.kind!r}. Install it "
                                 f"({_INSTALL[spec.kind]}), pass --engine-python, {_image_hint(spec.kind)}")
    elif spec.kind == "trtllm":
        exe = spec.executable or ("trtllm-bench" if spec.mode == "bench" else "trtllm-serve")
        if _executable(exe) is None:
            where = "" if os.sep in exe else " on PATH"
            raise EngineNotFound(f"{title} is not installed: {exe} not found{where}. Install it "
                                 f"({_INSTALL['trtllm']}), point --set engine.executable=PATH at it, "
                                 f"{_image_hint('trtllm')}")
