"""The engine registry, beside the environments': what each engine is, from its spec.

Each entry declares how the engine is launched (its adapter builds the command), how
readiness is seen, which sizing rule of :mod:`memgap.sizing` its KV cache follows and the
memory reading that rule takes, and what it needs in a container. The adapters are
imported only when an engine is made, so the registry itself is cheap to read (doctor,
probe, --help)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memgap.spec import ENGINES, EngineSpec

if TYPE_CHECKING:
    from memgap.engines.base import Engine


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


def make_engine(spec: EngineSpec, **extra: Any) -> Engine:
    """The adapter for ``spec`` (checks what it can without starting anything)."""
    info = REGISTRY[spec.kind]
    module, cls = info.adapter.split(":")
    if spec.kind == "trtllm" and spec.mode == "bench":
        module, cls = "memgap.engines.trtllm", "TrtllmBench"
    adapter = getattr(importlib.import_module(module), cls)
    return adapter(spec, **extra)
