"""The kernel's own account of an OOM kill, from its log (``/dev/kmsg``).

A container's cgroup goes with the container, so its ``oom_kill`` counter may be gone
before memgap can read it, and a container engine's ``State.OOMKilled`` flag is set by a
watcher that can miss the event (podman on cgroup v1 did). The kernel's log keeps it:
since Linux 4.19 every memory cgroup OOM kill writes one line naming the cgroup whose
limit was hit, the victim's cgroup, its command and its PID::

    oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=...,mems_allowed=0,
    oom_memcg=/docker/7e28...,task_memcg=/docker/7e28...,task=llama-server,pid=26204,uid=0

followed by ``Memory cgroup out of memory: Killed process 26204 (llama-server)
total-vm:738112kB, anon-rss:101268kB, ...``. Reading ``/dev/kmsg`` needs root (or
``kernel.dmesg_restrict=0``); where it cannot be read, the evidence is unknown (None).

The log is free text from every part of the kernel: lines this module does not know are
skipped, never an error."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

KMSG = Path("/dev/kmsg")
# One record of /dev/kmsg: "PRI,SEQ,TS_US,FLAGS[,...];MESSAGE" (continuation lines that
# carry the record's dictionary start with a space). Plain dmesg text has no prefix.
_RECORD = re.compile(r"^\d+,\d+,\d+,[^;]*;")
# mm/oom_kill.c dump_oom_summary() and mem_cgroup_print_oom_context(): the node lists may
# hold commas ("mems_allowed=0-1,3"), a system-wide OOM writes a bare ",global_oom" instead
# of ",oom_memcg=", and a kernel without memory cgroups writes neither memcg field. The
# task's name (comm) may hold anything, so the line is anchored on its last ",pid=".
_OOM_KILL = re.compile(
    r"oom-kill:(?P<head>.*?)(?:,task_memcg=(?P<task_memcg>[^,]*))?,task=(?P<task>.*),"
    r"pid=(?P<pid>\d{1,10}),uid=(?P<uid>\d{1,10})\s*$"
)
_CONSTRAINT = re.compile(r"^constraint=(?P<v>[A-Z_]+)")
_OOM_MEMCG = re.compile(r",oom_memcg=(?P<v>[^,]*)")
# mm/oom_kill.c __oom_kill_process(): "%s: Killed process %d (%s) total-vm:%lukB, anon-rss:%lukB, ..."
_KILLED = re.compile(
    r"(?P<why>Memory cgroup out of memory|Out of memory): Killed process (?P<pid>\d{1,10}) \((?P<task>.*)\) "
    r"total-vm:(?P<vm>\d{1,20})kB, anon-rss:(?P<anon>\d{1,20})kB, file-rss:(?P<file>\d{1,20})kB"
)
# The kernel caps these reads at one record each; a record is at most ~8 KiB.
_READ_SIZE = 16384
_MAX_READS = 200_000


@dataclass(frozen=True)
class OomKill:
    """One OOM kill, as the kernel logged it."""

    pid: int  # in the host's PID namespace
    task: str  # the victim's command name (comm)
    oom_memcg: str | None  # the cgroup whose limit was hit (None: a system-wide OOM)
    task_memcg: str | None  # the victim's own cgroup (None: a kernel without memory cgroups)
    constraint: str | None  # CONSTRAINT_MEMCG for a cgroup limit, CONSTRAINT_NONE system-wide
    anon_rss_bytes: int | None = None  # from the "Killed process" line that follows
    file_rss_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def in_cgroup(self, name: str) -> bool:
        """Whether the limit that was hit, or the victim, is in the cgroup called ``name``
        (its last path component: a container's ID or scope, memgap's own cgroup), or below it."""
        if not name or name == "/":
            return False
        paths = (self.task_memcg or "", self.oom_memcg or "")
        return any(name in p.split("/") for p in paths)


def message(line: str) -> str | None:
    """The message of one /dev/kmsg record (or a plain dmesg line); None for a
    continuation line (the record's dictionary)."""
    if line.startswith(" "):
        return None
    m = _RECORD.match(line)
    return line[m.end():] if m else line


def parse_oom_kills(lines: Iterable[str]) -> list[OomKill]:
    """Every OOM kill in these log lines, in order, each with the victim's RSS from the
    "Killed process" line that follows its summary where there is one."""
    kills: list[OomKill] = []
    for line in lines:
        msg = message(line.rstrip("\n"))
        if msg is None:
            continue
        if (m := _OOM_KILL.search(msg)) is not None:
            constraint, memcg = _CONSTRAINT.search(m["head"]), _OOM_MEMCG.search(m["head"])
            kills.append(OomKill(
                pid=int(m["pid"]), task=m["task"], oom_memcg=memcg["v"] or None if memcg else None,
                task_memcg=m["task_memcg"] or None, constraint=constraint["v"] if constraint else None,
            ))
        elif (k := _KILLED.search(msg)) is not None and kills and kills[-1].pid == int(k["pid"]):
            kills[-1] = replace(kills[-1], anon_rss_bytes=int(k["anon"]) * 1024, file_rss_bytes=int(k["file"]) * 1024)
    return kills


def read_kernel_log(path: Path = KMSG) -> list[str] | None:
    """Every line the kernel's log buffer still holds; None where it cannot be read
    (not root under ``dmesg_restrict``, no /dev/kmsg in a container). /dev/kmsg gives one
    record a read and EAGAIN at its end; a record overwritten while reading (EPIPE) is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    chunks: list[bytes] = []
    try:
        for _ in range(_MAX_READS):
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:
                    continue
                if e.errno == errno.EINVAL and not chunks:  # a kernel without record reads
                    return None
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace").splitlines()


def oom_kills_in(cgroup_name: str, path: Path = KMSG) -> list[OomKill] | None:
    """The OOM kills the kernel logged in the cgroup called ``cgroup_name`` (or below it);
    None where its log cannot be read."""
    lines = read_kernel_log(path)
    if lines is None:
        return None
    return [k for k in parse_oom_kills(lines) if k.in_cgroup(cgroup_name)]
