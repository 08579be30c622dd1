"""``memgap capacity``: the highest load each environment and KV budget serves under an SLO.

A command of its own rather than a mode of ``sweep``: a sweep runs the points it is given
and draws curves; a capacity search decides each next point from the ones before, stops
by itself, resumes by id, and answers with one number (and interval) per arm set beside
``plan``'s prediction. The two share the engine and KV-budget flags and how a point runs.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memgap.analysis.capacity_outcome import CapacityOutcome, outcome_of, tokens_per_request
from memgap.capacity import Arm, CapacitySettings, Ladder, SearchSettings, Step
from memgap.capacity_run import new_capacity_id, open_search, run_capacity
from memgap.cli.interrupt import sigterm_as_interrupt as _sigterm_as_interrupt
from memgap.cli.spec_flags import apply_overrides, build_spec, overrides_from_flags
from memgap.cli.sweep import LLAMACPP_MIN_SLOT_CELLS, with_kv_budget
from memgap.envs import ENVIRONMENTS, make_environment
from memgap.errors import Interrupted, UsageError
from memgap.load.slo import parse_slo
from memgap.load.spec import WorkloadSpec
from memgap.spec import LlamaCppSpec, RunSpec, VllmSpec, load_spec_file
from memgap.store import SCHEMA_VERSION, open_store
from memgap.units import parse_size


def arm_spec(settings: CapacitySettings, arm: Arm) -> RunSpec:
    """The arm's spec before the load is set: its environment, its KV budget."""
    base = RunSpec.from_dict(dict(settings.base), origin="capacity search")
    spec = base.with_environment(arm.environment)
    if arm.kv_cache_bytes is not None:
        if not isinstance(spec.engine, VllmSpec):
            raise UsageError("--kv-cache-memory sets vLLM's KV size; for llama.cpp give --ctx-size (tokens)")
        spec = spec.replace(engine={**spec.engine.model_dump(mode="json"), "kv_cache_memory_bytes": arm.kv_cache_bytes})
    per_request = tokens_per_request(settings)
    return with_kv_budget(spec, arm.ctx_tokens, per_request, settings.parallel, False)


def _f(v: Any, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _interval(est: dict[str, Any]) -> str:
    if est["runs"] == 0:
        return "-"
    low = "below the ladder" if est["low"] is None else _f(est["low"], "g")
    high = _f(est["high"], "g") + ("+" if est["open_above"] else "")
    return f"{low} .. {high}"


def summary_table(out: dict[str, Any]) -> Table:
    kind = out["settings"]["search"]["ladder"]["kind"]
    t = Table(title=f"memgap capacity {out['capacity_id']}: highest {kind} meeting {out['slo']} "
                    f"({out['tokens_per_request']} tokens/request)")  # fmt: skip
    for col in ("arm", "KV tokens", "boundary", f"{100 * out['settings']['search']['confidence']:.0f}% interval",
                "runs", "stopped", "predicted", "agrees"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("arm", "stopped") else "right")
    for a in out["arms"]:
        est, pred, diag = a["estimate"], a["prediction"] or {}, a["diagnosis"]
        agrees = "-" if diag.get("agrees") is None else ("yes" if diag["agrees"] else "no")
        if diag.get("tolerance") is not None:
            agrees += f" (±{diag['tolerance']:.3g})"
        t.add_row(a["arm"], _f(pred.get("kv_cache_tokens"), "d"), _f(est["boundary"], "g"), _interval(est),
                  str(est["runs"]), a["reason"] if a["done"] else f"next: {a['reason']}",
                  _f(pred.get("predicted"), "d") + (f" ({pred['binds']})" if pred.get("binds") else ""), agrees)  # fmt: skip
    return t


def points_table(arm: dict[str, Any]) -> Table:
    t = Table(title=f"{arm['arm']}: points tried")
    rungs = arm["estimate"]["rungs"]
    keys = list(dict.fromkeys(k for r in rungs for k in r["observed"]))
    for col in ("load", "runs", "meets", "P(meets)", *keys, "engine waiting peak", "KV usage peak", "preempted"):
        t.add_column(col, justify="right")
    for r in rungs:
        s = r["signals"]
        t.add_row(_f(r["load"], "g"), str(r["runs"]), "yes" if r["meets"] else "no", _f(r["pass_probability"], ".2f"),
                  *(_f(r["observed"].get(k)) for k in keys), _f(s.get("engine_waiting_peak"), "g"),
                  "-" if s.get("kv_usage_peak") is None else f"{100 * s['kv_usage_peak']:.0f}%",
                  _f(s.get("preemptions"), "g"))  # fmt: skip
    return t


def print_outcome(console: Console, out: dict[str, Any]) -> None:
    console.print(summary_table(out))
    for a in out["arms"]:
        console.print(points_table(a))
        diag = a["diagnosis"]
        for key in ("why", "evidence"):
            if diag.get(key):
                console.print(f"{a['arm']}: {diag[key]}", markup=False)
    for s in out["sentences"]:
        console.print(s, markup=False)
    g = out["grid"]
    console.print(f"runs: {out['runs']} adaptive; a fixed grid of the same resolution ({g['rungs_per_arm']} loads per "
                  f"arm): {g['once']} once each, {g['with_repeats']} with "
                  f"{out['settings']['search']['repeats']} repeats each", markup=False)  # fmt: skip
    if not out["done"]:
        console.print(f"not finished: resume with memgap capacity --resume {out['capacity_id']}", markup=False)


class _Lines:
    """One line per finished point on stderr."""

    def __init__(self, console: Console, settings: CapacitySettings) -> None:
        self.console, self.settings = console, settings

    def phase(self, environment: str, phase: str) -> None:
        return None

    def request_done(self, environment: str, record: Any, done: int, total: int) -> None:
        return None

    def point(self, arm: Arm, step: Step, record: dict[str, Any]) -> None:
        ttft = (record.get("ttft_s") or {}).get("p99")
        label = (record.get("label") or "").removeprefix(self.settings.capacity_id + " ")
        self.console.print(f"memgap: capacity: {label} ({step.reason}): {record.get('status')}, "
                           f"{record.get('requests_ok')} ok / {record.get('requests_errored')} errored, "
                           f"TTFT p99 {_f(ttft)} s", markup=False, highlight=False)  # fmt: skip


def parse_arm(text: str) -> Arm:
    """``native``, ``native:1024`` (tokens) or ``sandbox:2MiB`` (KV bytes) -> Arm."""
    env, _, budget = text.partition(":")
    if env not in ENVIRONMENTS:
        raise UsageError(f"--arm {text!r}: unknown environment {env!r} (known: {', '.join(ENVIRONMENTS)})")
    if not budget:
        return Arm(env)
    if budget.isdigit():
        return Arm(env, ctx_tokens=int(budget))
    return Arm(env, kv_cache_bytes=parse_size(budget, what=f"--arm {text}"))


def _budgets(ctx_size: list[int], ctx_from_run: list[str], kv_cache_memory: list[str], store: Path) -> list[tuple[int | None, int | None]]:
    out: list[tuple[int | None, int | None]] = [(c, None) for c in ctx_size]
    if ctx_from_run:
        with open_store(store) as st:
            for run_id in ctx_from_run:
                tokens = (st.get(run_id).record.get("engine_report") or {}).get("kv_cache_tokens")
                if not isinstance(tokens, int) or tokens <= 0:
                    raise UsageError(f"--ctx-from-run {run_id}: its engine reported no KV cache size in tokens")
                out.append((tokens, None))
    out += [(None, parse_size(m, what="--kv-cache-memory")) for m in kv_cache_memory]
    return out or [(None, None)]


def capacity_command(
    slo: Annotated[str, typer.Option(help="The SLO a load must meet, e.g. ttft_p99_s<=2,itl_p99_s<=0.2,errors<=1% (percentiles over a point's requests; per-request bounds like ttft_s=1 count through --attainment). Without an errors bound, errors<=0% is added.")] = "",
    env: Annotated[list[str] | None, typer.Option("--env", help=f"Environment, repeatable: one arm per environment and KV budget ({', '.join(ENVIRONMENTS)}).")] = None,
    ctx_size: Annotated[list[int] | None, typer.Option("--ctx-size", "-c", help="KV budget in tokens, repeatable (llama.cpp's context size; vLLM's block count).")] = None,
    ctx_from_run: Annotated[list[str] | None, typer.Option("--ctx-from-run", help="Add a KV budget: the KV tokens a stored run's engine reported, repeatable.")] = None,
    kv_cache_memory: Annotated[list[str] | None, typer.Option("--kv-cache-memory", help="vLLM: KV cache size (e.g. 64MiB), repeatable: one arm each.")] = None,
    arm: Annotated[list[str] | None, typer.Option("--arm", help="An arm of its own instead of every --env with every budget: ENV, ENV:TOKENS (llama.cpp's context size; vLLM's blocks) or ENV:SIZE (vLLM's KV size, e.g. sandbox:2MiB), repeatable.")] = None,
    parallel: Annotated[str, typer.Option(help="llama.cpp slots: a number, or 'fit' = ctx-size // (prompt + output), so the KV budget caps the requests served at once.")] = "fit",
    load: Annotated[str, typer.Option(help="What to search: concurrency, or rate (requests per second).")] = "concurrency",
    low: Annotated[float, typer.Option(help="Lowest load on the ladder.")] = 1.0,
    high: Annotated[float, typer.Option(help="Highest load on the ladder.")] = 32.0,
    step: Annotated[float | None, typer.Option(help="Ladder resolution: concurrency added per rung (default 1), or a rate's growth per rung (default 0.1 = 10%).", show_default=False)] = None,
    start: Annotated[float | None, typer.Option(help="Load the bracket starts from (default: --low).", show_default=False)] = None,
    tolerance: Annotated[int, typer.Option(help="Stop when the interval spans at most this many rungs.")] = 1,
    confidence: Annotated[float, typer.Option(help="Confidence of the interval.")] = 0.95,
    repeats: Annotated[int, typer.Option(help="Runs at each of the two loads beside the boundary before it may stop.")] = 2,
    max_runs: Annotated[int, typer.Option(help="Run budget per arm.")] = 16,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 2000,
    attainment: Annotated[float, typer.Option(help="Share of requests that must meet per-request bounds (ttft_s=...), if any.")] = 0.9,
    concurrency: Annotated[int | None, typer.Option(help="Rate searches: the client's cap on requests in flight (default: --high rounded up).", show_default=False)] = None,
    requests: Annotated[int | None, typer.Option(help="Measured requests per point (default: --requests-per-load x load, at least 4).", show_default=False)] = None,
    requests_per_load: Annotated[int, typer.Option(help="Without --requests: requests per unit of concurrency (rate: seconds of arrivals).")] = 2,
    min_requests: Annotated[int, typer.Option(help="Without --requests: at least this many per point.")] = 4,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens (memgap plan --kv-bound-at proposes one).")] = 64,
    output_tokens: Annotated[int, typer.Option(help="Output tokens per request.")] = 192,
    warmup: Annotated[int, typer.Option(help="Warm-up requests per point, not counted.")] = 1,
    arrival: Annotated[str, typer.Option(help="Arrivals in rate searches: poisson or constant.")] = "poisson",
    seed: Annotated[int, typer.Option(help="Seed for prompts, arrivals and the bootstrap.")] = 0,
    engine: Annotated[str | None, typer.Option("--engine", help="Engine: llamacpp (default) or vllm.", show_default=False)] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="Base run spec file (TOML or JSON); the search sets the load and the KV budget.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Set any spec field by its path, repeatable.", show_default=False)] = None,
    memory_limit: Annotated[str | None, typer.Option(help="Memory limit of the sandbox's cgroup, e.g. 2GiB (sandbox arms only).")] = None,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: all usable cores).")] = None,
    model: Annotated[Path | None, typer.Option(help="GGUF model file (default: the embedded SmolLM2-135M).")] = None,
    server_path: Annotated[Path | None, typer.Option(help="llama-server binary.")] = None,
    engine_arg: Annotated[list[str] | None, typer.Option("--engine-arg", help="Extra engine argument, repeatable.")] = None,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request counts as timed out.")] = 120.0,
    sample_rate: Annotated[float, typer.Option(help="Memory samples per second.")] = 5.0,
    metrics_interval: Annotated[float, typer.Option(help="Seconds between reads of the engine's /metrics (queue, KV usage, preemptions).")] = 0.25,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    name: Annotated[str | None, typer.Option(help="Name the search (id capacity-NAME): run again with the same name and settings, it resumes.", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(help="Resume a stored search by its id, with its stored settings (the other search options are not read).", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the arms, the ladder and plan's prediction per arm; run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the tables.")] = False,
) -> int:
    """Search the highest load meeting an SLO per environment and KV budget, with an interval,
    beside plan's predicted concurrency; every point a stored run, resumable."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if resume is not None:
        with open_store(store) as st:
            stored = st.capacity_search(resume)
        if stored is None:
            raise UsageError(f"--resume {resume}: no such capacity search in {store}")
        settings = CapacitySettings.from_dict(stored["settings"])
    else:
        settings = _settings_from_flags(locals())
    arms = {a.name: arm_spec(settings, a) for a in settings.arms}  # every arm's spec is valid before a run
    per_request = tokens_per_request(settings)
    for a in settings.arms:
        e = arms[a.name].engine
        if isinstance(e, LlamaCppSpec) and e.ctx_size // e.parallel < LLAMACPP_MIN_SLOT_CELLS:
            err.print(f"memgap: note: {a.name}: {e.ctx_size} cells over {e.parallel} slots is below llama.cpp's "
                      f"{LLAMACPP_MIN_SLOT_CELLS} per slot; it will allocate more (see kv_cache_tokens)", markup=False)  # fmt: skip
    if dry_run:
        plan = {"capacity_id": settings.capacity_id, "settings": settings.to_dict(), "tokens_per_request": per_request,
                "rungs_per_arm": settings.search.ladder.size,
                "arms": [{"arm": a.name, "predicted": _predicted(arms[a.name], per_request)} for a in settings.arms]}  # fmt: skip
        sys.stdout.write(json.dumps(plan, indent=2) + "\n")
        return 0
    environments = {}
    for a in settings.arms:
        if a.environment not in environments:
            environments[a.environment] = make_environment(arms[a.name].environment)
            environments[a.environment].check()
    lines = _Lines(err, settings)
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with open_store(store) as st:
            resumed = open_search(st, settings)
            before = sum(a.estimate.runs for a in outcome_of(st, settings).arms)
            err.print(f"memgap: capacity {settings.capacity_id}: {len(settings.arms)} arms, "
                      f"{settings.search.ladder.size} loads each" + (f", resuming after {before} runs" if resumed else ""),
                      markup=False)  # fmt: skip
            outcome: CapacityOutcome = run_capacity(settings, lambda arm: arms[arm.name], st, environments=environments,
                                                    observer=lines, on_point=lines.point)  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; finished points are stored: resume with memgap capacity --resume "
                          f"{settings.capacity_id} --store {store}") from None  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = {"schema_version": SCHEMA_VERSION, "store": str(store), "runs_before": before, **outcome.to_dict()}
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        print_outcome(Console(highlight=False, width=max(160, Console().width)), out)
    return 0


def _predicted(spec: RunSpec, per_request: int) -> int | None:
    """Before any run: llama.cpp's slots from its context size (what 'fit' chose)."""
    e = spec.engine
    if isinstance(e, LlamaCppSpec):
        return min(e.parallel, max(e.ctx_size, LLAMACPP_MIN_SLOT_CELLS * e.parallel) // per_request)
    return None


def _settings_from_flags(f: dict[str, Any]) -> CapacitySettings:
    slo_obj = parse_slo(f["slo"])
    if slo_obj.empty:
        raise UsageError("--slo: a capacity search needs an SLO, e.g. ttft_p99_s<=2,errors<=1%")
    if slo_obj.errors_max is None:  # a load at which requests fail is past capacity, whatever their latency
        slo_obj = parse_slo(slo_obj.describe() + ",errors<=0%")
    if f["load"] not in ("concurrency", "rate"):
        raise UsageError(f"--load must be concurrency or rate, got {f['load']!r}")
    if f["parallel"] != "fit" and not f["parallel"].isdigit():
        raise UsageError(f"--parallel must be a number or 'fit', got {f['parallel']!r}")
    step = f["step"] if f["step"] is not None else (1.0 if f["load"] == "concurrency" else 0.1)
    ladder = Ladder(f["load"], f["low"], f["high"], step)
    start = ladder.rung_of(f["start"]) if f["start"] is not None else 0
    if start is None:
        raise UsageError(f"--start {f['start']:g} is not a load on the ladder ({ladder.label(0)} ... "
                         f"{ladder.label(ladder.size - 1)})")  # fmt: skip
    search = SearchSettings(ladder, start=start, tolerance=f["tolerance"], confidence=f["confidence"],
                            repeats=f["repeats"], max_runs=f["max_runs"], bootstrap=f["bootstrap"], seed=f["seed"],
                            attainment=f["attainment"])  # fmt: skip
    if f["arm"]:
        if f["env"] or f["ctx_size"] or f["ctx_from_run"] or f["kv_cache_memory"]:
            raise UsageError("--arm names each arm: give it instead of --env, --ctx-size, --ctx-from-run and --kv-cache-memory")
        arms = tuple(parse_arm(a) for a in f["arm"])
        envs = list(dict.fromkeys(a.environment for a in arms))
    else:
        envs = list(dict.fromkeys(f["env"] or ["native"]))
        budgets = _budgets(f["ctx_size"] or [], f["ctx_from_run"] or [], f["kv_cache_memory"] or [], f["store"])
        arms = tuple(Arm(e, ctx, kv) for e in envs for ctx, kv in budgets)
    workload = WorkloadSpec(requests=4, prompt_tokens=f["prompt_tokens"], output_tokens=f["output_tokens"],
                            warmup_requests=f["warmup"], timeout_s=f["request_timeout"], seed=f["seed"],
                            arrival=f["arrival"])  # fmt: skip
    flags = {"engine": f["engine"], "threads": f["threads"], "model": f["model"], "server_path": f["server_path"],
             "engine_arg": f["engine_arg"], "memory_limit": f["memory_limit"], "request_timeout": f["request_timeout"]}  # fmt: skip
    doc = load_spec_file(f["spec_file"]).to_dict() if f["spec_file"] is not None else {}
    doc, where = apply_overrides(doc, overrides_from_flags({k: v for k, v in flags.items() if v is not None},
                                                           f["set_"] or ()))  # fmt: skip
    # The sandbox's memory limit rides on the base spec; other environments drop it.
    base_env = "sandbox" if f["memory_limit"] is not None else envs[0]
    doc["environment"] = {**doc.get("environment", {}), "name": base_env}
    doc["workload"] = workload.to_dict()
    doc["sampler"] = {**doc.get("sampler", {}), "rate_hz": f["sample_rate"], "metrics_interval_s": f["metrics_interval"]}
    base = build_spec(doc, {**where, "environment.name": "--env"}, origin="capacity")
    if base.engine.kind not in ("llamacpp", "vllm"):
        raise UsageError(f"--engine {base.engine.kind}: capacity searches set a KV budget for llamacpp and vllm only")
    cap = f["concurrency"] if f["concurrency"] is not None else int(-(-f["high"] // 1))
    return CapacitySettings(new_capacity_id(f["name"]), base.to_dict(), arms, slo_obj.describe(), search,
                            requests=f["requests"], requests_per_load=f["requests_per_load"],
                            concurrency_cap=cap if f["load"] == "rate" else None, parallel=f["parallel"],
                            min_requests=f["min_requests"])  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("capacity")(capacity_command)
