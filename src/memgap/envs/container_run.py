"""A container environment's run: start the container, find its host PID and memory
cgroup, watch both from the host, stop it, read its exit status and OOM flag, and
remove it -- also when the run fails or is interrupted.

Docker and Podman subclass ``ContainerEnvironment`` and say only how they get an image
or root filesystem and what their CLI is called."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memgap.collect.cgroup import CgroupRef, cgroup_counters, existing_memory_cgroup_of
from memgap.collect.process import ProcessKey, parse_stat, process_key
from memgap.envs.base import Environment, LaunchSpec, RunningEngine, wait_until
from memgap.envs.container import (
    LABEL_OWNER,
    LABEL_RUN,
    NAME_PREFIX,
    STATS_MEANING,
    ContainerCli,
    ContainerOptions,
    ContainerStartFailed,
    ContainerState,
    Mount,
    adapt_for_network,
    build_run_argv,
    engine_mounts,
    engine_shm_flags,
    parse_stats,
    run_flags,
    start_failure_hint,
)
from memgap.errors import EnvironmentUnavailable, MemgapError

WATCH_INTERVAL_S = 0.05  # cgroup OOM counters: cheap reads, and the cgroup vanishes with the container
STATS_INTERVAL_S = 2.0  # `stats --no-stream` itself takes ~1.6 s (it waits for a second sample)


# ------------------------------------------------------------------- ownership labels


def owner_label(pid: int | None = None) -> str:
    key = process_key(pid or os.getpid())
    return f"{pid or os.getpid()}:{key.start_ticks if key else 0}"


def owner_alive(label: str, proc_root: Path = Path("/proc")) -> bool:
    """Whether the memgap process a label names still runs (PID reuse is noticed by the
    start time)."""
    pid_s, _, ticks_s = label.partition(":")
    if not pid_s.isdigit():
        return False
    key = process_key(int(pid_s), proc_root)
    return key is not None and (not ticks_s.isdigit() or key.start_ticks == int(ticks_s))


# ------------------------------------------------------------------- watching from the host


class _Watcher:
    """Two daemon threads: the cgroup's counters every 50 ms (the last reading before the
    container exits is the OOM evidence once its cgroup is gone) and the engine's own
    ``stats`` figure every 2 s, kept labelled as what that engine computes."""

    def __init__(self, cli: ContainerCli, name: str, cgroup: CgroupRef | None) -> None:
        self.cli = cli
        self.name = name
        self.cgroup = cgroup
        self.last_cgroup: dict[str, Any] | None = None
        self.last_cgroup_t: float | None = None
        self.stats: list[dict[str, Any]] = []
        self.stats_errors: list[str] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._threads = [
            threading.Thread(target=self._watch_cgroup, name="memgap-cgroup-watch", daemon=True),
            threading.Thread(target=self._watch_stats, name="memgap-stats", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def read_cgroup_now(self) -> None:
        if self.cgroup is None:
            return
        snap = cgroup_counters(self.cgroup)
        if snap is not None:
            self.last_cgroup, self.last_cgroup_t = snap, time.monotonic() - self._t0

    def _watch_cgroup(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            self.read_cgroup_now()

    def _watch_stats(self) -> None:
        args = ["stats", "--no-stream", "--format", "json" if self.cli.tool == "podman" else "{{json .}}", self.name]
        while not self._stop.is_set():
            t = time.monotonic() - self._t0
            try:
                proc = self.cli.call(args, action="stats", check=False, timeout_s=15)
            except MemgapError as e:
                self._error(str(e))
            else:
                reading = parse_stats(self.cli.tool, proc.stdout.decode(errors="replace"))
                if reading is not None and not self._stop.is_set():
                    self.stats.append({"t_s": round(t, 3), "usage_bytes": reading.usage_bytes,
                                       "limit_bytes": reading.limit_bytes, "raw": reading.raw})
                elif proc.returncode != 0:
                    self._error(proc.stderr.decode(errors="replace").strip()[-200:])
            self._stop.wait(STATS_INTERVAL_S)

    def _error(self, msg: str) -> None:
        if len(self.stats_errors) < 5 and msg not in self.stats_errors:
            self.stats_errors.append(msg)

    def summary(self) -> dict[str, Any]:
        usages = [s["usage_bytes"] for s in self.stats if s["usage_bytes"] is not None]
        return {
            "source": f"{self.cli.tool} stats --no-stream",
            "meaning": STATS_MEANING.get(self.cli.tool),
            "interval_s": STATS_INTERVAL_S,
            "usage_peak_bytes": max(usages) if usages else None,
            "readings": self.stats,
            "errors": self.stats_errors,
        }


# ------------------------------------------------------------------- the running container


def _alive(key: ProcessKey) -> bool:
    path = Path("/proc") / str(key.pid) / "stat"
    try:
        st = parse_stat(path.read_text(errors="replace"), str(path))
    except (OSError, ValueError, MemgapError):
        return False
    return st.start_ticks == key.start_ticks and st.state not in ("Z", "X")


class ContainerEngine(RunningEngine):
    def __init__(self, cli: ContainerCli, name: str, state: ContainerState, run_argv: list[str]) -> None:
        self.cli = cli
        self.name = name
        self.container_id = state.id
        self.image_id = state.image_id
        self.run_argv = run_argv
        self.pid = state.pid or 0
        self._key = process_key(self.pid) if self.pid else None
        # Resolved through our own mounts: the container's mountinfo shows its cgroup at its root.
        self.cgroup = existing_memory_cgroup_of(self.pid) if self._key else None
        self._final: ContainerState | None = None if self._key else state
        self.watcher = _Watcher(cli, name, self.cgroup)
        self.watcher.read_cgroup_now()
        self.watcher.start()
        self._stopped = False

    def _final_state(self, timeout_s: float = 10.0) -> ContainerState | None:
        """inspect until the container is no longer running (the daemon learns of the
        exit a moment after the process is gone)."""
        if self._final is not None and not self._final.running:
            return self._final
        state: ContainerState | None = None

        def done() -> bool:
            nonlocal state
            state = self.cli.inspect(self.name)
            return state is None or not state.running

        wait_until(done, timeout_s, interval_s=0.1)
        self._final = state
        return state

    def poll(self) -> int | None:
        if self._key is not None and _alive(self._key):
            return None
        st = self._final_state()
        if st is None:
            return -1  # removed behind our back
        if st.running:
            return None
        return st.exit_code if st.exit_code is not None else -1

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if not self._stopped:
            self._stopped = True
            self.watcher.read_cgroup_now()  # the last reading before the cgroup goes
            self.watcher.stop()
            if self._key is not None and _alive(self._key):
                # SIGTERM, SIGKILL after timeout_s; the container is kept for inspect.
                with contextlib.suppress(MemgapError):
                    self.cli.call(["stop", "-t", str(max(int(timeout_s), 1)), self.name], action="stop",
                                  timeout_s=timeout_s + 30, check=False)
        st = self._final_state()
        return st.exit_code if st is not None else None

    def extra_info(self) -> dict[str, Any]:
        st = self._final or self.cli.inspect(self.name)
        return {
            "container": {
                "tool": self.cli.tool,
                "id": self.container_id,
                "name": self.name,
                "image_id": self.image_id,
                "host_pid": self.pid or None,
                "cgroup": self.cgroup.relpath if self.cgroup else None,
                "cgroup_version": self.cgroup.version if self.cgroup else None,
                "run_command": self.run_argv,
                "state": st.to_dict() if st else None,
            },
            "oom_killed": st.oom_killed if st else None,
            "cgroup_last_reading": self.watcher.last_cgroup,
            "cgroup_last_reading_t_s": self.watcher.last_cgroup_t,
            "engine_stats": self.watcher.summary(),
        }


# ------------------------------------------------------------------- the environment


@dataclass(frozen=True)
class Rootfs:
    """What the container starts from: an image, or (podman) a root folder."""

    image: str | None
    rootfs: Path | None
    host_usr: bool  # the host's /usr is bind-mounted (memgap's own rootfs)
    image_id: str | None = None


class ContainerEnvironment(Environment):
    tool: str

    def __init__(self, options: ContainerOptions | None = None, cli: ContainerCli | None = None) -> None:
        self.options = options or ContainerOptions()
        self.cli = cli or ContainerCli(self.tool)
        self.name = self.tool
        self._versions: dict[str, str | None] = {}
        self._gpu = False

    # Subclasses -----------------------------------------------------------------------

    @abstractmethod
    def versions(self) -> dict[str, str | None]:
        """Client and server versions; raises when the daemon/service does not answer."""

    @abstractmethod
    def prepare(self, spec: LaunchSpec, stack: contextlib.ExitStack) -> Rootfs:
        """An image or root folder for this run; temp folders go on ``stack``."""

    # Environment ------------------------------------------------------------------------

    def check(self) -> None:
        self.cli.require()
        self._versions = self.versions()
        if self.options.image is not None:
            self.cli.call(["image", "inspect", self.options.image], action=f"image inspect {self.options.image}",
                          timeout_s=30)
        from memgap.collect.nvml import NvmlUnavailable, read_gpus

        try:
            self._gpu = not isinstance(read_gpus(), NvmlUnavailable)
        except Exception:  # noqa: BLE001 - no GPU is the common case
            self._gpu = False

    def flags(self) -> list[str]:
        return run_flags(self.options, tool=self.tool, gpu_present=self._gpu)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "isolation": "container",
            "own_cgroup": True,
            "tool": self.tool,
            "versions": self._versions,
            "options": self.options.to_dict(),
            "flags": self.flags(),
        }

    def sweep_stale(self) -> list[str]:
        """Remove containers whose memgap is gone (a crash, SIGKILL): found by label."""
        removed = []
        for st in self.cli.memgap_containers():
            owner = st.labels.get(LABEL_OWNER, "")
            if owner and not owner_alive(owner):
                with contextlib.suppress(MemgapError):
                    self.cli.remove(st.id)
                    removed.append(st.id)
        return removed

    @contextlib.contextmanager
    def launch(self, spec: LaunchSpec) -> Iterator[RunningEngine]:
        if not self._versions:
            self.check()
        self.sweep_stale()
        name = f"{NAME_PREFIX}{spec.run_id}"
        with contextlib.ExitStack() as stack:
            # podman's conmon inherits the CLI's working folder and writes an `oom` marker
            # file there when the kernel kills the container; give it a folder of the
            # run's own, removed last (after the container).
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memgap-run-cli-")))
            src = self.prepare(spec, stack)
            mounts: list[Mount] = engine_mounts(spec.command.read_paths, host_usr=src.host_usr,
                                                   write_paths=spec.command.write_paths)
            command, publish = adapt_for_network(spec.command.argv, self.options.network)
            argv = build_run_argv(
                self.cli.require(),
                name=name,
                labels={LABEL_RUN: spec.run_id, LABEL_OWNER: owner_label()},
                flags=self.flags() + engine_shm_flags(self.options, spec.command.shm_size),
                publish=publish,
                mounts=mounts,
                env=spec.command.env,
                image=src.image,
                rootfs=src.rootfs,
                command=command,
            )
            # Registered before `run`, so Ctrl-C during it still removes the container.
            stack.callback(self._remove, name)
            proc = self.cli.call(argv[1:], action="run", timeout_s=120, check=False, cwd=workdir)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip()
                spec.log_path.parent.mkdir(parents=True, exist_ok=True)
                spec.log_path.write_text(err + "\n")
                last = next((ln for ln in reversed(err.splitlines()) if ln.strip() and "--help" not in ln), err)
                raise ContainerStartFailed(f"{self.tool} run failed: {last or proc.returncode}{start_failure_hint(err)}")
            state = self.cli.inspect(name)
            if state is None:
                raise ContainerStartFailed(f"{self.tool} run: container {name} vanished right after it started")
            engine = ContainerEngine(self.cli, name, state, argv)
            try:
                yield engine
            finally:
                engine.stop()
                self._save_log(name, spec.log_path)

    def _save_log(self, name: str, path: Path) -> None:
        # The engine log is the container's stdout+stderr; read before the container goes.
        with contextlib.suppress(MemgapError):
            proc = self.cli.call(["logs", name], action="logs", check=False, timeout_s=60, merge_stderr=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(proc.stdout)

    def _remove(self, name: str) -> None:
        try:
            self.cli.remove(name)
        except MemgapError as e:
            raise EnvironmentUnavailable(f"{self.tool}: could not remove container {name}: {e}") from e
