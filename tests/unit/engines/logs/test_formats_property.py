# ruff: noqa: UP031 - lines are printed with the engines' own %-format strings, verbatim
"""Property tests over the engines' own format strings (vLLM, SGLang, TensorRT-LLM).

Each template below is a format string copied from the engine's source (the parser
modules cite file and release). Three properties:

- round trip: a line printed with random values gives back exactly those values;
- near misses (a character dropped, doubled or changed, a number replaced by junk)
  never raise and never invent a figure: every figure the report holds can be
  computed from a number that is in the text;
- a report never claims a figure without having found a memory line."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.engines.logs import parse_engine_log
from memgap.engines.logs._text import NUM, to_float
from memgap.engines.report import EngineReport

GiB = 1 << 30
MiB = 1 << 20

_FIELDS = ("model_bytes", "peak_bytes", "kv_cache_bytes", "kv_cache_tokens", "kv_cache_blocks",
           "kv_fraction", "device_total_bytes", "compute_bytes")

Values = dict[str, Any]


@dataclass(frozen=True)
class Template:
    engine: str
    line: Callable[[Values], str]
    # figure name (report field or extra key) -> expected value, from the drawn values
    expect: Callable[[Values], dict[str, Any]]


def gib(v: float | int | str) -> int:
    return round(float(v) * GiB)


def fmt_gib(x: float) -> str:
    """vLLM's format_gib: ``f"{round(b / GiB_bytes, 2)}"`` (so "1.0", "14.5", "71.27")."""
    return f"{round(x, 2)}"


# vLLM: vllm/v1/worker/gpu_model_runner.py, gpu_worker.py, cpu_worker.py, utils.py,
# vllm/v1/core/kv_cache_utils.py (0.11.0 and 0.32.0)
VLLM = [
    Template("vllm", lambda v: "Model loading took %s GiB memory and %.6f seconds" % (v["a"], v["s"]),
             lambda v: {"model_bytes": gib(v["a"]), "model_load_s": float("%.6f" % v["s"])}),
    Template("vllm", lambda v: "Model loading took %.4f GiB and %.6f seconds" % (float(v["a"]), v["s"]),
             lambda v: {"model_bytes": gib("%.4f" % float(v["a"]))}),
    Template("vllm", lambda v: "Available KV cache memory: %s GiB" % v["a"],
             lambda v: {"kv_cache_bytes": gib(v["a"])}),
    Template("vllm", lambda v: "GPU KV cache size: %s tokens" % f"{v['n']:,}",
             lambda v: {"kv_cache_tokens": v["n"]}),
    Template("vllm", lambda v: "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"
             % (v["dev"], f"{v['n']:,}", f"{v['m']:,}", v["c"]),
             lambda v: {"kv_cache_tokens": v["n"], "max_model_len": v["m"],
                        "max_concurrency": float("%.2f" % v["c"])}),
    Template("vllm", lambda v: (
        f"Free memory on device ({v['a']}/{v['b']} GiB) on startup. Desired GPU memory utilization is "
        f"({v['u']}, {v['c2']} GiB). Actual usage is {v['d']} GiB for weight, {v['e']} GiB for peak activation, "
        f"{v['f']} GiB for non-torch memory, and {v['g']} GiB for CUDAGraph memory. Replace gpu_memory_utilization "
        f"config with `--kv-cache-memory={v['n']}` ({v['h']} GiB) to fit into requested memory, or "
        f"`--kv-cache-memory={v['m']}` ({v['h']} GiB) to fully utilize gpu memory. Current kv cache memory in use "
        f"is {v['h']} GiB."),
        lambda v: {"initial_free_bytes": gib(v["a"]), "device_total_bytes": gib(v["b"]),
                   "kv_fraction": float(v["u"]), "requested_bytes": gib(v["c2"]), "model_bytes": gib(v["d"]),
                   "activation_peak_bytes": gib(v["e"]), "non_torch_bytes": gib(v["f"]),
                   "cuda_graph_bytes": gib(v["g"]), "kv_fit_requested_bytes": v["n"],
                   "kv_fit_device_bytes": v["m"], "kv_cache_bytes": gib(v["h"])}),
    Template("vllm", lambda v: (
        f"Free memory on device ({v['a']}/{v['b']} GiB) on startup. Desired GPU memory utilization is "
        f"({v['u']}, {v['c2']} GiB). Actual usage is {v['d']} GiB for consumed memory (weights + non-torch), "
        f"{v['e']} GiB for peak activation, and {v['g']} GiB for CUDAGraph memory. Replace gpu_memory_utilization "
        f"config with `--kv-cache-memory={v['n']}` ({v['h']} GiB) to fit into requested memory, or "
        f"`--kv-cache-memory={v['m']}` ({v['h']} GiB) to fully utilize gpu memory. Current kv cache memory in use "
        f"is {v['h']} GiB."),
        lambda v: {"consumed_bytes": gib(v["d"]), "activation_peak_bytes": gib(v["e"]),
                   "cuda_graph_bytes": gib(v["g"]), "kv_cache_bytes": gib(v["h"]),
                   "device_total_bytes": gib(v["b"]), "kv_fraction": float(v["u"])}),
    Template("vllm", lambda v: (
        f"ValueError: Free memory on device{v['dn']} ({v['a']}/{v['b']} GiB) on startup is less than desired GPU "
        f"memory utilization ({v['u']}, {v['c2']} GiB). Decrease GPU memory utilization or reduce GPU memory "
        f"used by other processes."),
        lambda v: {"initial_free_bytes": gib(v["a"]), "device_total_bytes": gib(v["b"]),
                   "kv_fraction": float(v["u"]), "requested_bytes": gib(v["c2"])}),
    Template("vllm", lambda v: f"Explicitly set ({v['a']}/{v['b']}) GiB for KV cache on node {v['k']}.",
             lambda v: {"kv_cache_bytes": gib(v["a"]) or None, "device_total_bytes": gib(v["b"]), "numa_node": v["k"]}),
    Template("vllm", lambda v: (
        f"Auto set ({v['a']}/{v['b']}) GiB for KV cache on node {v['k']}, with {v['c2']} GiB requested memory "
        f"for the worker. {v['d']} GiB memory was consumed by non-kv usages."),
        lambda v: {"kv_cache_bytes": gib(v["a"]) or None, "device_total_bytes": gib(v["b"]),
                   "requested_bytes": gib(v["c2"]), "non_kv_bytes": gib(v["d"])}),
    Template("vllm", lambda v: (
        f"ValueError: Available memory on node {v['k']} ({v['a']}/{v['b']} GiB) on kv cache allocation is less "
        f"than requested memory for kv ({v['d']}/{v['c2']} GiB). Reduce CPU memory used by other processes."),
        lambda v: {"node_available_bytes": gib(v["a"]), "device_total_bytes": gib(v["b"]),
                   "requested_kv_bytes": gib(v["d"]), "requested_bytes": gib(v["c2"])}),
    Template("vllm", lambda v: (
        f"ValueError: Available memory on node {v['k']} ({v['a']}/{v['b']} GiB) on startup is less than desired "
        f"CPU memory utilization ({v['u']}, {v['c2']} GiB). On the CPU backend, ..."),
        lambda v: {"node_available_bytes": gib(v["a"]), "device_total_bytes": gib(v["b"]),
                   "kv_fraction": float(v["u"]), "requested_bytes": gib(v["c2"])}),
    # kv_cache_utils.py _check_enough_kv_cache_memory: 0.32.0 (format_gib), and the
    # older "models's" with %.2f and an empty estimate
    Template("vllm", lambda v: (
        f"ValueError: To serve at least one request with the model's max seq len ({v['n']}), ({v['a']} GiB KV "
        f"cache is needed, which is larger than the available KV cache memory ({v['b']} GiB). Based on the available "
        f"memory, the estimated maximum model length is {v['m']}. Try increasing `gpu_memory_utilization` ..."),
        lambda v: {"max_model_len": v["n"], "kv_needed_bytes": gib(v["a"]) or None,
                   "kv_available_bytes": gib(v["b"]) or None, "estimated_max_model_len": v["m"]}),
    Template("vllm", lambda v: (
        f"ValueError: To serve at least one request with the models's max seq len ({v['n']}), "
        f"({float(v['a']):.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
        f"({float(v['b']):.2f} GiB).  Try increasing `gpu_memory_utilization` or decreasing `max_model_len` ..."),
        lambda v: {"max_model_len": v["n"], "kv_needed_bytes": gib("%.2f" % float(v["a"])) or None,
                   "kv_available_bytes": gib("%.2f" % float(v["b"])) or None, "estimated_max_model_len": None}),
    # kv_cache_utils.py get_num_blocks: "Overriding num_gpu_blocks=%d with num_gpu_blocks_override=%d"
    Template("vllm", lambda v: f"Overriding num_gpu_blocks={v['n']} with num_gpu_blocks_override={v['m']}",
             lambda v: {"blocks_from_memory": v["n"], "kv_cache_blocks": v["m"]}),
]

# SGLang: python/sglang/srt/model_executor/model_runner.py, mem_cache/memory_pool.py,
# managers/scheduler.py, model_runner_components/cuda_graph_setup.py (0.3.6-0.5.23)
SGLANG = [
    Template("sglang", lambda v: (
        f"[2025-01-01 00:00:00 TP0] Load weight end. type=LlamaForCausalLM, dtype=torch.bfloat16, "
        f"avail mem={float(v['a']):.2f} GB, mem usage={float(v['b']):.2f} GB."),
        lambda v: {"avail_after_load_bytes": gib("%.2f" % float(v["a"])), "model_bytes": gib("%.2f" % float(v["b"]))}),
    Template("sglang", lambda v: (
        f"[2025-01-01 00:00:00 TP0] Load weight end. elapsed={v['s']:.2f} s, type=X, quant=fp8, "
        f"avail mem={float(v['a']):.2f} GB, mem usage={float(v['b']):.2f} GB."),
        lambda v: {"model_bytes": gib("%.2f" % float(v["b"]))}),
    Template("sglang", lambda v: (
        f"[2025-01-01 00:00:00 TP0] KV Cache is allocated. dtype: torch.bfloat16, #tokens: {v['n']}, "
        f"K size: {float(v['a']):.2f} GB, V size: {float(v['b']):.2f} GB"),
        lambda v: {"kv_cache_tokens": v["n"],
                   "kv_cache_bytes": gib("%.2f" % float(v["a"])) + gib("%.2f" % float(v["b"]))}),
    Template("sglang", lambda v: (
        f"[2025-01-01 00:00:00 DP0 TP0 EP0] KV Cache is allocated. #tokens: {v['n']}, KV size: {float(v['a']):.2f} GB"),
        lambda v: {"kv_cache_tokens": v["n"], "kv_cache_bytes": gib("%.2f" % float(v["a"]))}),
    Template("sglang", lambda v: f"[2025-01-01 00:00:00 TP0] Memory pool end. avail mem={float(v['a']):.2f} GB",
             lambda v: {"avail_after_pool_bytes": gib("%.2f" % float(v["a"]))}),
    Template("sglang", lambda v: (
        f"[2025-01-01 00:00:00 TP0] max_total_num_tokens={v['n']}, chunked_prefill_size=8192, "
        f"max_prefill_tokens=16384, max_running_requests={v['k']}, context_len={v['m']}, "
        f"available_gpu_mem={float(v['a']):.2f} GB"),
        lambda v: {"kv_cache_tokens": v["n"], "max_running_requests": v["k"], "context_len": v["m"],
                   "available_gpu_mem_bytes": gib("%.2f" % float(v["a"]))}),
    Template("sglang", lambda v: (
        f"[2025-01-01 00:00:00 TP0] Capture target decode CUDA graph end. bs=[1, 2, 4], elapsed={v['s']:.2f} s, "
        f"mem usage={float(v['b']):.2f} GB, avail mem={float(v['a']):.2f} GB."),
        lambda v: {"compute_bytes": gib("%.2f" % float(v["b"])), "graph_capture_s": float("%.2f" % v["s"])}),
]

# TensorRT-LLM: tensorrt_llm/_torch/pyexecutor/_util.py, cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp
TRTLLM = [
    Template("trtllm", lambda v: (
        f"[TRT-LLM] [I] Peak memory during memory usage profiling (torch + non-torch): {float(v['a']):.2f} GiB, "
        f"available KV cache memory when calculating max tokens: {float(v['b']):.2f} GiB, fraction is set {v['u']}, "
        f"kv size per token is {v['n']}. device total memory {float(v['c2']):.2f} GiB, temporary kv cache memory "
        f"during profiling {float(v['d']):.2f} GiB"),
        lambda v: {"peak_bytes": gib("%.2f" % float(v["a"])), "kv_available_bytes": gib("%.2f" % float(v["b"])),
                   "kv_fraction": float(v["u"]), "kv_bytes_per_token": v["n"],
                   "device_total_bytes": gib("%.2f" % float(v["c2"])), "tmp_kv_bytes": gib("%.2f" % float(v["d"]))}),
    Template("trtllm", lambda v: (
        f"[TRT-LLM] [I] Peak memory during memory usage profiling (torch + non-torch): {float(v['a']):.2f} GiB, "
        f"available KV cache memory when calculating max tokens: {float(v['b']):.2f} GiB"),
        lambda v: {"peak_bytes": gib("%.2f" % float(v["a"])), "kv_cache_bytes": gib("%.2f" % float(v["b"]))}),
    Template("trtllm", lambda v: (
        "[TensorRT-LLM][INFO] [MemUsageChange] Allocated %0.2f GiB for max tokens in paged KV cache (%d)."
        % (float(v["a"]), v["n"])),
        lambda v: {"kv_cache_bytes": gib("%.2f" % float(v["a"])), "kv_cache_tokens": v["n"]}),
    Template("trtllm", lambda v: (
        "[TensorRT-LLM][INFO] Memory usage when calculating max tokens in paged kv cache: total: %0.2f GiB, "
        "available: %0.2f GiB" % (float(v["c2"]), float(v["a"]))),
        lambda v: {"device_total_bytes": gib("%.2f" % float(v["c2"])),
                   "free_at_sizing_bytes": gib("%.2f" % float(v["a"]))}),
]

TEMPLATES = [*VLLM, *SGLANG, *TRTLLM]

_gib_values = st.floats(min_value=0, max_value=4096, allow_nan=False).map(fmt_gib)
values = st.fixed_dictionaries({
    "a": _gib_values, "b": _gib_values, "c2": _gib_values, "d": _gib_values, "e": _gib_values,
    "f": _gib_values, "g": _gib_values, "h": _gib_values,
    "u": st.sampled_from(["0.9", "0.92", "0.5", "0.05", "1.0"]),
    "s": st.floats(min_value=0, max_value=10_000, allow_nan=False),
    "c": st.floats(min_value=0, max_value=100_000, allow_nan=False),
    "n": st.integers(min_value=0, max_value=10**12),
    "m": st.integers(min_value=1, max_value=10**7),
    "k": st.integers(min_value=0, max_value=8),
    "dev": st.sampled_from(["GPU", "CPU", "XPU", "GPU + host"]),
    "dn": st.sampled_from(["", " cuda:0", " cuda:7"]),
})


def figure(report: EngineReport, name: str) -> float | int | str | None:
    return report.figure(name)


@settings(max_examples=300, deadline=None)
@given(t=st.sampled_from(TEMPLATES), v=values, prefix=st.sampled_from([
    "", "(Worker pid=26389) INFO 12-02 05:09:38 [cpu_worker.py:260] ",
    "\x1b[1;36m(EngineCore_DP0 pid=7)\x1b[0;0m INFO 05-06 12:00:01 [gpu_worker.py:123] ",
    "[TensorRT-LLM][INFO] ",
]))
def test_round_trip(t: Template, v: Values, prefix: str) -> None:
    line = prefix + t.line(v)
    r = parse_engine_log(t.engine, line)
    for name, want in t.expect(v).items():
        assert figure(r, name) == want, (name, line)
    assert r.found_any and r.log_variant is not None


def _tokens(text: str) -> list[float]:
    found = (to_float(m) for m in re.findall(NUM, text))
    return [x for x in found if x is not None]


def explained(value: float | int, text: str) -> bool:
    """True when ``value`` is one of the ways a parser turns the text's numbers into a
    figure: as is, in GiB or MiB, a percentage as a fraction, or two GiB figures added
    (SGLang's K + V)."""
    toks = _tokens(text)
    cands: set[float] = set()
    for x in toks:
        cands |= {x, float(round(x * GiB)), float(round(x * MiB)), x / 100}
    for x, y in combinations(toks, 2):
        cands.add(float(round(x * GiB) + round(y * GiB)))
    return float(value) in cands


_JUNK = ["", "nan", "inf", "1e400", "--", "abc", "1,,2", ".", "-", "0x10", "∞", "1.2.3"]


@st.composite
def near_miss(draw: st.DrawFn, template: Template | None = None) -> tuple[str, str]:
    t = template if template is not None else draw(st.sampled_from(TEMPLATES))
    line = t.line(draw(values))
    kind = draw(st.sampled_from(["drop", "double", "change", "junk", "cut", "digit"]))
    spans = [m.span() for m in re.finditer(NUM, line)]
    if kind == "junk" and spans:
        a, b = draw(st.sampled_from(spans))
        line = line[:a] + draw(st.sampled_from(_JUNK)) + line[b:]
    elif kind == "digit" and spans:
        # a change inside a number: the line stays valid, its figure must follow
        a, b = draw(st.sampled_from(spans))
        i = draw(st.integers(min_value=a, max_value=b - 1))
        line = line[:i] + draw(st.sampled_from(list("0123456789.,-"))) + line[i + 1:]
    else:
        i = draw(st.integers(min_value=0, max_value=max(0, len(line) - 1)))
        if kind == "drop":
            line = line[:i] + line[i + 1:]
        elif kind == "double":
            line = line[:i] + line[i:i + 1] + line[i:]
        elif kind == "cut":
            line = line[:i]
        else:
            line = line[:i] + draw(st.sampled_from(list("xX0 .,:;()=-\x1b\r\n"))) + line[i + 1:]
    return t.engine, line


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: f"{t.engine}-{TEMPLATES.index(t)}")
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_near_misses_never_raise_nor_invent(template: Template, data: st.DataObject) -> None:
    engine, text = data.draw(near_miss(template))
    r = parse_engine_log(engine, text)
    for name in _FIELDS:
        value = getattr(r, name)
        if value is not None:
            assert explained(value, text), (name, value, text)
    # No figure without a memory line (the fraction may come from a settings dump).
    if not r.found_any:
        assert all(getattr(r, n) is None for n in _FIELDS if n != "kv_fraction"), text
        assert r.refusal is None
    r.to_dict()


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(near_miss(), min_size=1, max_size=8), engine=st.sampled_from(["vllm", "sglang", "trtllm"]))
def test_mixed_near_misses_of_any_engine(lines: list[tuple[str, str]], engine: str) -> None:
    # Lines of the other engines, damaged, fed to each parser: still nothing raises and
    # whatever it reports is listed consistently (a figure named missing is None).
    text = "\n".join(line for _, line in lines)
    r = parse_engine_log(engine, text)
    for name in r.missing:
        assert r.figure(name) is None
    if not r.found_any:
        assert all(getattr(r, n) is None for n in _FIELDS if n != "kv_fraction"), text
