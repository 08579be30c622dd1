"""``memgap sweep``: one run per load point and KV budget; the curves, goodput and knee."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memgap.analysis.sweep_curves import SweepPoint, knees
from memgap.cli.interrupt import interrupt_on_sigterm
from memgap.cli.spec_flags import apply_overrides, build_spec, overrides_from_flags
from memgap.engines.vllm import resolve_device
from memgap.envs import ENVIRONMENTS, make_environment
from memgap.errors import Interrupted, UsageError
from memgap.kv import VLLM_RESERVED_BLOCKS
from memgap.load.records import RequestRecord
from memgap.load.slo import parse_slo
from memgap.load.spec import WorkloadSpec
from memgap.report.base import render_text
from memgap.report.sweep_html import SweepHtmlReporter
from memgap.sizing import VLLM_CPU_BLOCK_SIZE
from memgap.spec import LlamaCppSpec, RunSpec, VllmSpec, load_spec_file
from memgap.store import SCHEMA_VERSION, open_store
from memgap.sweep import (
    SweepSettings,
    fit_parallel,
    kv_budget_of,
    parse_list,
    plan_points,
    run_sweep,
    search_saturation,
    tokens_per_request,
    workload_for,
)
from memgap.units import format_seconds

# vLLM's KV budget in a sweep is a block count (--num-gpu-blocks-override) of vLLM's own
# default block size unless the spec sets one: 16 on a GPU; 128 on a CPU (vllm-cpu 0.32.0,
# measured here: 64 blocks gave 8,192 tokens), which refuses 16 outright ("No common block
# size for 16 (CPU_ATTN: [MultipleOf(32)])"). The engine keeps its own block size; memgap
# sets only the count.
VLLM_DEFAULT_BLOCK_SIZE = {"cuda": 16, "cpu": VLLM_CPU_BLOCK_SIZE}

# llama.cpp pads each sequence's share of the context to 256 cells (measured: --ctx-size 192
# --parallel 4 allocated 1024 cells), so a budget below 256 x slots is not what it asked for.
LLAMACPP_MIN_SLOT_CELLS = 256


class _Lines:
    """One line per finished point on stderr (a sweep's runs are long; a bar per run is noise)."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console, self.quiet = console, quiet

    def phase(self, environment: str, phase: str) -> None:
        return None

    def request_done(self, environment: str, record: RequestRecord, done: int, total: int) -> None:
        return None

    def row(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        tput = row.get("output_tokens_per_s")
        self.console.print(
            f"memgap: sweep: c={row['concurrency']}"
            + (f" rate={row['request_rate_per_s']:g}" if row.get("request_rate_per_s") is not None else "")
            + f" ctx={row.get('ctx_size')}: {row.get('status')}, "
            + ("-" if tput is None else f"{tput:.1f}") + " tok/s, engine queue peak "
            + str(row.get("engine_waiting_peak")),
            markup=False, highlight=False,
        )


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def sweep_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("ctx", "slots", "load", "ok/err", "tok/s", "req/s", "goodput/s", "SLO met",
                "TTFT p50", "E2E p50", "queue p50", "engine waiting peak/mean", "run"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("run",) else "right")
    for r in rows:
        load = f"{r['request_rate_per_s']:g}/s" if r.get("request_rate_per_s") is not None else str(r["concurrency"])
        table.add_row(
            str(r.get("ctx_size") or "-"), str(r.get("parallel") or "-"), load,
            f"{r.get('requests_ok') or 0}/{r.get('requests_errored') or 0}",
            _f(r.get("output_tokens_per_s"), ".1f"), _f(r.get("request_throughput_per_s"), ".2f"),
            _f(r.get("goodput_per_s"), ".2f"),
            _f(None if r.get("slo_met_fraction") is None else 100 * r["slo_met_fraction"], ".0f") + "%",
            format_seconds(r.get("ttft_p50_s")), format_seconds(r.get("e2e_p50_s")),
            format_seconds(r.get("queue_delay_p50_s")),
            f"{_f(r.get('engine_waiting_peak'), 'g')} / {_f(r.get('engine_waiting_mean'), '.1f')}",
            str(r.get("run_id")),
        )  # fmt: skip
    return table


def knee_lines(k: dict[str, Any], x_label: str) -> list[str]:
    out = []
    if k.get("compared"):
        lo, hi = k["compared"]
        for metric, at in k.get("parting", {}).items():
            where = "do not part (within 20%)" if at is None else f"part from {x_label} {at:g}"
            out.append(f"ctx {lo} vs ctx {hi}: {metric} {where}")
    for ctx, at in k.get("saturation", {}).items():
        out.append(f"ctx {ctx}: throughput " + ("scales through the sweep" if at is None else f"stops scaling after {x_label} {at:g}"))
    return out


def with_kv_budget(base: RunSpec, tokens: int | None, per_request: int, parallel: str, kv_unified: bool) -> RunSpec:
    """The base spec at one KV budget (tokens): llama.cpp's context size (and its slots,
    'fit': as many as the budget holds whole requests), vLLM's block count."""
    e = base.engine
    if isinstance(e, VllmSpec):
        if tokens is None:
            return base
        block = e.block_size or VLLM_DEFAULT_BLOCK_SIZE[resolve_device(e.device)]
        blocks = math.ceil(tokens / block)
        if e.max_model_len is not None and blocks - VLLM_RESERVED_BLOCKS < math.ceil(e.max_model_len / block):
            need = (math.ceil(e.max_model_len / block) + VLLM_RESERVED_BLOCKS) * block
            raise UsageError(f"KV budget {tokens} tokens: vLLM would get {blocks} blocks of {block} and keeps "
                             f"{VLLM_RESERVED_BLOCKS} back, so one request of engine.max_model_len "
                             f"{e.max_model_len} would not fit and it would refuse to start; give at least "
                             f"{need} tokens or a smaller max_model_len")
        extra = [a for a in e.extra_args if not a.startswith("--num-gpu-blocks-override")]
        return base.replace(engine={**e.model_dump(mode="json"), "block_size": block,
                                    "extra_args": [*extra, f"--num-gpu-blocks-override={blocks}"]})
    assert isinstance(e, LlamaCppSpec)
    ctx = tokens or e.ctx_size
    slots = fit_parallel(ctx, per_request) if parallel == "fit" else int(parallel)
    return base.replace(engine={**e.model_dump(mode="json"), "ctx_size": ctx, "parallel": slots,
                                "kv_unified": kv_unified})


def sweep_command(
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated (e.g. 1,2,4,8,16).")] = "1,2,4,8",
    rate: Annotated[str | None, typer.Option(help="Request rates per second to sweep instead (each at the largest --concurrency).")] = None,
    ctx_size: Annotated[list[int] | None, typer.Option("--ctx-size", "-c", help="KV budget in tokens (llama.cpp context size), repeatable: one curve each.")] = None,
    ctx_from_run: Annotated[list[str] | None, typer.Option("--ctx-from-run", help="Add a KV budget: the KV tokens a stored run's engine reported (e.g. a native and a container run's), repeatable.")] = None,
    parallel: Annotated[str, typer.Option(help="Engine slots: a number, or 'fit' = ctx-size // (prompt + output tokens), so the KV budget caps how many requests hold KV at once.")] = "fit",
    kv_unified: Annotated[bool, typer.Option("--kv-unified/--no-kv-unified", help="One KV buffer shared by all slots (llama.cpp fails requests when it fills, it does not queue them).")] = False,
    requests: Annotated[int | None, typer.Option(help="Measured requests per point (default: --requests-per-concurrency x concurrency, at least 4).")] = None,
    requests_per_concurrency: Annotated[int, typer.Option(help="Without --requests: measured requests per unit of concurrency.")] = 3,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens (minimum, with --prompt-tokens-max).")] = 128,
    prompt_tokens_max: Annotated[int | None, typer.Option(help="Draw prompt lengths uniformly up to this.")] = None,
    output_tokens: Annotated[int, typer.Option(help="Output tokens per request (minimum, with --output-tokens-max).")] = 64,
    output_tokens_max: Annotated[int | None, typer.Option(help="Draw output lengths uniformly up to this.")] = None,
    dataset: Annotated[Path | None, typer.Option(help="JSONL of prompts or ShareGPT-style conversations to send instead of synthetic prompts.")] = None,
    arrival: Annotated[str, typer.Option(help="Arrivals in rate mode: constant or poisson.")] = "poisson",
    warmup: Annotated[int, typer.Option(help="Warm-up requests per point, not counted.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for prompts, lengths and arrivals.")] = 0,
    slo: Annotated[str, typer.Option(help="Objectives for goodput, e.g. ttft_s=0.5,itl_s=0.05,e2e_s=5.")] = "",
    slo_attainment: Annotated[float, typer.Option(help="Share of requests that must meet the SLOs for a rate to pass the saturation search.")] = 0.9,
    saturate: Annotated[bool, typer.Option(help="Also search (by bisection) the highest rate meeting the SLOs, at the first --ctx-size.")] = False,
    rate_low: Annotated[float, typer.Option(help="Saturation search: lowest rate.")] = 0.25,
    rate_high: Annotated[float, typer.Option(help="Saturation search: highest rate.")] = 16.0,
    saturation_steps: Annotated[int, typer.Option(help="Saturation search: bisection runs after the two bounds.")] = 3,
    engine: Annotated[str | None, typer.Option("--engine", help="Engine: llamacpp (default) or vllm (its KV budget in tokens is set by --num-gpu-blocks-override).", show_default=False)] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="Base run spec file (TOML or JSON): engine, environment, sampler; the sweep sets the load and the KV budget.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Set any spec field by its path, repeatable: --set engine.max_model_len=512.", show_default=False)] = None,
    env: Annotated[str, typer.Option(help=f"Environment ({', '.join(ENVIRONMENTS)}).")] = "native",
    memory_limit: Annotated[str | None, typer.Option(help="Memory limit of the environment's cgroup, e.g. 512MiB.")] = None,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: all usable cores).")] = None,
    model: Annotated[Path | None, typer.Option(help="GGUF model file (default: the embedded SmolLM2-135M).")] = None,
    server_path: Annotated[Path | None, typer.Option(help="llama-server binary.")] = None,
    engine_arg: Annotated[list[str] | None, typer.Option("--engine-arg", help="Extra llama-server argument, repeatable.")] = None,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request counts as timed out.")] = 120.0,
    sample_rate: Annotated[float, typer.Option(help="Memory samples per second.")] = 5.0,
    metrics_interval: Annotated[float, typer.Option(help="Seconds between reads of the engine's /metrics (its queue and KV usage).")] = 0.25,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the curves as a self-contained HTML file.")] = None,
) -> int:
    """Sweep load (concurrency or rate) at one or more KV budgets: one stored run per point,
    throughput, goodput, latency and the engine's own queue, and where the curves part."""
    slo_obj = parse_slo(slo)
    conc = parse_list(concurrency, int, "--concurrency")
    rates = parse_list(rate, float, "--rate") if rate else []
    budgets: list[int | None] = list(ctx_size or [])
    if ctx_from_run:
        with open_store(store) as st:
            for run_id in ctx_from_run:
                tokens = kv_budget_of(st.get(run_id).record)
                if tokens is None:
                    raise UsageError(f"--ctx-from-run {run_id}: its engine reported no KV cache size in tokens")
                budgets.append(tokens)
    budgets = budgets or [None]
    if parallel != "fit" and not parallel.isdigit():
        raise UsageError(f"--parallel must be a number or 'fit', got {parallel!r}")
    if saturate and slo_obj.empty:
        raise UsageError("--saturate: a saturation search needs an SLO (--slo ttft_s=...,e2e_s=...)")
    if saturate and not (0 < rate_low < rate_high):
        raise UsageError(f"--saturate: need 0 < --rate-low < --rate-high, got {rate_low}, {rate_high}")
    if not (0 < sample_rate <= 1000) or metrics_interval <= 0:
        raise UsageError("--sample-rate must be in (0, 1000] and --metrics-interval positive")
    workload = WorkloadSpec(
        requests=requests or 4, prompt_tokens=prompt_tokens, prompt_tokens_max=prompt_tokens_max,
        output_tokens=output_tokens, output_tokens_max=output_tokens_max, warmup_requests=warmup,
        arrival=arrival,  # type: ignore[arg-type]  # validated by WorkloadSpec
        timeout_s=request_timeout, seed=seed, dataset=str(dataset) if dataset else None,
    )  # fmt: skip
    per_request = tokens_per_request(workload)
    flags: dict[str, Any] = {"engine": engine, "threads": threads, "model": model, "server_path": server_path,
                             "engine_arg": engine_arg, "memory_limit": memory_limit, "request_timeout": request_timeout}
    doc = load_spec_file(spec_file).to_dict() if spec_file is not None else {}
    doc, where = apply_overrides(doc, overrides_from_flags({k: v for k, v in flags.items() if v is not None},
                                                           set_ or ()))
    doc["environment"] = {**doc.get("environment", {}), "name": env}
    doc["workload"] = workload.to_dict()
    doc["sampler"] = {**doc.get("sampler", {}), "rate_hz": sample_rate, "metrics_interval_s": metrics_interval}
    base = build_spec(doc, {**where, "environment.name": "--env"}, origin="sweep")
    if base.engine.kind not in ("llamacpp", "vllm"):
        raise UsageError(f"--engine {base.engine.kind}: sweeps set a KV budget for llamacpp and vllm only")

    def options(point: SweepPoint) -> RunSpec:
        return with_kv_budget(base, point.ctx_size, per_request, parallel, kv_unified)

    points = plan_points(conc, rates, budgets)
    for p in points:
        options(p)  # every point's engine options are valid before the first run starts
        workload_for(p, workload, requests, requests_per_concurrency)
    environment = make_environment(base.environment)
    environment.check()
    settings = SweepSettings(
        base=base,
        slo=slo_obj,
        requests=requests,
        requests_per_concurrency=requests_per_concurrency,
    )
    err = Console(stderr=True, highlight=False)
    lines = _Lines(err, quiet=False)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "sweep_id": settings.sweep_id, "store": str(store),
        "environment": environment.name, "slo": slo_obj.to_dict(), "slo_text": slo_obj.describe(),
        "tokens_per_request": per_request, "parallel": parallel,
    }  # fmt: skip
    rows: list[dict[str, Any]] = []
    try:
        with interrupt_on_sigterm(), open_store(store) as st:
            err.print(f"memgap: sweep {settings.sweep_id}: {len(points)} points, {environment.name}", markup=False)
            engines = [o.engine for o in map(options, points)]
            small = sorted({(o.ctx_size, o.parallel) for o in engines
                            if isinstance(o, LlamaCppSpec) and o.ctx_size // o.parallel < LLAMACPP_MIN_SLOT_CELLS})
            for ctx, slots in small:
                err.print(f"memgap: note: ctx {ctx} over {slots} slots is {ctx // slots} cells each; llama.cpp gives a slot at "
                          f"least {LLAMACPP_MIN_SLOT_CELLS}, so its KV budget will be {LLAMACPP_MIN_SLOT_CELLS * slots} cells "
                          "(see kv_cache_tokens)", markup=False)  # fmt: skip

            engine_for = options

            rows = run_sweep(points, settings, engine_for, st, environment=environment, observer=lines,
                             on_row=lines.row)  # fmt: skip
            if saturate:
                sat, sat_rows = search_saturation(
                    settings, engine_for, st, concurrency=max(conc), ctx_size=budgets[0], lo=rate_low, hi=rate_high,
                    steps=saturation_steps, attainment=slo_attainment, environment=environment, observer=lines,
                    on_row=lines.row,
                )  # fmt: skip
                result["saturation_search"] = {**sat.to_dict(), "attainment": slo_attainment, "points": sat_rows}
    except KeyboardInterrupt:
        raise Interrupted("interrupted; finished points are stored, the one in progress was recorded as failed") from None

    x_label = "rate" if rates else "concurrency"
    result["points"] = rows
    result["knees"] = knees(rows)
    if html is not None:
        try:
            html.write_text(render_text(SweepHtmlReporter(result)), encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--html: cannot write {html}: {e}") from None
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        console = Console(highlight=False, width=max(160, Console().width))
        console.print(sweep_table(rows, f"memgap sweep {settings.sweep_id} ({environment.name}, "
                                        f"{per_request} tokens/request, SLO {slo_obj.describe() or 'none'})"))  # fmt: skip
        for line in knee_lines(result["knees"], x_label):
            console.print(line, markup=False)
        sat_res = result.get("saturation_search")
        if sat_res:
            best = sat_res["best_rate_per_s"]
            console.print(f"saturation: highest rate meeting the SLOs for {100 * slo_attainment:.0f}% of requests: "
                          + ("none (not even the lowest)" if best is None else f"{best:.3g}/s")
                          + ("" if sat_res["bounded"] else " (still met at the highest rate tried)"), markup=False)  # fmt: skip
        for r in rows:
            if r.get("status") != "ok":
                console.print(f"[red]{r['run_id']} ({r.get('ctx_size')}, load {r['load']:g}) failed:[/red] {r.get('failure')}")
        if html is not None:
            console.print(f"curves written to {html}", markup=False)
    all_rows = rows + list((result.get("saturation_search") or {}).get("points", []))
    if all_rows and all(r.get("status") != "ok" for r in all_rows):
        raise typer.Exit(1)
    return 0


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
