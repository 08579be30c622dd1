"""Engines that drive their own workload (trtllm-bench): their steps run in order in the
run's environment and scratch folder, each launched like an engine command; the sampler
runs during the measured step (throughput). Readiness is "the step is running", success
is exit status 0 of every step. ``perform_self_driven`` turns the outcome into a record."""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import cgroup_counters
from memgap.diagnose.run import after_run
from memgap.engines.base import REPORT_MARKER, EngineStep, ModelFile, SelfDrivenEngine
from memgap.envs import LaunchSpec, RunningEngine
from memgap.envs.base import Environment
from memgap.memory import memory_summary
from memgap.outcome import (
    DIED_BEFORE_READY,
    DIED_DURING_WORKLOAD,
    RunObserver,
    RunOutcome,
    build_record,
    describe_failure,
    kernel_oom_kills,
    log_tail,
)
from memgap.sampler import Sampler
from memgap.series import MemorySeries
from memgap.spec import RunSpec

POLL_S = 0.1


@dataclass
class StepResult:
    name: str
    argv: list[str]
    measured: bool
    exit_status: int | None = None
    duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "argv": self.argv, "measured": self.measured,
                "exit_status": self.exit_status, "duration_s": self.duration_s}


@dataclass
class StepsOutcome:
    steps: list[StepResult] = field(default_factory=list)
    failed_step: StepResult | None = None
    timed_out_s: float | None = None  # the measured step ran past this many seconds
    start_error: str | None = None  # the environment could not start a step
    interrupted: bool = False
    ready_s: float | None = None
    series: MemorySeries | None = None
    log_text: str = ""
    cgroup_final: dict[str, Any] | None = None
    env_run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_status(self) -> int | None:
        last = self.failed_step or next((s for s in self.steps if s.measured), None)
        return last.exit_status if last is not None else None


def measured_step_limit_s(spec: RunSpec) -> float:
    """How long the measured step may run: the engine's start-up allowance plus one
    request timeout per round of ``concurrency`` requests (the spec has no field of its
    own for a self-driven engine; this bound follows from the ones it has)."""
    w = spec.workload
    return spec.timeouts.ready_s + w.timeout_s * math.ceil(w.requests / w.concurrency)


def _wait(running: RunningEngine, deadline: float | None) -> bool:
    """Until the step exits (True) or the deadline passes (False)."""
    while running.poll() is None:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def run_steps(
    steps: list[EngineStep],
    env: Environment,
    spec: RunSpec,
    *,
    run_dir: Path,
    run_id: str,
    phase: Callable[[str], None],
) -> StepsOutcome:
    """Run ``steps`` in order; stop at the first that fails. Ctrl-C stops the step in
    progress (the environment removes what it created) and sets ``interrupted``."""
    out = StepsOutcome()
    logs: list[str] = []
    for i, step in enumerate(steps, start=1):
        result = StepResult(step.name, list(step.command.argv), step.measured)
        out.steps.append(result)
        phase(f"{step.name} ({i}/{len(steps)})")
        log_path = run_dir / f"step-{i}-{step.name}.log"
        t0 = time.monotonic()
        sampler: Sampler | None = None
        before_stop: dict[str, Any] | None = None
        try:
            with env.launch(LaunchSpec(command=step.command, log_path=log_path, run_id=run_id)) as running:
                try:
                    if step.measured:
                        sampler = Sampler(running.pid, running.cgroup, spec.sampler)
                        sampler.start()
                        sampler.mark("start")
                        if running.poll() is None:  # readiness: the step is running
                            sampler.mark("ready")
                            out.ready_s = time.monotonic() - t0
                    limit = measured_step_limit_s(spec) if step.measured else None
                    finished = _wait(running, t0 + limit if limit is not None else None)
                    if not finished:
                        out.timed_out_s = limit
                    if sampler is not None:
                        sampler.mark("end")
                        sampler.read_kernel_peaks()
                        before_stop = cgroup_counters(running.cgroup)
                except KeyboardInterrupt:
                    out.interrupted = True
                    before_stop = cgroup_counters(running.cgroup)
                result.exit_status = running.stop(spec.timeouts.stop_s)
                result.duration_s = time.monotonic() - t0
                if sampler is not None:
                    out.cgroup_final = cgroup_counters(running.cgroup) or before_stop
                    out.env_run_info = dict(running.extra_info())
                    if result.exit_status not in (0, None) and (kills := kernel_oom_kills(running.cgroup)) is not None:
                        out.env_run_info["kernel_oom_kills"] = kills
                    out.series = sampler.stop()
                    sampler = None
        except (OSError, subprocess.SubprocessError) as e:
            out.start_error = f"could not start the {step.name} step: {e}"
        except KeyboardInterrupt:
            out.interrupted = True
        finally:
            if sampler is not None:
                out.series = sampler.stop()
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            logs.append(f"==> memgap: step {i}/{len(steps)} {step.name}: exit status {result.exit_status} <==\n{text}")
        if out.interrupted or out.start_error or out.timed_out_s is not None or result.exit_status != 0:
            out.failed_step = result
            break
    out.log_text = "\n".join(logs)
    return out


def perform_self_driven(
    spec: RunSpec, engine: SelfDrivenEngine, env: Environment, obs: RunObserver, run_id: str, created_at: str,
    model: ModelFile | None,
) -> RunOutcome:
    """An engine that drives its own load (trtllm-bench): its steps in the environment,
    memory sampled during the measured one, the workload's figures from its own report
    (kept verbatim after the log, behind REPORT_MARKER)."""
    name = spec.environment.name
    # One folder per run, removed with it; the engine's scratch folder inside it.
    with tempfile.TemporaryDirectory(prefix="memgap-run-") as tmp:
        workdir = Path(tmp) / "scratch"
        workdir.mkdir()
        obs.phase(name, "starting engine")
        out = run_steps(engine.steps(workdir), env, spec, run_dir=Path(tmp), run_id=run_id,
                        phase=lambda p: obs.phase(name, p))
        summary, report_text = engine.workload_summary(workdir)
    log_text = out.log_text + (REPORT_MARKER + report_text if report_text is not None else "")
    report = engine.parse_log(log_text)
    info = {**out.env_run_info, "self_driven": {
        "steps": [s.to_dict() for s in out.steps],
        "report": {k: (summary or {}).get(k) for k in ("source", "missing", "tpot_s")} if summary else None,
    }}
    failure, info = after_run(steps_failure(out, summary, report_text), interrupted=out.interrupted,
                              engine=engine.name, report=report.to_dict(), log_text=log_text,
                              cgroup_final=out.cgroup_final, env_info=info, series=out.series, created_at=created_at,
                              exit_status=out.exit_status)  # what memgap diagnosed (issue 14), as for a served run
    status = "ok" if failure is None else "failed"
    measured = next((s for s in out.steps if s.measured), None)
    record = build_record(
        run_id=run_id, created_at=created_at, config=spec, engine=engine,
        model_sha256=model.sha256 if model else None, model_name=model.name if model else None,
        model_size_bytes=model.size_bytes if model else None, env=env, status=status, failure=failure,
        log_tail_text=log_tail(log_text.partition(REPORT_MARKER)[0]) if failure else None, ready_s=out.ready_s,
        exit_status=out.exit_status, cgroup_final=out.cgroup_final, report=report.to_dict(),
        summary=summary, memory=memory_summary(out.series) if out.series is not None else None,
        command=measured.argv if measured else [], env_run_info=info,
    )
    obs.phase(name, f"done ({status})")
    return RunOutcome(record=record, engine_log=log_text, requests=[],
                      series=out.series.to_dict() if out.series is not None else None, interrupted=out.interrupted)


def steps_failure(out: StepsOutcome, summary: dict[str, Any] | None, report_text: str | None) -> str | None:
    step = out.failed_step
    if out.interrupted:
        return "interrupted (Ctrl-C or SIGTERM)"
    if out.start_error is not None:
        return out.start_error
    if step is not None and out.timed_out_s is not None:
        return f"the {step.name} step was still running after {out.timed_out_s:.0f} s and was stopped"
    if step is not None:
        when = DIED_DURING_WORKLOAD if step.measured else DIED_BEFORE_READY
        cg = out.cgroup_final if step.measured else None
        return f"{step.name} step: " + describe_failure(when, step.exit_status, cg, out.env_run_info if step.measured else None)
    if report_text is None:
        return "the measured step exited 0 but wrote no report (--report_json)"
    if summary is None:
        return "the engine's report is not a readable JSON object"
    if not summary.get("requests_ok"):
        return "the engine's report counts no completed request"
    return None
