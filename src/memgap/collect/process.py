"""Per-process memory from /proc/PID: identity, tree, status and smaps_rollup.

A process is (pid, start time): PIDs are reused, and a sampler that polls a PID for
minutes would otherwise attribute a newcomer's memory to a dead engine."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from memgap.collect._text import kb_value, parse_int, parse_kb_fields, read_optional
from memgap.collect.errors import CollectorParseError


@dataclass(frozen=True, order=True)
class ProcessKey:
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat, clock ticks after boot


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    start_ticks: int


@dataclass(frozen=True)
class ProcStatus:
    name: str | None
    vm_rss_bytes: int | None
    rss_anon_bytes: int | None  # RssAnon/RssFile/RssShmem: kernel 4.5+
    rss_file_bytes: int | None
    rss_shmem_bytes: int | None
    vm_hwm_bytes: int | None
    vm_size_bytes: int | None
    vm_swap_bytes: int | None
    threads: int | None


@dataclass(frozen=True)
class SmapsRollup:
    rss_bytes: int | None
    pss_bytes: int | None
    pss_anon_bytes: int | None  # Pss_Anon/Pss_File/Pss_Shmem: kernel 5.7+
    pss_file_bytes: int | None
    pss_shmem_bytes: int | None
    shared_clean_bytes: int | None
    shared_dirty_bytes: int | None
    private_clean_bytes: int | None
    private_dirty_bytes: int | None
    anonymous_bytes: int | None
    swap_bytes: int | None


# ---------------------------------------------------------------- parsers


def parse_stat(text: str, source: str) -> ProcStat:
    # comm is free text (up to 15 bytes, may hold spaces and ')'), so it runs from the
    # first '(' to the LAST ')'; the numeric fields follow.
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise CollectorParseError(source, 1, "no '(comm)' field")
    pid = parse_int(text[:open_paren].strip(), source, 1)
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 1 :].split()
    # rest[0] is field 3 (state); starttime is field 22.
    if len(rest) < 20:
        raise CollectorParseError(source, 1, f"expected at least 22 fields, got {len(rest) + 2}")
    return ProcStat(
        pid=pid,
        comm=comm,
        state=rest[0],
        ppid=parse_int(rest[1], source, 1),
        start_ticks=parse_int(rest[19], source, 1),
    )


_STATUS_KB = {
    "VmRSS": "vm_rss_bytes",
    "RssAnon": "rss_anon_bytes",
    "RssFile": "rss_file_bytes",
    "RssShmem": "rss_shmem_bytes",
    "VmHWM": "vm_hwm_bytes",
    "VmSize": "vm_size_bytes",
    "VmSwap": "vm_swap_bytes",
}


def parse_status(text: str, source: str) -> ProcStatus:
    """Only the memory fields are parsed; the rest of the file (Uid, masks, ...) is
    free-form and ignored. Kernel threads have no Vm* lines: those stay None."""
    values: dict[str, int | None] = dict.fromkeys(_STATUS_KB.values())
    name: str | None = None
    threads: int | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise CollectorParseError(source, lineno, f"expected 'Key:\\tvalue', got {line[:60]!r}")
        if key == "Name":
            # The kernel escapes '\n' and '\\' in the name; a leading tab separates it.
            name = rest.removeprefix("\t")
        elif key == "Threads":
            threads = parse_int(rest.strip(), source, lineno)
        elif key in _STATUS_KB:
            values[_STATUS_KB[key]] = kb_value(rest, source, lineno)
    return ProcStatus(name=name, threads=threads, **values)


_SMAPS_FIELDS = {
    "Rss": "rss_bytes",
    "Pss": "pss_bytes",
    "Pss_Anon": "pss_anon_bytes",
    "Pss_File": "pss_file_bytes",
    "Pss_Shmem": "pss_shmem_bytes",
    "Shared_Clean": "shared_clean_bytes",
    "Shared_Dirty": "shared_dirty_bytes",
    "Private_Clean": "private_clean_bytes",
    "Private_Dirty": "private_dirty_bytes",
    "Anonymous": "anonymous_bytes",
    "Swap": "swap_bytes",
}

# "55a23437d000-7ffc74dc7000 ---p 00000000 00:00 0    [rollup]"
_ROLLUP_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def parse_smaps_rollup(text: str, source: str) -> SmapsRollup:
    lines = text.splitlines()
    if lines and _ROLLUP_HEADER.match(lines[0]):
        # Keep line numbers in errors true to the file.
        lines[0] = ""
    raw = parse_kb_fields("\n".join(lines), source)
    return SmapsRollup(**{attr: raw.get(key) for key, attr in _SMAPS_FIELDS.items()})


# ---------------------------------------------------------------- readers


def _read_stat(pid: int, proc_root: Path) -> ProcStat | None:
    path = proc_root / str(pid) / "stat"
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError:
        # ESRCH on a task that exited between open and read.
        return None
    return parse_stat(text, str(path))


def process_key(pid: int, proc_root: Path = Path("/proc")) -> ProcessKey | None:
    """Identity of a running process, or None when it is gone."""
    st = _read_stat(pid, proc_root)
    return None if st is None else ProcessKey(pid=st.pid, start_ticks=st.start_ticks)


def _children_files(pid: int, proc_root: Path) -> list[int] | None:
    """Children from /proc/PID/task/*/children (CONFIG_PROC_CHILDREN, kernel 3.5+),
    or None when that file does not exist on this kernel."""
    task_dir = proc_root / str(pid) / "task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        # Gone mid-walk, or a /proc without task dirs: the ppid scan answers both.
        return None
    found: list[int] = []
    any_file = False
    for tid in tids:
        path = task_dir / tid / "children"
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError:
            any_file = True  # thread exited between listdir and read
            continue
        any_file = True
        found.extend(parse_int(t, str(path), 1) for t in text.split())
    return found if any_file else None


def _ppid_map(proc_root: Path) -> dict[int, list[ProcessKey]]:
    children: dict[int, list[ProcessKey]] = {}
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return children
    for entry in entries:
        if not entry.isascii() or not entry.isdigit():
            continue
        st = _read_stat(int(entry), proc_root)
        if st is not None:
            children.setdefault(st.ppid, []).append(ProcessKey(st.pid, st.start_ticks))
    return children


def process_tree(root_pid: int, proc_root: Path = Path("/proc")) -> list[ProcessKey]:
    """The root and all its descendants, root first then breadth first. Processes
    that exit during the walk are left out; this never raises for a vanished process."""
    root = process_key(root_pid, proc_root)
    if root is None:
        return []
    out = [root]
    seen = {root.pid}
    queue = [root]
    ppid_map: dict[int, list[ProcessKey]] | None = None
    while queue:
        parent = queue.pop(0)
        listed = None if ppid_map is not None else _children_files(parent.pid, proc_root)
        if listed is None:
            if ppid_map is None:
                ppid_map = _ppid_map(proc_root)
            kids = ppid_map.get(parent.pid, [])
        else:
            kids = []
            for child_pid in listed:
                st = _read_stat(child_pid, proc_root)
                # The child may have exited and its PID been reused since the list was read.
                if st is not None and st.ppid == parent.pid:
                    kids.append(ProcessKey(st.pid, st.start_ticks))
        for kid in kids:
            if kid.pid not in seen:
                seen.add(kid.pid)
                out.append(kid)
                queue.append(kid)
    return out


def _read_verified(key: ProcessKey, proc_root: Path, name: str) -> tuple[str, str] | None:
    """Text of /proc/PID/<name> if it belongs to ``key``'s process.

    The /proc/PID directory is opened first and both files are read through that
    descriptor: once the process exits, reads through it fail with ESRCH even if the
    PID is reused, so a matching start time proves the text is the right process's."""
    pid_dir = proc_root / str(key.pid)
    try:
        dir_fd = os.open(pid_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        stat_text = read_optional("stat", dir_fd=dir_fd)
        if stat_text is None:
            return None
        st = parse_stat(stat_text, str(pid_dir / "stat"))
        if st.start_ticks != key.start_ticks:
            return None
        text = read_optional(name, dir_fd=dir_fd)
        return None if text is None else (text, str(pid_dir / name))
    finally:
        os.close(dir_fd)


def read_status(key: ProcessKey, proc_root: Path = Path("/proc")) -> ProcStatus | None:
    """None when the process is gone or its PID now names another process."""
    got = _read_verified(key, proc_root, "status")
    return None if got is None else parse_status(*got)


def read_smaps_rollup(key: ProcessKey, proc_root: Path = Path("/proc")) -> SmapsRollup | None:
    """Costly: the kernel walks the page tables (about 10 ms per 300 MB resident),
    so sample it rarely. None when gone, reused, or unreadable (kernel < 4.14)."""
    got = _read_verified(key, proc_root, "smaps_rollup")
    return None if got is None else parse_smaps_rollup(*got)
