"""Orchestration failure paths of one run, with a clearly named test double in place of
the engine (the real engine is exercised in tests/integration/test_run_real.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.report import EngineReport
from memgap.load.spec import WorkloadSpec
from memgap.outcome import DIED_BEFORE_READY, DIED_DURING_WORKLOAD, describe_failure
from memgap.runner import execute_run
from memgap.spec import RunSpec
from memgap.store import Store


class ScriptedEngineDouble:
    """Test double: runs a Python snippet instead of an inference engine."""

    name = "double"

    def __init__(self, code: str, tmp: Path) -> None:
        self.code = code
        self.model_path = tmp / "model.bin"
        self.model_path.write_bytes(b"weights")

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
        return EngineCommand(argv=(sys.executable, "-c", self.code))

    def health_path(self) -> str:
        return "/health"

    def metrics_path(self) -> str | None:
        return None

    def version(self) -> str | None:
        return "double 1"

    def model(self) -> ModelFile:
        return ModelFile(path=self.model_path, size_bytes=7, sha256="0" * 64, name="model.bin")

    def options(self) -> dict[str, Any]:
        return {"code": self.code}

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("llamacpp", text)


def run(tmp_path: Path, code: str, ready_timeout_s: float = 120.0) -> dict[str, Any]:
    config = RunSpec(workload=WorkloadSpec(requests=1, warmup_requests=0),
                     timeouts={"ready_s": ready_timeout_s})  # type: ignore[arg-type]
    with Store(tmp_path / "s.db") as st:
        rec = execute_run(config, st, engine=ScriptedEngineDouble(code, tmp_path))
        assert [r.run_id for r in st.runs()] == [rec["run_id"]]
        assert st.engine_log(rec["run_id"]) is not None
    return rec


def test_engine_that_exits_is_a_failed_run_with_log_tail(tmp_path: Path, no_leftovers: None) -> None:
    rec = run(tmp_path, "import sys; print('fatal: cannot load model'); sys.exit(3)")
    assert rec["status"] == "failed"
    assert rec["failure"] == "engine exited with status 3 before it was ready"
    assert "fatal: cannot load model" in rec["failure_log_tail"]
    assert rec["requests_ok"] == 0 and rec["output_tokens"] == 0
    assert rec["output_tokens_per_s"] is None and rec["ttft_s"]["p50"] is None


def test_engine_never_ready_times_out_and_is_stopped(tmp_path: Path, no_leftovers: None) -> None:
    rec = run(tmp_path, "import time; print('loading', flush=True); time.sleep(120)", ready_timeout_s=1.0)
    assert rec["status"] == "failed"
    assert rec["failure"].startswith("engine not ready after 1 s")
    assert rec["engine_exit_status"] == -15  # SIGTERM from memgap
    assert rec["memory"]["samples"] >= 2 and rec["memory"]["process_rss_peak_bytes"] > 0


@pytest.mark.parametrize(
    ("when", "status", "cg", "expected"),
    [
        (DIED_BEFORE_READY, 1, {"oom_kill_count": 2, "limit_bytes": 64 * 2**20},
         "engine was OOM-killed before it was ready (cgroup oom_kill count 2; limit 64.0 MiB; exit status 1)"),
        (DIED_DURING_WORKLOAD, -9, None, "engine killed by signal 9 during the workload"),
        (DIED_DURING_WORKLOAD, 2, {"oom_kill_count": 0}, "engine exited with status 2 during the workload"),
        ("engine not ready after 5 s", None, None, "engine not ready after 5 s"),
    ],
)
def test_describe_failure(when: str, status: int | None, cg: dict[str, Any] | None, expected: str) -> None:
    assert describe_failure(when, status, cg) == expected
