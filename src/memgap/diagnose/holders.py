"""Who holds memory: every process's resident anon and shmem memory (what reclaim cannot
give back), with engines' process trees gathered into one holder each.

``group_holders`` is pure over :class:`Proc` readings; ``read_processes`` is the thin
reader over an injected ``proc_root`` (tests build fake trees from real kernel output).
An engine is recognised by its command line: vLLM's API server and the titles its
engine and worker processes set (``VLLM::EngineCore``, ``VLLM::Worker``; vllm
utils/system_utils.py ``set_process_title``), SGLang's launcher, TensorRT-LLM's servers
and llama.cpp's ``llama-server``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from memgap.collect.errors import CollectorParseError
from memgap.collect.process import parse_stat, parse_status
from memgap.diagnose.base import gib

ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM", "llamacpp": "llama.cpp"}
_ENGINE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("vllm", re.compile(r"\bvllm\.entrypoints|\bvllm serve\b|^VLLM::|/bin/vllm\b")),
    ("sglang", re.compile(r"\bsglang\.launch_server|\bsglang serve\b|^sglang::")),
    ("trtllm", re.compile(r"\btrtllm-(?:serve|bench)\b|\btensorrt_llm\.commands")),
    ("llamacpp", re.compile(r"(?:^|/)llama-server\b")),
)
_PORT_RE = re.compile(r"--port[= ](\d+)")


def engine_of(cmdline: str) -> str | None:
    for name, pattern in _ENGINE_PATTERNS:
        if pattern.search(cmdline):
            return name
    return None


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    name: str
    cmdline: str
    start_s: float | None  # Unix time it started; None when unknown
    anon_bytes: int | None  # RssAnon
    shmem_bytes: int | None  # RssShmem
    rss_bytes: int | None = None
    gpu_bytes: int | None = None  # NVML per-process used memory, where read

    @property
    def held_bytes(self) -> int | None:
        if self.anon_bytes is None and self.shmem_bytes is None:
            return None
        return (self.anon_bytes or 0) + (self.shmem_bytes or 0)


@dataclass(frozen=True)
class Holder:
    """One process, or an engine with every process under its root."""

    pid: int
    name: str
    engine: str | None
    held_bytes: int
    gpu_bytes: int | None = None
    pids: tuple[int, ...] = field(default_factory=tuple)
    port: int | None = None

    def label(self) -> str:
        if self.engine is None:
            return f"{self.name} (pid {self.pid})"
        extra = [f"pid {self.pid}"]
        if len(self.pids) > 1:
            extra.append(f"{len(self.pids)} processes")
        if self.port is not None:
            extra.append(f"port {self.port}")
        return f"a {ENGINE_NAMES.get(self.engine, self.engine)} engine ({', '.join(extra)})"

    def describe(self, *, gpu: bool = False) -> str:
        amount = self.gpu_bytes if gpu else self.held_bytes
        return f"{self.label()} {gib(amount)}"

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "name": self.name, "engine": self.engine, "held_bytes": self.held_bytes,
                "gpu_bytes": self.gpu_bytes, "pids": list(self.pids), "port": self.port}


def _descendants(roots: Iterable[int], children: dict[int, list[int]]) -> set[int]:
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def group_holders(procs: Sequence[Proc], *, exclude: Iterable[int] = (), started_before_s: float | None = None,
                  ) -> list[Holder]:
    """Holders, largest first. ``exclude``: PIDs whose whole subtree is left out (memgap
    and the run's own engine). ``started_before_s``: only processes that were already
    running then (an engine's start); a process of unknown start time is kept."""
    by_pid = {p.pid: p for p in procs}
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    skip = _descendants(exclude, children)
    kinds = {p.pid: engine_of(p.cmdline) for p in procs}
    taken: set[int] = set()
    out: list[Holder] = []
    # Engine roots: an engine's process whose parent is not one of the same engine.
    for p in procs:
        kind = kinds[p.pid]
        if kind is None or p.pid in skip or kinds.get(p.ppid) == kind:
            continue
        if started_before_s is not None and p.start_s is not None and p.start_s >= started_before_s:
            continue
        tree = [by_pid[q] for q in sorted(_descendants([p.pid], children) - skip - taken) if q in by_pid]
        taken.update(q.pid for q in tree)
        held = sum(q.held_bytes or 0 for q in tree)
        gpus = [q.gpu_bytes for q in tree if q.gpu_bytes is not None]
        port = next((int(m.group(1)) for q in tree if (m := _PORT_RE.search(q.cmdline))), None)
        out.append(Holder(p.pid, p.name, kind, held, sum(gpus) if gpus else None, tuple(q.pid for q in tree), port))
    for p in procs:
        if p.pid in skip or p.pid in taken or (p.held_bytes is None and p.gpu_bytes is None):
            continue
        if started_before_s is not None and p.start_s is not None and p.start_s >= started_before_s:
            continue
        out.append(Holder(p.pid, p.name, None, p.held_bytes or 0, p.gpu_bytes, (p.pid,)))
    return sorted(out, key=lambda h: (-(h.gpu_bytes or 0), -h.held_bytes))


def running_engines(holders: Sequence[Holder]) -> list[Holder]:
    return [h for h in holders if h.engine is not None]


# ------------------------------------------------------------------ reader


def _boot_time(proc_root: Path) -> float | None:
    try:
        for line in (proc_root / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        return 100


def read_process(pid: int, proc_root: Path, *, boot_s: float | None, ticks: int) -> Proc | None:
    """One process's identity and memory, or None when it is gone or unreadable (a
    process exits between listing and reading; a kernel thread has no memory lines)."""
    base = proc_root / str(pid)
    try:
        st = parse_stat((base / "stat").read_text(errors="replace"), str(base / "stat"))
        status = parse_status((base / "status").read_text(errors="replace"), str(base / "status"))
        raw = (base / "cmdline").read_bytes()
    except (OSError, CollectorParseError):
        return None
    cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    start = None if boot_s is None else boot_s + st.start_ticks / ticks
    return Proc(pid=pid, ppid=st.ppid, name=status.name or st.comm, cmdline=cmdline or f"[{st.comm}]",
                start_s=start, anon_bytes=status.rss_anon_bytes, shmem_bytes=status.rss_shmem_bytes,
                rss_bytes=status.vm_rss_bytes)


def read_processes(proc_root: Path = Path("/proc")) -> list[Proc]:
    """Every process of ``proc_root`` that could be read (about 0.1 ms each)."""
    boot, ticks = _boot_time(proc_root), _clock_ticks()
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return []
    out = []
    for e in entries:
        if e.isascii() and e.isdigit():
            p = read_process(int(e), proc_root, boot_s=boot, ticks=ticks)
            if p is not None:
                out.append(p)
    return out


def with_gpu(procs: Sequence[Proc], gpu_by_pid: dict[int, int | None]) -> list[Proc]:
    """The processes with NVML's per-process figures; a PID NVML lists that /proc does
    not (another PID namespace) is kept as a process of unknown name."""
    seen = {p.pid for p in procs}
    out = [Proc(p.pid, p.ppid, p.name, p.cmdline, p.start_s, p.anon_bytes, p.shmem_bytes, p.rss_bytes,
                gpu_by_pid.get(p.pid)) for p in procs]
    out += [Proc(pid, 0, "?", f"[pid {pid}: not visible in this /proc]", None, None, None, None, used)
            for pid, used in gpu_by_pid.items() if pid not in seen]
    return out
