"""``attached``: an engine someone else started (``memgap run --attach URL``).

Nothing is started and nothing is stopped: the run's "engine" is the process behind the
URL, found from ``--pid``, ``--container`` (docker or podman: its main process) or
``--cgroup`` (its first process), and measured from the host like any other -- its
process tree, its memory cgroup, the host. What cannot be seen is written down in the
record (``environment_info.not_measured``, with why), never left as a silent gap.

The engine's log (``--engine-log``, or a container's own log) is copied **whole** at the
end of the run, not only the part written during it: an engine prints its memory figures
(weights, KV cache, peak) when it starts, which is before memgap attached. The parsers
read the last start in a log that holds several (a restart appends to the same file); the
size of the file when memgap attached is kept, so the lines written during the run can be
told apart."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from memgap.collect.cgroup import (
    CgroupRef,
    cgroup_pids,
    existing_memory_cgroup_of,
    memory_cgroup_at,
    memory_cgroup_of,
)
from memgap.collect.process import ProcessKey, process_key, process_tree
from memgap.envs.base import Environment, LaunchSpec, RunningEngine
from memgap.envs.container import ContainerCli, ContainerState
from memgap.errors import EnvironmentUnavailable, MemgapError, UsageError
from memgap.spec import AttachSpec

# A log bigger than this is copied from its end (a server that has run for weeks).
LOG_COPY_MAX_BYTES = 64 << 20
CONTAINER_TOOLS = ("docker", "podman")
# URL-only: the engine counts as gone once its URL has refused connections this long
# after it had answered.
URL_GONE_AFTER_S = 3.0


def unseen(what: str, why: str) -> dict[str, str]:
    return {"what": what, "why": why}


@dataclass
class Target:
    """What the attach flags resolved to, and what they leave unseen."""

    kind: str  # pid | container | cgroup | url
    pid: int | None = None
    key: ProcessKey | None = None
    cgroup: CgroupRef | None = None
    container: ContainerState | None = None
    container_tool: str | None = None
    cgroup_pids: int | None = None  # processes charged to the cgroup (its own and below)
    not_measured: list[dict[str, str]] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def _subtree_pids(ref: CgroupRef) -> list[int]:
    """Processes in the cgroup and every cgroup below it."""
    pids = list(cgroup_pids(ref))
    with contextlib.suppress(OSError):
        for d in sorted(p for p in ref.path.rglob("*") if p.is_dir()):
            pids += cgroup_pids(CgroupRef(ref.version, d, ref.relpath.rstrip("/") + "/" + d.relative_to(ref.path).as_posix()))
    return pids


def _oldest(pids: list[int], proc_root: Path) -> ProcessKey | None:
    keys = [k for k in (process_key(p, proc_root) for p in pids) if k is not None]
    return min(keys, key=lambda k: (k.start_ticks, k.pid)) if keys else None


def _cgroup_facts(t: Target, proc_root: Path) -> None:
    """The cgroup of the target's process: None (and why) when it is the root cgroup or
    not reachable; caveats when memgap itself or other processes share it."""
    if t.cgroup is None and t.pid is not None:
        ref = existing_memory_cgroup_of(t.pid, proc_root)
        if ref is None:
            t.not_measured.append(unseen("cgroup layer", f"the memory cgroup of pid {t.pid} is not reachable from "
                                         "here (no memory controller mounted, or another cgroup namespace)"))
        elif ref.relpath in ("", "/"):
            t.not_measured.append(unseen("cgroup layer", f"pid {t.pid} is in the root memory cgroup: its charges "
                                         "are the whole host's (the host layer covers them)"))
        else:
            t.cgroup = ref
    if t.cgroup is None:
        return
    t.cgroup_pids = len(set(_subtree_pids(t.cgroup)))
    own = memory_cgroup_of("self", proc_root)
    if own is not None and own.path == t.cgroup.path:
        t.caveats.append(f"the engine's cgroup {t.cgroup.relpath} is memgap's own: its charges include memgap itself")
    if t.key is not None:
        tree = len(process_tree(t.key.pid, proc_root))
        if t.cgroup_pids > tree:
            t.caveats.append(f"cgroup {t.cgroup.relpath} holds {t.cgroup_pids} processes, the engine's tree {tree}: "
                             "its charges include the others")


def _find_container(name: str, clis: dict[str, ContainerCli]) -> tuple[str, ContainerState]:
    tried = []
    for tool, cli in clis.items():
        if cli.binary is None:
            tried.append(f"{tool}: not installed")
            continue
        try:
            state = cli.inspect(name)
        except MemgapError as e:
            tried.append(f"{tool}: {e}")
            continue
        if state is None:
            tried.append(f"{tool}: no such container (or its daemon does not answer)")
            continue
        return tool, state
    raise EnvironmentUnavailable(f"--container {name}: not found ({'; '.join(tried)})")


def resolve_target(attach: AttachSpec, *, clis: dict[str, ContainerCli] | None = None,
                   proc_root: Path = Path("/proc")) -> Target:
    """Find the process and cgroup the flags name; UsageError / EnvironmentUnavailable
    when they name nothing that runs here."""
    if attach.pid is not None:
        key = process_key(attach.pid, proc_root)
        if key is None:
            raise UsageError(f"--pid {attach.pid}: no such process")
        t = Target("pid", pid=attach.pid, key=key)
    elif attach.container is not None:
        tool, state = _find_container(attach.container, clis or {k: ContainerCli(k) for k in CONTAINER_TOOLS})
        if not state.running or state.pid is None:
            raise UsageError(f"--container {attach.container}: not running ({tool} status {state.status})")
        t = Target("container", pid=state.pid, key=process_key(state.pid, proc_root), container=state,
                   container_tool=tool)
    elif attach.cgroup is not None:
        ref = memory_cgroup_at(attach.cgroup, proc_root)
        if ref is None:
            raise UsageError(f"--cgroup {attach.cgroup}: not a memory cgroup here (give its folder, e.g. "
                             "/sys/fs/cgroup/memory/docker/ID, or its path as /proc/PID/cgroup shows it)")
        key = _oldest(_subtree_pids(ref), proc_root)
        t = Target("cgroup", pid=key.pid if key else None, key=key, cgroup=ref)
        if key is None:
            t.not_measured.append(unseen("process tree", f"cgroup {ref.relpath} holds no process"))
        else:
            t.caveats.append(f"process tree: from the cgroup's oldest process (pid {key.pid}); processes outside "
                             "its tree count in the cgroup's figures only")
    else:
        t = Target("url")
        t.not_measured.append(unseen("process tree", "no --pid, --container or --cgroup given: the engine's "
                                     "processes (RSS, PSS, GPU memory per process) were not measured"))
        t.not_measured.append(unseen("cgroup layer", "no --pid, --container or --cgroup given"))
    _cgroup_facts(t, proc_root)
    return t


def _alive(key: ProcessKey, proc_root: Path) -> bool:
    return process_key(key.pid, proc_root) == key


class _AttachedEngine(RunningEngine):
    """The engine behind the URL: measured, never stopped."""

    def __init__(self, target: Target, url: str, health_url: str, clis: dict[str, ContainerCli],
                 proc_root: Path) -> None:
        self.target = target
        self.url = url
        self.health_url = health_url
        self.clis = clis
        self.proc_root = proc_root
        self.pid = target.pid or 0  # 0: no process to walk (the sampler finds no tree)
        self.cgroup = target.cgroup
        self._exit: int | None = None
        self._answered = False
        self._refused_since: float | None = None
        self._url_checked = -1e9
        self.alive_at_end: bool | None = None
        self.finish: Callable[[], dict[str, Any]] = dict
        self._finished: dict[str, Any] | None = None

    def finished(self) -> dict[str, Any]:
        """What the end of the run found (the log copied, what was not seen); once."""
        if self._finished is None:
            self._finished = self.finish()
        return self._finished

    def _url_gone(self) -> bool:
        now = time.monotonic()
        if now - self._url_checked < 1.0:
            return self._refused_since is not None and now - self._refused_since > URL_GONE_AFTER_S
        self._url_checked = now
        try:
            httpx.get(self.health_url, timeout=1.0)
        except httpx.HTTPError:
            if self._answered and self._refused_since is None:
                self._refused_since = now
        else:
            self._answered, self._refused_since = True, None
        return self._refused_since is not None and now - self._refused_since > URL_GONE_AFTER_S

    def poll(self) -> int | None:
        """None while the engine runs. Gone: the container's exit code where docker or
        podman says it, else -1 (not memgap's child: its exit status is not visible)."""
        t = self.target
        if t.key is not None:
            if _alive(t.key, self.proc_root):
                return None
        elif t.kind == "cgroup" and t.cgroup is not None:
            if _subtree_pids(t.cgroup):
                return None
        elif not self._url_gone():
            return None
        if t.container is not None and t.container_tool is not None:
            state = self.clis[t.container_tool].inspect(t.container.id)
            if state is not None and state.exit_code is not None:
                self._exit = state.exit_code
                return state.exit_code
        return -1

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Leaves the engine running (someone else owns it); its exit status if it is gone
        and that status is known."""
        self.alive_at_end = self.poll() is None
        self.finished()
        return None if self.alive_at_end else self._exit

    def extra_info(self) -> dict[str, Any]:
        t = self.target
        info: dict[str, Any] = {
            "target": t.kind,
            "pid": t.pid,
            "pid_start_ticks": t.key.start_ticks if t.key else None,
            "cmdline": _cmdline(t.pid, self.proc_root) if t.pid else None,
            "cgroup": t.cgroup.relpath if t.cgroup else None,
            "cgroup_processes": t.cgroup_pids,
            "alive_at_end": self.alive_at_end,
            "stopped_by_memgap": False,
        }
        if t.container is not None and t.container_tool is not None:
            final = self.clis[t.container_tool].inspect(t.container.id)
            info["container"] = {"tool": t.container_tool, "id": t.container.id, "name": t.container.name,
                                 "image_id": t.container.image_id,
                                 "state": (final or t.container).to_dict()}
        done = self.finished()
        info.update(served_models=done.get("served_models"), engine_log=done.get("engine_log"))
        return {"attached": info, "cgroup_version": t.cgroup.version if t.cgroup else None,
                "not_measured": done.get("not_measured", []), "caveats": done.get("caveats", [])}


def _cmdline(pid: int, proc_root: Path) -> list[str] | None:
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def served_models(url: str, timeout_s: float = 2.0) -> list[str] | None:
    """The model ids the server lists at /v1/models; None when it does not answer."""
    try:
        data = httpx.get(url + "/v1/models", timeout=timeout_s).json().get("data")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [str(m.get("id")) for m in data if isinstance(m, dict) and m.get("id") is not None]


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def copy_log(source: Path, dest: Path, max_bytes: int = LOG_COPY_MAX_BYTES) -> dict[str, Any]:
    """The whole file (its last ``max_bytes`` when larger) into ``dest``."""
    size = _file_size(source)
    if size is None:
        dest.write_bytes(b"")
        return {"copied_bytes": 0, "size_bytes_at_end": None, "error": "the log could not be read at the end"}
    start = max(size - max_bytes, 0)
    with source.open("rb") as f, dest.open("wb") as out:
        f.seek(start)
        out.write(f.read(max_bytes))
    return {"copied_bytes": size - start, "size_bytes_at_end": size, "copied_from_offset": start,
            "whole_file": start == 0}


class AttachedEnvironment(Environment):
    name = "attached"

    def __init__(self, attach: AttachSpec, *, health_path: str = "/health",
                 clis: dict[str, ContainerCli] | None = None, proc_root: Path = Path("/proc")) -> None:
        self.attach = attach
        self.url = attach.url.rstrip("/")
        self.health_path = health_path
        self.clis = clis or {k: ContainerCli(k) for k in CONTAINER_TOOLS}
        self.proc_root = proc_root

    def check(self) -> None:
        resolve_target(self.attach, clis=self.clis, proc_root=self.proc_root)
        log = self.attach.engine_log
        if log is not None and not (log.is_file() and os.access(log, os.R_OK)):
            raise UsageError(f"--engine-log {log}: not a readable file")

    def describe(self) -> dict[str, Any]:
        a = self.attach
        return {
            "name": self.name,
            "isolation": "unknown: the engine was started outside memgap",
            "own_cgroup": False,  # never one memgap made; the engine's own is measured when found
            "url": self.url,
            "given": {"pid": a.pid, "container": a.container, "cgroup": str(a.cgroup) if a.cgroup else None,
                      "engine_log": str(a.engine_log) if a.engine_log else None},
        }

    @contextlib.contextmanager
    def launch(self, spec: LaunchSpec) -> Iterator[RunningEngine]:
        target = resolve_target(self.attach, clis=self.clis, proc_root=self.proc_root)
        log = self.attach.engine_log
        size_at_attach = _file_size(log) if log is not None else None
        engine = _AttachedEngine(target, self.url, self.url + self.health_path, self.clis, self.proc_root)
        models = served_models(self.url)

        def finish() -> dict[str, Any]:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_info = self._save_log(target, spec.log_path, size_at_attach)
            not_measured = list(target.not_measured)
            if log_info.get("source") is None:
                not_measured.append(unseen("engine figures", "no --engine-log given: the engine's own KV cache, "
                                           "weights and peak figures (printed when it started) were not found"))
            not_measured.append(unseen("engine options", "memgap did not start the engine: engine_options holds "
                                       "only what was given"))
            return {
                "served_models": models,
                "engine_log": log_info,
                "not_measured": not_measured,
                "caveats": [*target.caveats,
                            "memgap attached to a running engine: the 'start' mark is the attach time; only the "
                            "kernel's watermarks (cgroup peak, VmHWM) reach back to the engine's own start"],
            }

        engine.finish = finish
        try:
            yield engine
        finally:
            engine.finished()  # the log is copied also when the run failed or was interrupted

    def _save_log(self, target: Target, dest: Path, size_at_attach: int | None) -> dict[str, Any]:
        log = self.attach.engine_log
        if log is not None:
            info = copy_log(log, dest)
            return {"source": str(log), "size_bytes_at_attach": size_at_attach, **info}
        if target.container is not None and target.container_tool is not None:
            cli = self.clis[target.container_tool]
            try:
                proc = cli.call(["logs", target.container.id], action="logs", check=False, merge_stderr=True)
            except MemgapError:
                proc = None
            if proc is not None and proc.returncode == 0:
                data = proc.stdout[-LOG_COPY_MAX_BYTES:]
                dest.write_bytes(data)
                return {"source": f"{target.container_tool} logs {target.container.name or target.container.id}",
                        "copied_bytes": len(data), "whole_file": len(data) == len(proc.stdout)}
        dest.write_bytes(b"")
        return {"source": None}
