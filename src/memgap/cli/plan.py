"""``memgap plan``: what a KV budget means in tokens and concurrent sequences."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memgap.errors import UsageError
from memgap.kv import (
    KV_BOUND_PROMPT_SHARE,
    KV_DTYPES,
    KvDtype,
    KvLayout,
    capacity,
    kv_bound_shape,
    kv_dtype,
    max_context,
    vllm_max_concurrency,
)
from memgap.modelcfg import describe, read_model_config
from memgap.units import format_bytes, parse_size


def build_plan(layout: KvLayout, dtype: KvDtype, budgets: list[tuple[str, int]], *,
               context: int | None, concurrency: int | None, block_size: int,
               model: dict[str, Any]) -> dict[str, Any]:
    """The plan as JSON-ready data; budgets stay in the order given, each compared with
    the first."""
    rows: list[dict[str, Any]] = []
    for label, budget in budgets:
        cap = capacity(budget, layout, dtype, context=context)
        row: dict[str, Any] = {
            "label": label,
            "kv_budget_bytes": budget,
            "max_tokens": cap.max_tokens,
            "max_sequences": cap.max_sequences,
            "bytes_per_sequence": cap.bytes_per_sequence,
            "max_context": max_context(budget, concurrency, layout, dtype) if concurrency else None,
            "vllm_max_concurrency": (
                round(vllm_max_concurrency(budget, layout, dtype, context=context, block_size=block_size), 2)
                if context and layout.swa_layers == 0 else None
            ),
        }
        rows.append(row)
    first = rows[0]
    for row in rows:
        row["ratio_tokens_vs_first"] = _ratio(row["max_tokens"], first["max_tokens"])
        row["ratio_sequences_vs_first"] = _ratio(row["max_sequences"], first["max_sequences"])
        row["ratio_context_vs_first"] = _ratio(row["max_context"], first["max_context"])
        # The seed's question reads the other way: how many times more the first holds.
        row["first_over_this_sequences"] = _ratio(first["max_sequences"], row["max_sequences"])
        row["first_over_this_tokens"] = _ratio(first["max_tokens"], row["max_tokens"])
    return {
        "model": model,
        "kv_dtype": dtype.name,
        "bytes_per_token": layout.bytes_per_token(dtype),
        "context": context,
        "concurrency": concurrency,
        "vllm_block_size": block_size,
        "budgets": rows,
    }


def _ratio(a: int | None, b: int | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 4)


def plan(
    kv_budget: Annotated[list[str], typer.Option(
        "--kv-budget", "-b", help="KV budget (37.26GiB, 512MiB, 1e9); repeat to compare.")],
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", help="A config.json, a directory holding one, or a .gguf file.")] = None,
    layers: Annotated[int | None, typer.Option(help="Layers holding KV (without --model).")] = None,
    kv_heads: Annotated[int | None, typer.Option(help="KV heads per layer (GQA).")] = None,
    head_dim: Annotated[int | None, typer.Option(help="Head dimension of K (and of V).")] = None,
    head_dim_v: Annotated[int | None, typer.Option(help="Head dimension of V, when it differs.")] = None,
    mla_dim: Annotated[int | None, typer.Option(
        help="MLA latent per token and layer (kv_lora_rank + qk_rope_head_dim).")] = None,
    window: Annotated[int | None, typer.Option(help="Sliding window, in tokens.")] = None,
    swa_layers: Annotated[int | None, typer.Option(help="How many layers slide (default: all, with --window).")] = None,
    kv_dtype_name: Annotated[str | None, typer.Option(
        "--kv-dtype", help=f"KV cache type: {', '.join(KV_DTYPES)} (default: the model's dtype, or f16).")] = None,
    context: Annotated[int | None, typer.Option(help="Tokens per sequence, for max sequences.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent sequences, for the longest context.")] = None,
    block_size: Annotated[int, typer.Option(help="vLLM block size, for its 'Maximum concurrency' figure.")] = 16,
    kv_bound_at: Annotated[int | None, typer.Option(
        help="Propose a KV-bound request shape: the prompt and output lengths at which this many "
             "sequences fill the first budget, so a request beyond them waits for KV (memgap capacity "
             "measures where the SLO then breaks). Sets --context.")] = None,
    prompt_share: Annotated[float, typer.Option(
        help="With --kv-bound-at: the prompt's share of each request (the rest is output).")] = KV_BOUND_PROMPT_SHARE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """KV bytes per token, tokens that fit, concurrent sequences and longest context, per budget."""
    if context is not None and context <= 0:
        raise UsageError("--context must be positive")
    if concurrency is not None and concurrency <= 0:
        raise UsageError("--concurrency must be positive")
    if block_size <= 0:
        raise UsageError("--block-size must be positive")
    if kv_bound_at is not None and context is not None:
        raise UsageError("give --kv-bound-at or --context, not both (the shape sets the context)")
    layout, default_dtype, info = _layout(model, layers, kv_heads, head_dim, head_dim_v, mla_dim, window, swa_layers)
    dtype = kv_dtype(kv_dtype_name or default_dtype)
    budgets = [(text, parse_size(text, what="--kv-budget")) for text in kv_budget]
    shape = None
    if kv_bound_at is not None:
        shape = kv_bound_shape(budgets[0][1] // layout.bytes_per_token(dtype), kv_bound_at, prompt_share=prompt_share)
        context = shape.tokens_per_request
    result = build_plan(layout, dtype, budgets, context=context, concurrency=concurrency,
                        block_size=block_size, model=info)
    if shape is not None:
        result["kv_bound_shape"] = {"budget": budgets[0][0], **asdict(shape)}
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print(result, layout)


def _layout(model: Path | None, layers: int | None, kv_heads: int | None, head_dim: int | None,
            head_dim_v: int | None, mla_dim: int | None, window: int | None,
            swa_layers: int | None) -> tuple[KvLayout, str, dict[str, Any]]:
    explicit = any(v is not None for v in (layers, kv_heads, head_dim, head_dim_v, mla_dim))
    if model is not None:
        if explicit:
            raise UsageError("give either --model or --layers/--kv-heads/--head-dim, not both")
        cfg = read_model_config(model)
        layout = cfg.layout
        if window is not None:
            n = layout.layers if swa_layers is None else swa_layers
            layout = KvLayout(layout.layers, layout.kv_heads, layout.head_dim_k, layout.head_dim_v,
                              layout.mla_dim, window, n)
        info = {"name": cfg.name, "source": cfg.source, "path": str(model), **_layout_dict(layout)}
        return layout, cfg.dtype or "f16", info
    if layers is None or (mla_dim is None and (kv_heads is None or head_dim is None)):
        raise UsageError("give --model PATH, or --layers with --kv-heads and --head-dim (or --mla-dim)")
    if mla_dim is not None:
        layout = KvLayout(layers, 1, mla_dim, 0, mla_dim=mla_dim)
    else:
        assert kv_heads is not None and head_dim is not None
        n_swa = (layers if swa_layers is None else swa_layers) if window else 0
        layout = KvLayout(layers, kv_heads, head_dim, head_dim if head_dim_v is None else head_dim_v,
                          window=window, swa_layers=n_swa)
    return layout, "f16", {"name": None, "source": "options", **_layout_dict(layout)}


def _layout_dict(layout: KvLayout) -> dict[str, Any]:
    return {
        "layers": layout.layers, "kv_heads": layout.kv_heads, "head_dim_k": layout.head_dim_k,
        "head_dim_v": layout.head_dim_v, "mla_dim": layout.mla_dim, "window": layout.window,
        "swa_layers": layout.swa_layers,
    }


def _num(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _print(result: dict[str, Any], layout: KvLayout) -> None:
    out = Console(highlight=False, soft_wrap=True)
    name = result["model"].get("name") or "model"
    out.print(f"{name}: {describe(layout)}, KV {result['kv_dtype']}", markup=False)
    out.print(f"KV per token: {result['bytes_per_token']:,} B ({format_bytes(result['bytes_per_token'], precision=2)})",
              markup=False)
    table = Table(box=None)
    table.add_column("KV budget")
    table.add_column("bytes", justify="right")
    table.add_column("max tokens", justify="right")
    if result["context"]:
        table.add_column(f"sequences @ {result['context']:,}", justify="right")
        table.add_column("vLLM conc.", justify="right")
    if result["concurrency"]:
        table.add_column(f"context @ {result['concurrency']} seqs", justify="right")
    table.add_column("vs first", justify="right")
    for row in result["budgets"]:
        cells = [row["label"], format_bytes(row["kv_budget_bytes"], precision=2), _num(row["max_tokens"])]
        if result["context"]:
            cells += [_num(row["max_sequences"]), _x(row["vllm_max_concurrency"])]
        if result["concurrency"]:
            cells.append(_num(row["max_context"]))
        key = "ratio_sequences_vs_first" if result["context"] else (
            "ratio_context_vs_first" if result["concurrency"] else "ratio_tokens_vs_first")
        cells.append(_x(row[key]))
        table.add_row(*cells)
    out.print(table)
    first = result["budgets"][0]
    for row in result["budgets"][1:]:
        what, key = ("sequences", "first_over_this_sequences") if result["context"] else (
            "tokens", "first_over_this_tokens")
        out.print(f"{first['label']} holds {_x(row[key])} the {what} of {row['label']}", markup=False)
    shape = result.get("kv_bound_shape")
    if shape:
        out.print(f"KV-bound shape: prompt {shape['prompt_tokens']:,} + output {shape['output_tokens']:,} = "
                  f"{shape['tokens_per_request']:,} tokens per request; {shape['budget']} holds {shape['sequences']} "
                  "of them at once, so the next request waits for KV (llama.cpp: --ctx-size "
                  f"{shape['kv_tokens']} --parallel {shape['sequences']}; memgap capacity --prompt-tokens "
                  f"{shape['prompt_tokens']} --output-tokens {shape['output_tokens']})", markup=False)
    out.print("Tokens and sequences are whole units that fit, before any engine's block rounding.",
              markup=False)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
