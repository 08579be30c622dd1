"""One run: an environment launches the engine, the sampler and the workload run against
it, the engine log is parsed, and the run record is committed to the store.

Failures of the engine (never ready, died, OOM-killed) and of requests are results with a
cause, not exceptions (STYLE.md, 7). Only a missing privilege, a bad option or Ctrl-C
stop the caller -- and even then everything the run created is removed first."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx

from memgap.collect.cgroup import cgroup_counters
from memgap.diagnose.run import after_run
from memgap.engines.attached import given_model
from memgap.engines.base import Engine, EngineCommand, ModelFile, SelfDrivenEngine
from memgap.engines.registry import engine_for_run
from memgap.envs import LaunchSpec, RunningEngine, make_environment
from memgap.envs.base import Environment
from memgap.errors import EngineNotFound
from memgap.load.client import run_workload_sync
from memgap.load.records import RequestRecord
from memgap.memory import memory_summary
from memgap.outcome import (
    DIED_BEFORE_READY,
    DIED_DURING_WORKLOAD,
    LAST_READING,
    RunObserver,
    RunOutcome,
    build_record,
    describe_failure,
    kernel_oom_kills,
    log_tail,
    port_in_use,
)
from memgap.record import utc_timestamp
from memgap.sampler import Sampler
from memgap.selfdriven import perform_self_driven
from memgap.series import MemorySeries
from memgap.spec import RunSpec
from memgap.store import Store


class _Silent:
    def phase(self, environment: str, phase: str) -> None:
        return None

    def request_done(self, environment: str, record: RequestRecord, done: int, total: int) -> None:
        return None


class EngineFailed(Exception):
    """Internal: the engine failed in a way that makes this run a failed run."""


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_ready(
    running: RunningEngine, url: str, timeout_s: float, *, should_stop: Callable[[], bool] = lambda: False
) -> float:
    """Poll the health endpoint until it answers 200; return seconds waited.
    Raises EngineFailed when the engine exits or the timeout passes."""
    start = time.monotonic()
    last_err = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while True:
            rc = running.poll()
            if rc is not None:
                raise EngineFailed(DIED_BEFORE_READY)
            try:
                r = client.get(url)
                if r.status_code == 200:
                    return time.monotonic() - start
                last_err = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last_err = type(e).__name__
            if time.monotonic() - start > timeout_s:
                raise EngineFailed(f"engine not ready after {timeout_s:.0f} s (last health check: {last_err})")
            if should_stop():
                raise EngineFailed("stopped")
            time.sleep(0.1)


def _metrics_fetcher(url: str) -> Callable[[], str | None]:
    client = httpx.Client(timeout=5.0)  # fetched off the sampling loop (sampler.sparse); vLLM answers slowly under load

    def fetch() -> str | None:
        try:
            r = client.get(url)
        except httpx.HTTPError:
            return None
        return r.text if r.status_code == 200 else None

    fetch.close = client.close  # type: ignore[attr-defined]
    return fetch


def execute_run(
    spec: RunSpec,
    store: Store,
    *,
    engine: Engine | SelfDrivenEngine | None = None,
    environment: Environment | None = None,
    observer: RunObserver | None = None,
) -> dict[str, Any]:
    """Run ``spec`` once and commit its record (one transaction). Returns the record."""
    outcome = perform_run(spec, engine=engine, environment=environment, observer=observer)
    store.add_run(outcome.record, engine_log=outcome.engine_log, requests=outcome.requests, series=outcome.series)
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome.record


def perform_run(
    spec: RunSpec,
    *,
    engine: Engine | SelfDrivenEngine | None = None,
    environment: Environment | None = None,
    observer: RunObserver | None = None,
) -> RunOutcome:
    """Run ``spec`` once; nothing is stored. ``engine``/``environment``: already made
    from the spec (the CLI checks them before the first run); made here otherwise."""
    obs = observer or _Silent()
    config = spec
    any_engine = engine or engine_for_run(spec)
    env = environment or make_environment(spec.environment)
    env.check()  # privileges and tools: a typed error before anything is created
    run_id = new_run_id()
    created_at = utc_timestamp()
    attach = spec.environment.attach
    model = model_identity(any_engine, required=attach is None)
    if getattr(any_engine, "self_driven", False):
        return perform_self_driven(spec, cast("SelfDrivenEngine", any_engine), env, obs, run_id, created_at, model)
    engine = cast("Engine", any_engine)
    # One folder per run, removed with it: the engine's log and, in scratch/, the engine's
    # temporary files and caches (one folder, so that what a SIGKILLed memgap leaves is one).
    run_dir = tempfile.TemporaryDirectory(prefix="memgap-run-")
    scratch = Path(run_dir.name) / "scratch"
    scratch.mkdir()
    port: int | None = None
    if attach is None:
        port = free_port(config.host)
        base_url = f"http://{config.host}:{port}"
        command = engine.command(config.host, port, scratch=scratch)
    else:  # someone else's engine: drive its URL, start nothing
        base_url, command = attach.url.rstrip("/"), EngineCommand(argv=())
    environment_name = spec.environment.name

    failure: str | None = None
    interrupted = False
    series: MemorySeries | None = None
    workload_result = None
    ready_s: float | None = None
    exit_status: int | None = None
    cgroup_final: dict[str, Any] | None = None
    env_run_info: dict[str, Any] = {}
    log_text = ""

    with run_dir as tmp:
        log_path = Path(tmp) / "engine.log"
        obs.phase(environment_name, "starting engine" if attach is None else "attaching")
        sampler: Sampler | None = None
        fetch = _metrics_fetcher(base_url + (engine.metrics_path() or "/metrics"))
        try:
            with env.launch(LaunchSpec(command=command, log_path=log_path, run_id=run_id)) as running:
                sampler = Sampler(
                    running.pid,
                    running.cgroup,
                    config.sampler,
                    metrics_fetch=fetch if engine.metrics_path() else None,
                )
                sampler.start()
                sampler.mark("start")
                try:
                    ready_s = wait_ready(running, base_url + engine.health_path(), config.timeouts.ready_s)
                    sampler.mark("ready")
                    obs.phase(environment_name, "workload")
                    done = 0

                    def on_record(rec: RequestRecord) -> None:
                        nonlocal done
                        if not rec.warmup:
                            done += 1
                        obs.request_done(environment_name, rec, done, config.workload.requests)

                    workload_result = run_workload_sync(base_url, config.workload, on_record=on_record)
                    if running.poll() is not None:
                        raise EngineFailed(DIED_DURING_WORKLOAD)
                    sampler.mark("end")
                except EngineFailed as e:
                    failure = str(e)
                except KeyboardInterrupt:
                    interrupted = True
                    failure = "interrupted (Ctrl-C or SIGTERM)"
                obs.phase(environment_name, "stopping engine" if attach is None else "detaching (the engine keeps running)")
                # A container's cgroup goes with the container: read it before stopping
                # too, and keep the earlier reading where the later one finds it gone.
                sampler.read_kernel_peaks()
                kernel_peak = sampler.series.kernel_cgroup_peak_bytes
                before_stop = cgroup_counters(running.cgroup)
                exit_status = running.stop(config.timeouts.stop_s)
                sampler.read_kernel_peaks()
                if sampler.series.kernel_cgroup_peak_bytes is None:
                    sampler.series.kernel_cgroup_peak_bytes = kernel_peak
                cgroup_final = cgroup_counters(running.cgroup) or before_stop
                with contextlib.suppress(Exception):
                    env_run_info = dict(running.extra_info())
                if failure in (DIED_BEFORE_READY, DIED_DURING_WORKLOAD) and \
                        (kills := kernel_oom_kills(running.cgroup)) is not None:
                    env_run_info["kernel_oom_kills"] = kills
                if cgroup_final is None and env_run_info.get("cgroup_last_reading"):
                    cgroup_final = {**env_run_info["cgroup_last_reading"], "read": LAST_READING}
                series = sampler.stop()
                sampler = None
        except (OSError, subprocess.SubprocessError) as e:
            failure = f"could not start the engine: {e}"
        except KeyboardInterrupt:
            interrupted = True
            failure = "interrupted (Ctrl-C or SIGTERM)"
        finally:
            if sampler is not None:
                series = sampler.stop()
            fetch.close()  # type: ignore[attr-defined]
            if log_path.exists():
                log_text = log_path.read_text(errors="replace")

    if failure is not None and not interrupted:
        failure = describe_failure(failure, exit_status, cgroup_final, env_run_info)
        if port is not None and port_in_use(log_text):
            failure += f" (port {port} was already in use)"

    report = engine.parse_log(log_text)
    summary = workload_result.summary if workload_result is not None else None
    if failure is None and summary is not None and summary.requests_ok == 0:
        kinds = ", ".join(f"{k} x{n}" for k, n in summary.errors_by_kind.items())
        failure = f"all {summary.requests_errored} requests failed ({kinds})"
    failure, env_run_info = after_run(failure, interrupted=interrupted, engine=engine.name, report=report.to_dict(), log_text=log_text, cgroup_final=cgroup_final, env_info={"name": environment_name, **env_run_info}, series=series, created_at=created_at, exit_status=exit_status)  # what memgap diagnosed (issue 14)
    status = "ok" if failure is None else "failed"

    if attach is not None:
        env_run_info = _attached_notes(env_run_info, model, spec)
    record = build_record(
        run_id=run_id,
        created_at=created_at,
        config=config,
        engine=engine,
        model_sha256=model.sha256 if model else None,
        model_name=model.name if model else given_model(spec.engine) if attach is not None else None,
        model_size_bytes=model.size_bytes if model else None,
        env=env,
        status=status,
        failure=failure,
        log_tail_text=log_tail(log_text) if failure else None,
        ready_s=ready_s,
        exit_status=exit_status,
        cgroup_final=cgroup_final,
        report=report.to_dict(),
        summary=summary.to_dict() if summary is not None else None,
        memory=memory_summary(series) if series is not None else None,
        command=list(command.argv),
        env_run_info=env_run_info,
    )
    if attach is not None:
        record["prefix_cache"] = "attached engine: its prompt cache may hold requests sent before this run"
    obs.phase(environment_name, f"done ({status})")
    return RunOutcome(
        record=record,
        engine_log=log_text,
        requests=[r.to_dict() for r in (workload_result.records if workload_result else ())],
        series=series.to_dict() if series is not None else None,
        interrupted=interrupted,
    )


def model_identity(engine: Engine | SelfDrivenEngine, *, required: bool) -> ModelFile | None:
    """The model's identity (digest). An attached engine's model need not be a local file:
    then it is unknown (None) and the record says so."""
    try:
        return engine.model()
    except EngineNotFound:
        if required:
            raise
        return None


def _attached_notes(info: dict[str, Any], model: ModelFile | None, spec: RunSpec) -> dict[str, Any]:
    if model is not None:
        return info
    given = given_model(spec.engine)
    why = "no --model given" if given is None else f"--model {given!r} is not a local file or folder"
    notes = [*info.get("not_measured", []), {"what": "model identity", "why": f"{why}: its digest and size are unknown"}]
    return {**info, "not_measured": notes}
