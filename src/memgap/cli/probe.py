"""``memgap probe``: the KV budget each engine's rule would give here, now."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memgap.diagnose.machine import add_probe_notes
from memgap.errors import UsageError
from memgap.kv import kv_dtype
from memgap.modelcfg import read_model_config
from memgap.probe import (
    CPU_ENVIRONMENTS,
    Assumptions,
    ProbeResult,
    VllmCpuAssumptions,
    evaluate,
    gather,
)
from memgap.sizing import VLLM_CPU_ENGINE_BYTES, VLLM_CPU_WORKER_RSS_BYTES, CpuEngineCosts
from memgap.units import format_bytes, parse_size


def probe(
    weights_bytes: Annotated[str | None, typer.Option(
        "--weights-bytes", "-w", help="Model weights (e.g. 15.2GiB); default: from --model.")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="config.json / model directory / .gguf: weights and KV bytes per token.")] = None,
    kv_dtype_name: Annotated[str | None, typer.Option("--kv-dtype", help="KV cache type (default: the model's).")] = None,
    context: Annotated[int | None, typer.Option(help="n_ctx for llama.cpp's --fit rule.")] = None,
    activation: Annotated[str, typer.Option(
        "--activation-bytes", help="Activation peak during profiling (assumed).")] = "0",
    non_torch: Annotated[str, typer.Option(
        "--non-torch-bytes", help="CUDA context, NCCL, graphs (assumed).")] = "0",
    fraction: Annotated[list[float] | None, typer.Option(
        "--fraction", "-f", help="What-if memory fraction for every rule (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    nvml: Annotated[bool, typer.Option("--nvml/--no-nvml", help="Read GPUs through NVML.")] = True,
    torch: Annotated[bool, typer.Option("--torch/--no-torch", help="Ask torch.cuda.mem_get_info.")] = True,
    proc_root: Annotated[Path, typer.Option(help="procfs to read (a container's, or a test tree).")] = Path("/proc"),
    sys_root: Annotated[Path, typer.Option(
        help="sysfs to read: NUMA node meminfo and the cgroup limit at fs/cgroup (vLLM on a CPU).")] = Path("/sys"),
    numa_node: Annotated[int | None, typer.Option(
        help="vLLM CPU: the NUMA node (default: the first allowed CPU's, as vLLM's worker).")] = None,
    env: Annotated[str, typer.Option(
        "--env", help="vLLM CPU: where the engine would start: native, sandbox, docker, podman.")] = "native",
    memory_limit: Annotated[str | None, typer.Option(
        help="vLLM CPU: the memory limit there (the sandbox's --memory-limit, a container's --memory).")] = None,
    kv_cache_memory: Annotated[str | None, typer.Option(
        help="vLLM CPU: an explicit KV size (--kv-cache-memory-bytes): predicts a refusal.")] = None,
    max_model_len: Annotated[int | None, typer.Option(
        help="vLLM CPU: --max-model-len: predicts the refusal of a cache too small for one such request "
             "(needs --model for the KV bytes per token).", min=1)] = None,
    utilization: Annotated[list[float] | None, typer.Option(
        help="vLLM CPU: gpu_memory_utilization, repeatable (default: memgap's CPU default and vLLM's 0.92).")] = None,
    worker_rss: Annotated[str | None, typer.Option(
        help="vLLM CPU: the worker's RSS after warm-up, which the automatic rule subtracts "
             "(default: 0.63 GiB measured with the set-up's tiny model, plus the weights).")] = None,
    engine_memory: Annotated[str | None, typer.Option(
        help="vLLM CPU: all the engine's processes before the KV cache (default: 1.33 GB measured, plus the weights).")] = None,
) -> None:
    """Read host memory, this cgroup and the GPUs now, and apply each engine's KV rule."""
    for f in [*(fraction or ()), *(utilization or ())]:
        if not 0 < f <= 1:
            raise UsageError(f"--fraction and --utilization must be in (0, 1] (got {f})")
    weights, source, bpt = _weights_and_bpt(weights_bytes, model, kv_dtype_name)
    a = Assumptions(
        weights_bytes=weights, weights_source=source,
        activation_peak_bytes=parse_size(activation, what="--activation-bytes"),
        non_torch_bytes=parse_size(non_torch, what="--non-torch-bytes"),
        bytes_per_token=bpt, n_ctx=context, fractions=tuple(fraction or ()),
        vllm_cpu=replace(_vllm_cpu(env, memory_limit, kv_cache_memory, utilization, worker_rss, engine_memory, weights),
                         max_model_len=max_model_len),
    )
    try:
        measured = gather(proc_root, use_nvml=nvml, use_torch=torch, sys_root=sys_root, numa_node=numa_node)
    except OSError as e:
        raise UsageError(f"cannot read {proc_root}/meminfo: {e.strerror or e}") from e
    result = add_probe_notes(evaluate(measured, a), proc_root)  # who holds memory, the kernel's reserve (issue 14)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print(result)


def _vllm_cpu(env: str, limit: str | None, kv: str | None, utilization: list[float] | None,
              worker_rss: str | None, engine: str | None, weights: int) -> VllmCpuAssumptions:
    if env not in CPU_ENVIRONMENTS:
        raise UsageError(f"--env must be one of {', '.join(CPU_ENVIRONMENTS)} (got {env!r})")
    if limit is not None and env == "native":
        raise UsageError("--memory-limit: native runs in this cgroup, whose limit is read; give --env too")
    if worker_rss is None or engine is None:
        why = "measured here for the set-up's tiny model" + (f", plus {weights} B of weights" if weights else "")
    else:
        why = "--worker-rss and --engine-memory"
    costs = CpuEngineCosts(
        worker_rss_bytes=parse_size(worker_rss, what="--worker-rss") if worker_rss is not None
        else VLLM_CPU_WORKER_RSS_BYTES + weights,
        engine_bytes=parse_size(engine, what="--engine-memory") if engine is not None
        else VLLM_CPU_ENGINE_BYTES + weights,
        source=why)
    return VllmCpuAssumptions(
        env=env, memory_limit_bytes=None if limit is None else parse_size(limit, what="--memory-limit"),
        kv_cache_memory_bytes=None if kv is None else parse_size(kv, what="--kv-cache-memory"),
        utilizations=tuple(utilization) if utilization else VllmCpuAssumptions().utilizations, costs=costs)


def _weights_and_bpt(weights_text: str | None, model: Path | None,
                     dtype_name: str | None) -> tuple[int, str, int | None]:
    bpt: int | None = None
    weights: int | None = None
    source = "assumed"
    if model is not None:
        cfg = read_model_config(model)
        bpt = cfg.layout.bytes_per_token(kv_dtype(dtype_name or cfg.dtype or "f16"))
        if cfg.weights_bytes is not None:
            weights, source = cfg.weights_bytes, f"model files ({model})"
    elif dtype_name is not None:
        raise UsageError("--kv-dtype needs --model")
    if weights_text is not None:
        weights, source = parse_size(weights_text, what="--weights-bytes"), "--weights-bytes"
    return (weights or 0), source, bpt


def _b(v: int | None) -> str:
    return format_bytes(v, precision=2)


def _print(result: ProbeResult) -> None:
    out = Console(highlight=False, soft_wrap=True)
    m = result.measured
    mi = m.meminfo
    out.print("measured here:", markup=False)
    out.print(f"  /proc/meminfo  MemTotal {_b(mi.total_bytes)}  MemFree {_b(mi.free_bytes)}  "
              f"MemAvailable {_b(mi.available_bytes)}  Cached {_b(mi.cached_bytes)}  Shmem {_b(mi.shmem_bytes)}",
              markup=False)
    if m.cgroup is not None:
        limit = "no limit" if m.cgroup.limit_bytes is None else _b(m.cgroup.limit_bytes)
        out.print(f"  cgroup v{m.cgroup.version}      usage {_b(m.cgroup.usage_bytes)}  limit {limit}  "
                  f"({m.cgroup_path})", markup=False)
    for g in m.gpus:
        out.print(f"  GPU {g.index}          {g.name}: total {_b(g.total_bytes)}  free {_b(g.free_bytes)}"
                  + ("  (unified memory)" if g.unified_memory else ""), markup=False)
    if not m.gpus:
        out.print(f"  GPUs           none ({m.gpus_unavailable})", markup=False)
    a = result.assumptions
    out.print(f"assumed: weights {_b(a.weights_bytes)} ({a.weights_source}), activation peak "
              f"{_b(a.activation_peak_bytes)}, non-torch {_b(a.non_torch_bytes)}"
              + (f", KV {a.bytes_per_token:,} B/token" if a.bytes_per_token else ""), markup=False)
    for s in result.scenarios:
        table = Table(title=f"{s.name}: {s.description}", title_justify="left", box=None)
        for col in ("rule", "fraction", "KV budget", "tokens", "reads", "note"):
            table.add_column(col, justify="right" if col in ("fraction", "KV budget", "tokens") else "left")
        for b in s.budgets:
            table.add_row(b.rule, "-" if b.fraction is None else f"{b.fraction:g}", _b(b.kv_budget_bytes),
                          "-" if b.kv_tokens is None else f"{b.kv_tokens:,}", b.memory_source, b.note or "")
        out.print()
        out.print(table)
        for note in s.notes:
            out.print(f"  note: {note}", markup=False)
    for note in result.notes:
        out.print(f"note: {note}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
