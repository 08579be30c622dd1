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
  (MemAvailable on unified memory)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from memgap.errors import UsageError


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
