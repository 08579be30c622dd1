"""``native``: the engine as a plain child process, sharing memgap's own cgroup."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

from memgap.envs.base import (
    Environment,
    LaunchSpec,
    RunningEngine,
    open_log,
    spawn,
    stop_process_group,
)


class _NativeEngine(RunningEngine):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.cgroup = None

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return stop_process_group(self.proc, timeout_s)


class NativeEnvironment(Environment):
    name = "native"

    def check(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "isolation": "none", "own_cgroup": False}

    @contextlib.contextmanager
    def launch(self, spec: LaunchSpec) -> Iterator[RunningEngine]:
        with open_log(spec.log_path) as log:
            proc = spawn(list(spec.command.argv), extra_env=spec.command.env, log=log)
            engine = _NativeEngine(proc)
            try:
                yield engine
            finally:
                engine.stop()
