"""The environment interface, and what the environments that start the engine as memgap's
own child process (native, chroot, sandbox) share."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from memgap.collect.cgroup import CgroupRef
from memgap.engines.base import EngineCommand


@dataclass(frozen=True)
class LaunchSpec:
    command: EngineCommand
    log_path: Path
    run_id: str


class RunningEngine(ABC):
    """An engine started by an environment.

    ``pid`` is the host PID at the root of the engine's process tree (what the sampler
    walks); ``cgroup`` is the run's own memory cgroup, or None when the run has none
    (native: it shares the caller's)."""

    pid: int
    cgroup: CgroupRef | None

    @abstractmethod
    def poll(self) -> int | None:
        """Exit status if the engine has exited, else None."""

    @abstractmethod
    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the engine (SIGTERM, then SIGKILL after timeout_s); returns its exit status."""

    def extra_info(self) -> dict[str, Any]:
        """What the environment learned during the run (a container's id, exit state, its
        engine's own stats...), merged into the record's ``environment_info``. Called after
        ``stop`` and before the launch context exits. A key ``oom_killed`` (bool) and
        ``cgroup_last_reading`` (dict) feed the failure description."""
        return {}


class ChildProcessEngine(RunningEngine):
    """An engine that is memgap's child process: polled through its ``Popen``, stopped by
    signalling its whole process group (it runs in a session of its own)."""

    def __init__(self, proc: subprocess.Popen[bytes], cgroup: CgroupRef | None = None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.cgroup = cgroup

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return stop_process_group(self.proc, timeout_s)


class Environment(ABC):
    name: str

    @abstractmethod
    def check(self) -> None:
        """Raise PrivilegeError / EnvironmentUnavailable, naming what is missing."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Flags and facts recorded with every run in this environment."""

    @abstractmethod
    def launch(self, spec: LaunchSpec) -> contextlib.AbstractContextManager[RunningEngine]:
        """Start the engine; on exit of the context everything created is removed."""


# --- helpers shared by process-based environments -------------------------------------

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    # If memgap dies (even by SIGKILL) the engine gets SIGKILL: nothing outlives a run.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001, S110 - best effort; cleanup also kills by group
        pass


def spawn(
    argv: list[str],
    *,
    extra_env: dict[str, str],
    log: IO[bytes],
    before_exec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    for k, v in extra_env.items():
        if k == "LD_LIBRARY_PATH" and env.get(k):
            v = v + ":" + env[k]
        env[k] = v

    def preexec() -> None:
        _set_pdeathsig()
        if before_exec is not None:
            before_exec()

    return subprocess.Popen(  # noqa: S603 - argument list, never a shell string
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C reaches memgap only; memgap stops the engine itself
        preexec_fn=preexec,  # noqa: PLW1509 - only async-signal-safe work (prctl, write)
    )


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM the whole process group, SIGKILL what is left after timeout_s."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    # Kill stragglers in the group even when the leader already exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    return proc.returncode


def wait_until(pred: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval_s)
    return pred()


@contextlib.contextmanager
def open_log(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        yield f


@contextlib.contextmanager
def child_engine(
    spec: LaunchSpec,
    argv: list[str],
    *,
    engine: Callable[[subprocess.Popen[bytes]], ChildProcessEngine] = ChildProcessEngine,
    before_exec: Callable[[], None] | None = None,
) -> Iterator[ChildProcessEngine]:
    """Start ``argv`` as the run's engine, its output in the run's log; stopped when the
    context exits, whatever happened."""
    with open_log(spec.log_path) as log:
        running = engine(spawn(argv, extra_env=spec.command.env, log=log, before_exec=before_exec))
        try:
            yield running
        finally:
            running.stop()
