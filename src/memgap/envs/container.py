"""What Docker and Podman have in common: the options a user sets, the ``run`` argument
list, the container engine's command line (with its errors translated), and parsers
for ``inspect`` and ``stats`` output.

Pure functions first (tests feed them output recorded on a real machine), then the thin
wrapper that runs the CLI. The running container itself is in ``container_run``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memgap.errors import EnvironmentUnavailable, MemgapError, PrivilegeError, UsageError
from memgap.spec import ContainerSpec
from memgap.units import parse_reported_size, parse_size

LABEL_RUN = "memgap.run"
LABEL_OWNER = "memgap.owner"  # "<pid>:<process start time in clock ticks>" of the memgap that ran it
NAME_PREFIX = "memgap-"
NETWORKS_WITHOUT_PORTS = ("host",)

# The flags the seed study ran TensorRT-LLM's container with (seed/…revelation.txt);
# --gpus all is added only where an NVIDIA GPU is present.
SEED_FLAGS = ("--ipc=host", "--ulimit", "memlock=-1", "--ulimit", "stack=67108864")
SEED_SHM_SIZE = "1g"


ContainerOptions = ContainerSpec  # the flags live in the run spec


def docker_size_bytes(text: str, *, what: str = "size") -> int:
    """Docker/Podman size syntax (``512m``, ``1.5G``, ``512MiB``, ``536870912``) -> bytes.
    That syntax is the one every typed size in memgap uses, so this is parse_size; the
    name stays for the call sites that check a flag the container engine will read."""
    return parse_size(text, what=what)


@dataclass(frozen=True)
class Mount:
    source: Path
    target: Path
    read_only: bool = True

    def flag(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


def engine_mounts(read_paths: Sequence[Path], *, host_usr: bool, write_paths: Sequence[Path] = ()) -> list[Mount]:
    """Bind mounts that make the engine command's absolute paths valid inside the
    container: each read path's folder (a file's parent) at the same place, read-only,
    plus the host's /usr for memgap's own rootfs; each write path's folder read-write.
    Paths inside another one are dropped (a read path inside a written folder too)."""
    def folder(p: Path) -> Path:
        p = Path(os.path.abspath(p))
        return p if not p.exists() or p.is_dir() else p.parent

    writable = {folder(p) for p in write_paths}
    dirs: list[Path] = ([Path("/usr")] if host_usr else []) + [folder(p) for p in read_paths] + sorted(writable)
    out: list[Path] = []
    for d in sorted(set(dirs), key=lambda x: (len(x.parts), str(x), x not in writable)):
        if not any(d == o or o in d.parents for o in out):
            out.append(d)
    return [Mount(d, d, read_only=d not in writable) for d in out]


def _argv_value(argv: Sequence[str], flag: str) -> tuple[int, str] | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if a.startswith(flag + "="):
            return i, a.split("=", 1)[1]
    return None


def adapt_for_network(argv: Sequence[str], network: str) -> tuple[list[str], list[str]]:
    """For a network other than the host's, the engine must listen on every address of
    the container and its port must be published on the host's loopback. Returns the
    engine argv and the ``-p`` flags."""
    out = list(argv)
    if network in NETWORKS_WITHOUT_PORTS:
        return out, []
    port = _argv_value(out, "--port")
    host = _argv_value(out, "--host")
    if port is None or host is None:
        raise UsageError(f"--network {network}: cannot find --host/--port in the engine command to publish the port")
    bind = host[1]
    i = host[0]
    out[i] = "0.0.0.0" if out[i] == bind else "--host=0.0.0.0"  # noqa: S104 - inside the container's own netns
    return out, ["-p", f"{bind}:{port[1]}:{port[1]}"]


def run_flags(opts: ContainerOptions, *, tool: str, gpu_present: bool) -> list[str]:
    """The user-visible flags of ``run`` (also what is recorded), in a fixed order."""
    f: list[str] = [f"--network={opts.network}"]
    if opts.seed_flags:
        f += list(SEED_FLAGS)
        # Podman refuses --shm-size with the host's IPC namespace (docker ignores it).
        if opts.shm_size is None and tool != "podman":
            f.append(f"--shm-size={SEED_SHM_SIZE}")
        if gpu_present and opts.gpus is None:
            f += _gpu_flags(tool, "all")
    if opts.memory is not None:
        f.append(f"--memory={opts.memory}")
    if opts.memory_swap is not None:
        f.append(f"--memory-swap={opts.memory_swap}")
    if opts.cgroup_parent is not None:
        f.append(f"--cgroup-parent={opts.cgroup_parent}")
    if opts.cpuset_cpus is not None:
        f.append(f"--cpuset-cpus={opts.cpuset_cpus}")
    if opts.privileged:
        f.append("--privileged")
    if opts.shm_size is not None:
        f.append(f"--shm-size={opts.shm_size}")
    if opts.ipc is not None:
        f.append(f"--ipc={opts.ipc}")
    for u in opts.ulimits:
        f += ["--ulimit", u]
    if opts.gpus is not None:
        f += _gpu_flags(tool, opts.gpus)
    f += list(opts.extra_flags)
    return f


def engine_shm_flags(opts: ContainerOptions, shm_size: str | None) -> list[str]:
    """``--shm-size`` for what the engine says it needs in /dev/shm (vLLM's worker queue
    alone takes 160 MiB there, where docker and podman give 64m), unless the run chose
    the IPC set-up itself (--shm-size, --ipc, the seed's flags)."""
    if shm_size is None or opts.shm_size is not None or opts.ipc is not None or opts.seed_flags:
        return []
    if any(f.startswith(("--shm-size", "--ipc")) for f in opts.extra_flags):
        return []
    return [f"--shm-size={shm_size}"]


def _gpu_flags(tool: str, gpus: str) -> list[str]:
    if tool == "podman":
        # Podman uses CDI device names (nvidia-container-toolkit's `nvidia-ctk cdi generate`).
        return ["--device", f"nvidia.com/gpu={gpus}"]
    return [f"--gpus={gpus}"]


def build_run_argv(
    tool: Path | str,
    *,
    name: str,
    labels: Mapping[str, str],
    flags: Sequence[str],
    publish: Sequence[str],
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    image: str | None,
    rootfs: Path | None,
    command: Sequence[str],
) -> list[str]:
    """``<tool> run -d ...``: every option before the image (or podman's ``--rootfs DIR``);
    what follows it is the engine command. No ``--rm``: the container must outlive the
    engine until its exit status and OOM flag are read."""
    if (image is None) == (rootfs is None):
        raise ValueError("exactly one of image and rootfs")
    argv = [str(tool), "run", "-d", "--name", name]
    for k, v in labels.items():
        argv += ["--label", f"{k}={v}"]
    argv += list(flags)
    argv += list(publish)
    for m in mounts:
        argv += ["-v", m.flag()]
    for k, v in env.items():
        argv += ["-e", f"{k}={v}"]
    argv += [image] if image is not None else ["--rootfs", str(rootfs)]
    argv += list(command)
    return argv


# ------------------------------------------------------------------- inspect / stats


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str | None
    image_id: str | None
    running: bool
    status: str | None
    pid: int | None  # host PID of the main process; None once it exited
    exit_code: int | None
    oom_killed: bool | None
    error: str | None
    started_at: str | None
    finished_at: str | None
    cgroup_path: str | None  # podman reports it; docker does not
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = dict(self.labels)
        return d


def parse_inspect(text: str) -> list[ContainerState]:
    """``docker inspect`` / ``podman inspect`` of containers (a JSON array)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"inspect output is not JSON: {e}") from e
    if not isinstance(data, list):
        raise ValueError("inspect output is not a JSON array")
    out = []
    for item in data:
        st = item.get("State") or {}
        running = bool(st.get("Running"))
        pid = st.get("Pid")
        finished = st.get("FinishedAt")
        exited = not running and str(st.get("Status", "")).lower() in ("exited", "stopped", "dead")
        cfg = item.get("Config") or {}
        name = item.get("Name")
        out.append(
            ContainerState(
                id=str(item.get("Id", "")),
                name=name.lstrip("/") if isinstance(name, str) else None,
                image_id=item.get("Image") or None,
                running=running,
                status=st.get("Status"),
                pid=int(pid) if isinstance(pid, int) and pid > 0 else None,
                exit_code=int(st["ExitCode"]) if exited and isinstance(st.get("ExitCode"), int) else None,
                oom_killed=st.get("OOMKilled") if isinstance(st.get("OOMKilled"), bool) else None,
                error=st.get("Error") or None,
                started_at=st.get("StartedAt"),
                finished_at=None if not finished or finished.startswith("0001-") else finished,
                cgroup_path=st.get("CgroupPath") or None,
                labels=dict(cfg.get("Labels") or {}),
            )
        )
    return out


@dataclass(frozen=True)
class StatsReading:
    """One line of ``stats --no-stream``, as the container engine computed it."""

    usage_bytes: int | None
    limit_bytes: int | None
    raw: str  # the mem usage field verbatim, e.g. "68.54MiB / 23.54GiB"


# What each engine's "usage" is (notes/containers.md): docker subtracts inactive file
# cache (cgroup v1: total_inactive_file; v2: inactive_file); podman reports usage.
STATS_MEANING = {
    "docker": "cgroup usage minus inactive_file (docker stats)",
    "podman": "cgroup usage including page cache (podman stats)",
}


def _usage_pair(raw: str) -> tuple[int | None, int | None]:
    parts = [p.strip() for p in raw.split("/")]
    vals: list[int | None] = []
    for p in parts[:2]:
        try:
            # docker prints MiB/GiB (go-units BytesSize), podman MB/GB meaning 10**6/10**9
            # (go-units HumanSize): the printer's meaning, not the one for typed sizes.
            vals.append(parse_reported_size(p, decimal_gb=True) if p and p != "--" else None)
        except UsageError:
            vals.append(None)
    while len(vals) < 2:
        vals.append(None)
    return vals[0], vals[1]


def parse_stats(tool: str, text: str) -> StatsReading | None:
    """docker: one ``{{json .}}`` object per line (``MemUsage``); podman ``--format
    json``: an array of objects (``mem_usage``). None when nothing usable is in it."""
    text = text.strip()
    if not text:
        return None
    items: list[Any] = []
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            return None
    else:
        for line in text.splitlines():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    for it in items:
        if not isinstance(it, dict):
            continue
        raw = it.get("MemUsage", it.get("mem_usage"))
        if isinstance(raw, str):
            usage, limit = _usage_pair(raw)
            return StatsReading(usage_bytes=usage, limit_bytes=limit, raw=raw)
    return None


# ------------------------------------------------------------------- the CLI


def classify_cli_error(tool: str, action: str, stderr: str) -> MemgapError:
    """Turn a failed container CLI call into one line that names what is missing."""
    s = stderr.strip()
    low = s.lower()
    last = s.splitlines()[-1] if s else "(no output)"
    if "permission denied" in low and ("socket" in low or "connect" in low):
        return PrivilegeError(f"{tool}: permission denied talking to the daemon ({last}); run as root or join the docker group")
    if "cannot connect to the docker daemon" in low or "is the docker daemon running" in low or "connection refused" in low:
        return EnvironmentUnavailable(
            f"{tool}: the daemon is not running ({last}); start it, e.g. `eval \"$(scripts/services.sh start)\"`, "
            "or set DOCKER_HOST"
        )
    if "no such image" in low or "unable to find image" in low or "image not known" in low or "pull access denied" in low:
        return EnvironmentUnavailable(f"{tool}: image missing ({last}); build or load it first (no registry is contacted)")
    return EnvironmentUnavailable(f"{tool} {action} failed: {last}")


def start_failure_hint(stderr: str) -> str:
    """What a failed ``run`` most likely needs, for the errors seen on real machines."""
    low = stderr.lower()
    if "setting rlimit" in low or ("ulimit" in low and "operation not permitted" in low):
        return (" -- a --ulimit above the host's hard limit needs CAP_SYS_RESOURCE, which this machine "
                "does not give (see `memgap doctor`); lower it or drop it")
    if "port is already allocated" in low or "address already in use" in low:
        return " -- the port was taken; run again (memgap picks a free port each run)"
    if "crun" in low and "cgroup" in low:
        return " -- podman's crun cannot use this cgroup layout; use runc (scripts/services.sh writes the config)"
    return ""


class ContainerStartFailed(subprocess.SubprocessError):
    """``run`` itself failed after the checks passed (port taken, runtime error...): the
    runner records a failed run with this message."""


class ContainerCli:
    def __init__(self, tool: str, binary: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.tool = tool
        found = binary or (Path(p) if (p := shutil.which(tool)) else None)
        self.binary = found
        self.env = dict(env or {})

    def require(self) -> Path:
        if self.binary is None:
            raise EnvironmentUnavailable(
                f"{self.tool}: not installed (Debian: apt-get install {'docker.io' if self.tool == 'docker' else 'podman runc'}; "
                "scripts/services.sh does it)"
            )
        return self.binary

    def call(
        self, args: Sequence[str], *, action: str, timeout_s: float = 60.0, stdin: bytes | None = None, check: bool = True,
        merge_stderr: bool = False, cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [str(self.require()), *args]
        try:
            proc = subprocess.run(  # noqa: S603 - argument list
                argv,
                input=stdin,
                stdout=subprocess.PIPE,
                # `logs`: the container's stdout and stderr in the order the CLI writes them.
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                timeout=timeout_s,
                env={**os.environ, **self.env},
                stdin=None if stdin is not None else subprocess.DEVNULL,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired as e:
            raise EnvironmentUnavailable(f"{self.tool} {action}: no answer within {timeout_s:.0f} s") from e
        if check and proc.returncode != 0:
            raise classify_cli_error(self.tool, action, proc.stderr.decode(errors="replace"))
        return proc

    def text(self, args: Sequence[str], *, action: str, timeout_s: float = 60.0) -> str:
        return self.call(args, action=action, timeout_s=timeout_s).stdout.decode(errors="replace")

    def inspect(self, ref: str) -> ContainerState | None:
        proc = self.call(["inspect", "--type", "container", ref], action="inspect", check=False, timeout_s=30)
        if proc.returncode != 0:
            return None
        states = parse_inspect(proc.stdout.decode(errors="replace"))
        return states[0] if states else None

    def remove(self, ref: str) -> None:
        """``rm -f``; a container that is already gone is fine."""
        proc = self.call(["rm", "-f", "-v", ref], action="rm", check=False, timeout_s=60)
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").lower()
            if "no such container" not in err and "no container with name or id" not in err:
                raise classify_cli_error(self.tool, f"rm {ref}", proc.stderr.decode(errors="replace"))

    def memgap_containers(self) -> list[ContainerState]:
        """Every container memgap labelled, running or not."""
        ids = self.text(["ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL_OWNER}"], action="ps").split()
        if not ids:
            return []
        proc = self.call(["inspect", "--type", "container", *ids], action="inspect", check=False)
        # A container removed between ps and inspect makes inspect fail for that one only.
        return parse_inspect(proc.stdout.decode(errors="replace") or "[]")
