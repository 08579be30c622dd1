"""``memgap watch``: sample any running process, cgroup or container the way a run is
sampled, show it live, and write the series to CSV or JSON Lines."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from memgap.collect.cgroup import CgroupRef, existing_memory_cgroup_of, memory_cgroup_at
from memgap.errors import EnvironmentUnavailable, UsageError
from memgap.sampler import Sampler, SamplerConfig
from memgap.series import COLUMNS, MemorySeries
from memgap.units import format_bytes

NO_PROCESS = 0  # /proc/0 does not exist: a cgroup-only watch samples no process tree
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SHOWN = (
    ("host_used_bytes", "host used (MemTotal - MemAvailable)"),
    ("host_free_bytes", "host MemFree"),
    ("host_cached_bytes", "host Cached"),
    ("host_shmem_bytes", "host Shmem"),
    ("cgroup_usage_bytes", "cgroup usage"),
    ("cgroup_anon_bytes", "cgroup anon"),
    ("cgroup_file_bytes", "cgroup file (page cache)"),
    ("cgroup_file_mapped_bytes", "cgroup file mapped"),
    ("cgroup_shmem_bytes", "cgroup shmem"),
    ("cgroup_kmem_bytes", "cgroup kernel"),
    ("process_rss_bytes", "processes RSS"),
    ("process_anon_bytes", "processes RssAnon"),
    ("process_file_bytes", "processes RssFile"),
    ("process_shmem_bytes", "processes RssShmem"),
    ("process_pss_bytes", "processes PSS (smaps_rollup)"),
    ("gpu_process_used_bytes", "processes' GPU memory (NVML)"),
)


@dataclass(frozen=True)
class Target:
    pid: int  # root of the process tree to sample; NO_PROCESS for a cgroup only
    cgroup: CgroupRef | None
    description: str


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--output: cannot tell the format from {path.name!r} (use .csv or .jsonl)")
    return fmt


def cgroup_from_path(text: str, proc_root: Path = Path("/proc")) -> CgroupRef:
    """A memory cgroup's folder (``/sys/fs/cgroup/...``) or its path as /proc/PID/cgroup
    shows it (``/system.slice/x``), resolved through this process's mounts."""
    ref = memory_cgroup_at(text, proc_root)
    if ref is not None:
        return ref
    if not text.startswith("/"):
        raise UsageError(f"--cgroup: {text} is not a cgroup directory")
    raise UsageError(f"--cgroup: {text} is not a memory cgroup here (give its folder, e.g. "
                     "/sys/fs/cgroup/memory/docker/ID, or its path as /proc/PID/cgroup shows it)")


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def container_pid(container: str, runtime: str | None = None, run: Runner = _run) -> tuple[int, str]:
    """The main pid of a running container through ``docker`` or ``podman inspect``."""
    runtimes = [runtime] if runtime else ["docker", "podman"]
    tried = []
    for rt in runtimes:
        exe = shutil.which(rt)
        if exe is None:
            tried.append(f"{rt}: not installed")
            continue
        proc = run([exe, "inspect", "-f", "{{.State.Pid}}", container])
        text = (proc.stdout or "").strip()
        if proc.returncode == 0 and text.isdigit() and int(text) > 0:
            return int(text), rt
        reason = (proc.stderr or "").strip().splitlines()[-1:] or [f"pid {text or '?'} (not running?)"]
        tried.append(f"{rt}: {reason[0]}")
    raise EnvironmentUnavailable(f"--container {container}: cannot find its main pid ({'; '.join(tried)})")


def resolve_target(pid: int | None, cgroup: str | None, container: str | None, runtime: str | None,
                   proc_root: Path = Path("/proc"), run: Runner = _run) -> Target:
    given = [x for x in (pid, cgroup, container) if x is not None]
    if len(given) != 1:
        raise UsageError("give exactly one of --pid, --cgroup, --container")
    if cgroup is not None:
        ref = cgroup_from_path(cgroup, proc_root)
        return Target(NO_PROCESS, ref, f"cgroup {ref.path} (v{ref.version})")
    desc = ""
    if container is not None:
        pid, rt = container_pid(container, runtime, run)
        desc = f"container {container} ({rt}), "
    assert pid is not None
    if not (proc_root / str(pid)).is_dir():
        raise UsageError(f"--pid: no process {pid}")
    own = existing_memory_cgroup_of(pid, proc_root)
    where = f", memory cgroup {own.path} (v{own.version})" if own else ", no memory cgroup visible"
    return Target(pid, own, f"{desc}process {pid} and its children{where}")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def series_rows(series: MemorySeries) -> list[dict[str, Any]]:
    return [series.row(i) for i in range(len(series))]


class SeriesWriter:
    """Appends samples to the output file as they come, so Ctrl-C, a crash or a kill
    loses at most the last second. Format from the suffix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fmt = output_format(path)
        self.written = 0
        try:
            self.file = path.open("w", newline="", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"--output: cannot write {path}: {e.strerror or e}") from e
        self.csv = csv.DictWriter(self.file, fieldnames=list(COLUMNS)) if self.fmt == "csv" else None
        if self.csv is not None:
            self.csv.writeheader()

    def flush_from(self, series: MemorySeries) -> None:
        # The sampler thread appends a row column by column: only rows every column has.
        complete = min(len(v) for v in series.columns.values())
        for i in range(self.written, complete):
            r = series.row(i)
            if self.csv is not None:
                self.csv.writerow({k: ("" if v is None else v) for k, v in r.items()})
            else:
                self.file.write(json.dumps(r) + "\n")
        self.written = max(self.written, complete)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_series(series: MemorySeries, path: Path) -> int:
    """Write every sample; returns the number of rows."""
    w = SeriesWriter(path)
    try:
        w.flush_from(series)
    finally:
        w.close()
    return w.written


def _table(series: MemorySeries, description: str) -> Table:
    n = len(series)
    t_s = series.columns["t_s"][-1] if n else 0.0
    table = Table(title=f"{description} - {n} samples, {t_s:.1f} s (Ctrl-C stops)", title_justify="left")
    table.add_column("reading")
    table.add_column("now", justify="right")
    table.add_column("peak", justify="right")
    for key, title in SHOWN:
        col = series.columns[key]
        last = next((v for v in reversed(col) if v is not None), None)
        if last is None:
            continue
        table.add_row(title, format_bytes(last), format_bytes(series.peak(key)))
    return table


def watch_command(
    pid: Annotated[int | None, typer.Option("--pid", help="A process (and its children) to watch.")] = None,
    cgroup: Annotated[str | None, typer.Option("--cgroup", help="A cgroup directory, or its path as /proc/PID/cgroup shows it.")] = None,
    container: Annotated[str | None, typer.Option("--container", help="A running Docker or Podman container (id or name).")] = None,
    runtime: Annotated[str | None, typer.Option(help="docker or podman (default: whichever knows the container).")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    rate: Annotated[float, typer.Option("--rate", help="Samples per second.")] = 10.0,
    full_rate: Annotated[float, typer.Option(
        "--full-rate", help="Breakdown reads per second (meminfo, memory.stat, status: anon/file/shmem); "
        "above it, the samples between carry the totals alone (cgroup usage, RSS).")] = 10.0,
    smaps_interval: Annotated[float, typer.Option(help="Seconds between smaps_rollup reads (PSS; costly for big processes).")] = 5.0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the series here: .csv or .jsonl.")] = None,
) -> None:
    """Sample a running process, cgroup or container like a run is sampled, live; write the series."""
    if output is not None:
        output_format(output)
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration must be positive, got {duration}")
    if not (0 < rate <= 1000):
        raise UsageError(f"--rate must be in (0, 1000] Hz, got {rate}")
    if not (0 < full_rate <= 1000):
        raise UsageError(f"--full-rate must be in (0, 1000] Hz, got {full_rate}")
    target = resolve_target(pid, cgroup, container, runtime)
    writer = SeriesWriter(output) if output is not None else None
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    sampler = Sampler(target.pid, target.cgroup, SamplerConfig(rate_hz=rate, smaps_interval_s=smaps_interval,
                                                                    full_rate_hz=full_rate))
    ended = "duration reached"
    sampler.start()
    sampler.mark("start")
    start = time.monotonic()
    live = Live(_table(sampler.series, target.description), console=err, refresh_per_second=4,
                transient=False) if err.is_terminal else None
    try:
        if live is not None:
            live.start()
        while duration is None or time.monotonic() - start < duration:
            time.sleep(max(0.0, min(0.25, duration - (time.monotonic() - start))) if duration else 0.25)
            if live is not None:
                live.update(_table(sampler.series, target.description))
            if writer is not None:
                writer.flush_from(sampler.series)
            if target.pid != NO_PROCESS and not _alive(target.pid):
                ended = f"process {target.pid} exited"
                break
    except KeyboardInterrupt:
        ended = "stopped (Ctrl-C)"
    finally:
        sampler.mark("end")
        sampler.read_kernel_peaks()
        series = sampler.stop()
        if live is not None:
            live.update(_table(series, target.description))
            live.stop()
    if writer is not None:
        writer.flush_from(series)
        writer.close()
        err.print(f"memgap watch: {ended}; wrote {writer.written} samples to {output}", markup=False)
    else:
        err.print(f"memgap watch: {ended}; {len(series)} samples", markup=False)
    if live is None:
        Console(highlight=False, soft_wrap=True).print(_table(series, target.description))


def register(app: typer.Typer) -> None:
    app.command("watch")(watch_command)
