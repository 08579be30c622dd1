"""Engines that drive their own workload (trtllm-bench): their steps run in order in the
run's environment and scratch folder, each launched like an engine command; the sampler
runs during the measured step (throughput). Readiness is "the step is running", success
is exit status 0 of every step. The runner turns the outcome into a record."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import cgroup_counters
from memgap.engines.base import EngineStep
from memgap.envs import LaunchSpec, RunningEngine
from memgap.envs.base import Environment
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
