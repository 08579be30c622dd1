"""What one run produced and how it is written down: the outcome a run returns (its record
and the raw data kept beside it), the record built from a run's parts, the one-line
failure causes, and the observer a run reports its progress to. Shared by the served
runner (``memgap.runner``) and engines that drive their own load (``memgap.selfdriven``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from memgap.collect.kmsg import oom_kills_in
from memgap.hostinfo import host_facts
from memgap.load.records import RequestRecord
from memgap.record import RECORD_VERSION, RunRecord, utc_timestamp
from memgap.units import format_bytes

if TYPE_CHECKING:
    from memgap.collect.cgroup import CgroupRef
    from memgap.engines.base import Engine, SelfDrivenEngine
    from memgap.envs.base import Environment
    from memgap.spec import RunSpec

LOG_TAIL_LINES = 30
# A SIGKILLed engine whose cgroup was within this share of its limit in the last reading
# before the cgroup went away (``cgroup_final["read"]``) was most likely OOM-killed.
NEAR_LIMIT = 0.9
LAST_READING = "last reading before the engine exited"


class RunObserver(Protocol):
    def phase(self, environment: str, phase: str) -> None: ...

    def request_done(self, environment: str, record: RequestRecord, done: int, total: int) -> None: ...


@dataclass
class RunOutcome:
    """Everything one run produced, before it is stored: the record and the raw data
    kept beside it. A Ray node returns this to the driver, which alone writes the store."""

    record: dict[str, Any]
    engine_log: str
    requests: list[dict[str, Any]]
    series: dict[str, Any] | None
    interrupted: bool = False


def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


DIED_BEFORE_READY = "before it was ready"
DIED_DURING_WORKLOAD = "during the workload"


def describe_failure(
    when: str, exit_status: int | None, cgroup_final: Mapping[str, Any] | None,
    env_info: Mapping[str, Any] | None = None,
) -> str:
    """One line naming what happened to the engine and the evidence for it. The evidence
    of an OOM kill, any of: the container engine's flag (``env_info["oom_killed"]``,
    docker/podman ``State.OOMKilled``), the kernel's log (``env_info["kernel_oom_kills"]``,
    from ``kernel_oom_kills``), the cgroup's OOM counter, or SIGKILL with the cgroup's peak
    at its limit. A container's cgroup goes with it, so its counters are the last reading
    before it exited: a watcher or a reading can miss the kill, the kernel's log does not."""
    if when not in (DIED_BEFORE_READY, DIED_DURING_WORKLOAD):
        return when
    cg, info = cgroup_final or {}, env_info or {}
    oom, peak, limit = cg.get("oom_kill_count"), cg.get("peak_bytes"), cg.get("limit_bytes")
    sigkill = exit_status in (137, -9)
    kills = info.get("kernel_oom_kills") or []
    evidence: list[str] = []
    if info.get("oom_killed"):
        evidence.append("container State.OOMKilled=true")
    if kills:
        more = f" and {len(kills) - 3} more" if len(kills) > 3 else ""
        memcg = kills[0].get("oom_memcg") or kills[0].get("task_memcg")
        evidence.append(f"kernel log: the OOM killer killed {', '.join(map(_victim, kills[:3]))}{more} in cgroup {memcg}")
    if oom:
        # unshare reports its child's death by SIGKILL as its own exit status 1: the
        # counter is the evidence that the kernel did it.
        evidence.append(f"cgroup oom_kill count {oom}")
    if sigkill and peak is not None and limit is not None and peak >= limit:
        evidence.append("SIGKILL with the cgroup's peak at its limit")
    if evidence:
        if limit is not None:
            evidence.append(f"limit {format_bytes(limit)}")
        if cg.get("failcnt"):
            evidence.append(f"cgroup failcnt {cg['failcnt']}")
        return f"engine was OOM-killed {when} ({'; '.join(evidence)}; exit status {exit_status})"
    if sigkill and peak is not None and limit is not None and peak >= NEAR_LIMIT * limit \
            and cg.get("read") == LAST_READING:
        # No evidence left, but the last reading came close (podman 4 on cgroup v1 once
        # left State.OOMKilled false, its cgroup at 96 of 100 MiB in the last reading).
        return (f"engine was most likely OOM-killed {when} (SIGKILL, exit status {exit_status}, with its cgroup "
                f"at {format_bytes(peak)} of its limit {format_bytes(limit)} in the last reading before it exited; "
                "the cgroup went with it, so its OOM counter could not be read)")
    if exit_status is not None and exit_status < 0:
        return f"engine killed by signal {-exit_status} {when}"
    if exit_status is None:  # an attached engine is not memgap's child
        return f"engine went away {when} (its exit status is not visible to memgap)"
    return f"engine exited with status {exit_status} {when}"


def _victim(kill: dict[str, Any]) -> str:
    rss = kill.get("anon_rss_bytes")
    return f"{kill['task']} (PID {kill['pid']}" + (f", {format_bytes(rss)} anonymous" if rss is not None else "") + ")"


def kernel_oom_kills(cgroup: CgroupRef | None) -> list[dict[str, Any]] | None:
    """The OOM kills the kernel logged in the run's own cgroup (or below it), as dicts for
    the record; None where there is no such cgroup or the kernel's log cannot be read."""
    if cgroup is None:
        return None
    kills = oom_kills_in(cgroup.path.name)
    return None if kills is None else [k.to_dict() for k in kills]


_PORT_IN_USE = ("address already in use", "couldn't bind http server socket", "port is already allocated")


def port_in_use(log_text: str) -> bool:
    """Whether the engine (or the container engine publishing its port) said the port
    was taken; the runner picks a free port, but another process may take it first."""
    low = log_text[-20000:].lower()
    return any(m in low for m in _PORT_IN_USE)


def build_record(
    *,
    run_id: str,
    created_at: str,
    config: RunSpec,
    engine: Engine | SelfDrivenEngine,
    model_sha256: str | None,
    model_name: str | None,
    model_size_bytes: int | None,
    env: Environment,
    status: str,
    failure: str | None,
    log_tail_text: str | None,
    ready_s: float | None,
    exit_status: int | None,
    cgroup_final: dict[str, Any] | None,
    report: dict[str, Any],
    summary: dict[str, Any] | None,
    memory: dict[str, Any] | None,
    command: list[str],
    env_run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    s = summary or {}

    def pct(name: str) -> dict[str, Any]:
        p = s.get(name) or {}
        return {k: p.get(k) for k in ("p50", "p90", "p99", "mean", "n")}

    mem = memory or {}
    return RunRecord.model_validate({
        "record_version": RECORD_VERSION,
        "run_id": run_id,
        "study_id": config.study_id,
        "label": config.label,
        "created_at": created_at,
        "finished_at": utc_timestamp(),
        "environment": config.environment.name,
        "environment_info": {**env.describe(), **(env_run_info or {})},
        "engine": engine.name,
        "engine_version": engine.version(),
        "engine_options": engine.options(),
        "engine_command": command,
        "model": model_name,
        "model_sha256": model_sha256,
        "model_size_bytes": model_size_bytes,
        "status": status,
        "failure": failure,
        "failure_log_tail": log_tail_text,
        "ready_s": ready_s,
        "engine_exit_status": exit_status,
        "workload": config.workload.to_dict(),
        "sampler": {"rate_hz": config.sampler.rate_hz, "smaps_interval_s": config.sampler.smaps_interval_s,
                    "full_rate_hz": min(config.sampler.full_rate_hz, config.sampler.rate_hz)},
        # What produced this run, whole: `memgap rerun RUN_ID` runs it again.
        "spec": config.to_dict(),
        "requests_ok": s.get("requests_ok", 0),
        "requests_errored": s.get("requests_errored", 0),
        "errors_by_kind": s.get("errors_by_kind", {}),
        "output_tokens": s.get("output_tokens", 0),
        "output_tokens_per_s": s.get("output_tokens_per_s"),
        "request_throughput_per_s": s.get("request_throughput_per_s"),
        "workload_duration_s": s.get("duration_s"),
        "token_count_mismatches": s.get("token_count_mismatches"),
        # Every run starts its own engine process, so no prompt (prefix) cache carries over
        # from an earlier run; hits within this run are counted (e.g. a shared chat template).
        "prefix_cache": "fresh engine process per run",
        "prompt_cache_hits": s.get("prompt_cache_hits"),
        "ttft_s": pct("ttft_s"),
        "itl_s": pct("itl_s"),
        "e2e_s": pct("e2e_s"),
        "queue_delay_s": pct("queue_delay_s"),
        "engine_report": report,
        "memory": mem,
        "cgroup_final": cgroup_final,
        "host": host_facts(),
    }).to_dict()
