"""Memory cgroups, v1, v2 and hybrid: which cgroup a process is in, and what is charged to it.

Layouts seen in the field:
- v2 only (Ubuntu 22.04+, Fedora 31+): one ``cgroup2`` mount, ``0::/path`` in /proc/PID/cgroup.
- v1 (older distributions, some CI machines): one mount per controller; memory has its own.
- hybrid (systemd's default on some distributions): v1 controllers plus a ``cgroup2``
  mount (often /sys/fs/cgroup/unified) that holds no memory controller. The memory
  controller is bound to one hierarchy only, so the v1 one wins when it is mounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from memgap.collect._text import parse_int, read_optional
from memgap.collect.errors import CollectorParseError

# v1 has no "unlimited" token: it prints LONG_MAX rounded down to a page
# (9223372036854771712 with 4 KiB pages, other values with 16/64 KiB pages). Anything
# at or above 2**62 bytes is no limit any real machine has.
V1_UNLIMITED_BYTES = 2**62


@dataclass(frozen=True)
class MemoryFiles:
    """One cgroup version's names for the memory controller: its files, and the keys of
    its memory.stat. Every module that reads or writes a memory cgroup takes the names
    from here (``CgroupRef.files``); None where the version has no such file or key."""

    usage: str
    peak: str  # v2 memory.peak exists from Linux 5.19 on
    limit: str
    oom: str  # v2 memory.events; v1 memory.oom_control (oom_kill since 4.13, under_oom)
    high: str | None
    swap_usage: str | None  # v1: the memory.stat key ``swap`` (with memsw accounting)
    swap_limit: str | None
    failcnt: str | None  # v2: memory.events "max" instead
    kmem: str | None  # v2: the memory.stat key ``kernel`` instead
    force_empty: str | None
    # memory.stat keys (both versions count tmpfs/shmem inside ``file``)
    anon: str
    file: str
    shmem: str
    file_mapped: str
    active_file: str
    inactive_file: str
    swap: str | None
    kernel: str | None  # Linux 5.18+
    kernel_parts: tuple[str, ...]  # what ``kernel`` sums, for older v2 kernels
    # v1's total_* keys count the whole subtree (use_hierarchy, always on since 5.x); the
    # plain keys only the cgroup's own pages, which misses children a runtime creates.
    subtree_prefix: str
    stat: str = "memory.stat"

    def stat_value(self, stat: Mapping[str, int], key: str) -> int | None:
        """A memory.stat value by its plain key, the subtree's where the version has one."""
        if self.subtree_prefix:
            return stat.get(self.subtree_prefix + key, stat.get(key))
        return stat.get(key)

    def stat_kernel(self, stat: Mapping[str, int]) -> int | None:
        """v2 ``kernel``, or the sum of its parts on kernels before 5.18; None for v1,
        whose kernel memory is a file of its own (``kmem``)."""
        if self.kernel is None:
            return None
        if self.kernel in stat:
            return stat[self.kernel]
        parts = [stat[k] for k in self.kernel_parts if k in stat]
        return sum(parts) if parts else None


MEMORY_FILES: dict[int, MemoryFiles] = {
    1: MemoryFiles(
        usage="memory.usage_in_bytes", peak="memory.max_usage_in_bytes", limit="memory.limit_in_bytes",
        oom="memory.oom_control", high=None, swap_usage=None, swap_limit=None, failcnt="memory.failcnt",
        kmem="memory.kmem.usage_in_bytes", force_empty="memory.force_empty",
        anon="rss", file="cache", shmem="shmem", file_mapped="mapped_file", active_file="active_file",
        inactive_file="inactive_file", swap="swap", kernel=None, kernel_parts=(), subtree_prefix="total_",
    ),
    2: MemoryFiles(
        usage="memory.current", peak="memory.peak", limit="memory.max", oom="memory.events",
        high="memory.high", swap_usage="memory.swap.current", swap_limit="memory.swap.max", failcnt=None,
        kmem=None, force_empty=None,
        anon="anon", file="file", shmem="shmem", file_mapped="file_mapped", active_file="active_file",
        inactive_file="inactive_file", swap=None, kernel="kernel",
        kernel_parts=("kernel_stack", "pagetables", "sec_pagetables", "percpu", "sock", "vmalloc", "slab"),
        subtree_prefix="",
    ),
}


@dataclass(frozen=True)
class CgroupRef:
    version: Literal[1, 2]
    path: Path  # the cgroup's directory, e.g. /sys/fs/cgroup/memory/process_api/abc
    relpath: str  # the path as /proc/PID/cgroup shows it, e.g. "/process_api/abc"

    @property
    def files(self) -> MemoryFiles:
        return MEMORY_FILES[self.version]


@dataclass(frozen=True)
class ProcCgroupLine:
    hierarchy_id: int
    controllers: tuple[str, ...]  # () for the v2 line "0::/path"
    path: str


@dataclass(frozen=True)
class CgroupMount:
    version: Literal[1, 2]
    mount_point: Path
    root: str  # the cgroup shown at mount_point: "/" on a host, deeper in a container
    controllers: tuple[str, ...]  # v1: from the super options; v2: () (see cgroup.controllers)


# ---------------------------------------------------------------- parsers


def parse_proc_cgroup(text: str, source: str = "/proc/self/cgroup") -> list[ProcCgroupLine]:
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        # The path is last and may itself contain ':', so split at most twice.
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise CollectorParseError(
                source, lineno, f"expected 'id:controllers:path', got {line[:60]!r}"
            )
        hid, controllers, path = parts
        out.append(
            ProcCgroupLine(
                hierarchy_id=parse_int(hid, source, lineno),
                controllers=tuple(c for c in controllers.split(",") if c),
                path=path,
            )
        )
    return out


# Super options of a v1 cgroup mount that are not controllers.
_V1_NON_CONTROLLER_OPTIONS = {
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "none",
}


def _unescape_mountinfo(field_text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field_text):
        ch = field_text[i]
        octal = field_text[i + 1 : i + 4]
        if ch == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_mountinfo_cgroups(text: str, source: str = "/proc/self/mountinfo") -> list[CgroupMount]:
    """Only the cgroup and cgroup2 mounts, in file order (proc(5) describes the format)."""
    out: list[CgroupMount] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        # A variable number of optional fields ends with a lone "-", then fstype, source, options.
        try:
            dash = fields.index("-", 6)
        except ValueError:
            raise CollectorParseError(
                source, lineno, f"no ' - ' separator in {line[:60]!r}"
            ) from None
        if len(fields) < dash + 3 or dash < 6:
            raise CollectorParseError(source, lineno, f"too few fields in {line[:60]!r}")
        fstype = fields[dash + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root = _unescape_mountinfo(fields[3])
        mount_point = Path(_unescape_mountinfo(fields[4]))
        if fstype == "cgroup2":
            out.append(CgroupMount(version=2, mount_point=mount_point, root=root, controllers=()))
            continue
        options = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
        controllers = tuple(
            o
            for o in options
            if o not in _V1_NON_CONTROLLER_OPTIONS and ("=" not in o or o.startswith("name="))
        )
        out.append(
            CgroupMount(version=1, mount_point=mount_point, root=root, controllers=controllers)
        )
    return out


def parse_memory_stat(text: str, source: str) -> dict[str, int]:
    """``key value`` lines by key. Unknown keys are kept: kernels add keys in the middle
    of the file (below's lesson), so nothing here may depend on position."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CollectorParseError(source, lineno, f"expected 'key value', got {line[:60]!r}")
        # Signed: v1 kernels before 4.x could print small negative per-cpu drift.
        out[parts[0]] = parse_int(parts[1], source, lineno, signed=True)
    return out


def parse_flat_keyed(text: str, source: str) -> dict[str, int]:
    """memory.events, v1 memory.oom_control: the same ``key value`` shape as memory.stat."""
    return parse_memory_stat(text, source)


def _parse_single(text: str | None, source: str) -> int | None:
    """One number, or None for absent files and for ``max`` (v2's "no limit")."""
    if text is None:
        return None
    token = text.strip()
    if token == "max":
        return None
    return parse_int(token, source, 1, signed=True)


def _parse_pids(text: str, source: str) -> list[int]:
    return [parse_int(t, source, n) for n, t in enumerate(text.splitlines(), start=1) if t.strip()]


# ---------------------------------------------------------------- readers


def _relative_to_root(relpath: str, root: str) -> str | None:
    """Part of ``relpath`` below the mount's ``root``, or None when the cgroup is not
    visible through that mount (e.g. a container's mount of its own subtree, or a
    ``/../x`` path printed across a cgroup namespace)."""
    if root in ("", "/"):
        return relpath.lstrip("/")
    root = root.rstrip("/")
    if relpath == root:
        return ""
    if relpath.startswith(root + "/"):
        return relpath[len(root) + 1 :]
    return None


def _best_mount(mounts: list[CgroupMount], relpath: str) -> tuple[CgroupMount, str] | None:
    # The same hierarchy can be mounted several times (bind mounts); the mount with the
    # deepest root that still contains the cgroup is the one a container sees.
    best: tuple[CgroupMount, str] | None = None
    for m in mounts:
        rel = _relative_to_root(relpath, m.root)
        if rel is not None and (best is None or len(m.root) > len(best[0].root)):
            best = (m, rel)
    return best


def memory_cgroup_of(pid: int | str = "self", proc_root: Path = Path("/proc")) -> CgroupRef | None:
    """The memory cgroup of a process, or None (process gone, no memory controller,
    or its cgroup not reachable through any mount in this mount namespace).

    The path in /proc/PID/cgroup is relative to *our* cgroup namespace, so it is resolved
    through *our* mounts (/proc/self/mountinfo), never the process's own: a container's
    mountinfo shows its cgroup mounted at its own root, which read from the host would
    name the host's root cgroup. (A fake tree without a ``self`` entry uses the
    process's mountinfo.)"""
    pid_dir = proc_root / str(pid)
    cgroup_text = read_optional(pid_dir / "cgroup")
    mounts_dir = proc_root / "self" if (proc_root / "self" / "mountinfo").exists() else pid_dir
    mountinfo_text = read_optional(mounts_dir / "mountinfo")
    if cgroup_text is None or mountinfo_text is None:
        return None
    lines = parse_proc_cgroup(cgroup_text, str(pid_dir / "cgroup"))
    mounts = parse_mountinfo_cgroups(mountinfo_text, str(mounts_dir / "mountinfo"))

    v1_line = next(
        (ln for ln in lines if ln.hierarchy_id != 0 and "memory" in ln.controllers), None
    )
    v1_mounts = [m for m in mounts if m.version == 1 and "memory" in m.controllers]
    if v1_line is not None and v1_mounts:
        found = _best_mount(v1_mounts, v1_line.path)
        if found is None:
            return None
        mount, rel = found
        return CgroupRef(version=1, path=mount.mount_point / rel, relpath=v1_line.path)

    v2_line = next((ln for ln in lines if ln.hierarchy_id == 0 and not ln.controllers), None)
    v2_mounts = [m for m in mounts if m.version == 2]
    if v2_line is None or not v2_mounts:
        return None
    found = _best_mount(v2_mounts, v2_line.path)
    if found is None:
        return None
    mount, rel = found
    # In hybrid mode the cgroup2 mount exists but memory is bound to v1 (or not mounted);
    # then no file of ours would exist there.
    controllers = read_optional(mount.mount_point / "cgroup.controllers")
    if controllers is None or "memory" not in controllers.split():
        return None
    return CgroupRef(version=2, path=mount.mount_point / rel, relpath=v2_line.path)


def existing_memory_cgroup_of(pid: int | str, proc_root: Path = Path("/proc")) -> CgroupRef | None:
    """``memory_cgroup_of``, or None when the cgroup's folder does not exist here (the
    process exited and its container's cgroup went with it, or it was removed)."""
    ref = memory_cgroup_of(pid, proc_root)
    return ref if ref is not None and ref.path.is_dir() else None


def memory_cgroup_at(path: str | Path, proc_root: Path = Path("/proc")) -> CgroupRef | None:
    """A memory cgroup a user named: its folder (``/sys/fs/cgroup/memory/docker/ID``,
    ``/sys/fs/cgroup/system.slice/x.scope``) or its path as /proc/PID/cgroup prints it
    (``/docker/ID``), resolved through *our* mounts. None when no memory hierarchy
    here holds it, or its folder does not exist."""
    text = read_optional(proc_root / "self" / "mountinfo")
    if text is None:
        return None
    mounts = [
        m for m in parse_mountinfo_cgroups(text, str(proc_root / "self" / "mountinfo"))
        if (m.version == 1 and "memory" in m.controllers) or m.version == 2
    ]
    # v1's memory mount first: in hybrid mode the cgroup2 mount holds no memory controller.
    mounts.sort(key=lambda m: m.version)
    given = Path(path)
    for m in mounts:
        if m.version == 2:
            controllers = read_optional(m.mount_point / "cgroup.controllers")
            if controllers is None or "memory" not in controllers.split():
                continue
        # A folder under the mount point...
        try:
            below = given.relative_to(m.mount_point)
        except ValueError:
            below = None
        if below is not None and given.is_dir():
            rel = "" if below == Path(".") else below.as_posix()
            relpath = "/" + "/".join(p for p in (m.root.strip("/"), rel) if p)
            return CgroupRef(version=m.version, path=given, relpath=relpath)
    for m in mounts:  # ...or a path as /proc/PID/cgroup shows it
        if m.version == 2 and "memory" not in (read_optional(m.mount_point / "cgroup.controllers") or "").split():
            continue
        relpath = "/" + given.as_posix().strip("/")
        found = _best_mount([m], relpath)
        if found is not None and (m.mount_point / found[1]).is_dir():
            return CgroupRef(version=m.version, path=m.mount_point / found[1], relpath=relpath)
    return None


@dataclass(frozen=True)
class CgroupMemory:
    version: Literal[1, 2]
    usage_bytes: int | None  # v2 memory.current; v1 memory.usage_in_bytes
    peak_bytes: int | None  # v2 memory.peak (kernel 5.19+); v1 memory.max_usage_in_bytes
    limit_bytes: int | None  # None when unlimited
    high_bytes: int | None  # v2 memory.high; v1 has no equivalent
    swap_bytes: int | None
    failcnt: int | None  # v1 memory.failcnt; v2 memory.events "max" (usage hit memory.max)
    oom_events: int | None  # v2 memory.events "oom"; v1 has no counter
    oom_kill_count: int | None  # v2 memory.events "oom_kill"; v1 oom_control "oom_kill" (4.13+)
    under_oom: bool | None  # v1 oom_control only
    anon_bytes: int | None
    file_bytes: int | None  # page cache, tmpfs/shmem included (both versions)
    shmem_bytes: int | None
    file_mapped_bytes: int | None
    kernel_bytes: int | None  # v2 stat "kernel" (5.18+); v1 memory.kmem.usage_in_bytes
    active_file_bytes: int | None
    inactive_file_bytes: int | None
    stat: Mapping[str, int] = field(default_factory=dict, repr=False)
    events: Mapping[str, int] = field(default_factory=dict, repr=False)

    @property
    def working_set_bytes(self) -> int | None:
        """usage - inactive_file, floored at 0: what ``docker stats`` shows as usage."""
        if self.usage_bytes is None or self.inactive_file_bytes is None:
            return None
        return max(self.usage_bytes - self.inactive_file_bytes, 0)


def _v1_limit(value: int | None) -> int | None:
    return None if value is None or value >= V1_UNLIMITED_BYTES else value


def _read_number(ref: CgroupRef, name: str) -> int | None:
    path = ref.path / name
    return _parse_single(read_optional(path), str(path))


def _read_keyed(ref: CgroupRef, name: str) -> dict[str, int] | None:
    path = ref.path / name
    text = read_optional(path)
    return None if text is None else parse_memory_stat(text, str(path))


def read_cgroup_memory(ref: CgroupRef) -> CgroupMemory:
    """Everything charged to the cgroup; files that are absent give None fields."""
    f = ref.files
    stat = _read_keyed(ref, f.stat) or {}
    oom = _read_keyed(ref, f.oom) or {}
    if ref.version == 2:
        assert f.high is not None and f.swap_usage is not None
        return CgroupMemory(
            version=2,
            usage_bytes=_read_number(ref, f.usage),
            peak_bytes=_read_number(ref, f.peak),
            limit_bytes=_read_number(ref, f.limit),
            high_bytes=_read_number(ref, f.high),
            swap_bytes=_read_number(ref, f.swap_usage),
            failcnt=oom.get("max"),
            oom_events=oom.get("oom"),
            oom_kill_count=oom.get("oom_kill"),
            under_oom=None,
            anon_bytes=stat.get(f.anon),
            file_bytes=stat.get(f.file),
            shmem_bytes=stat.get(f.shmem),
            file_mapped_bytes=stat.get(f.file_mapped),
            kernel_bytes=stat.get(f.kernel) if f.kernel else None,
            active_file_bytes=stat.get(f.active_file),
            inactive_file_bytes=stat.get(f.inactive_file),
            stat=stat,
            events=oom,
        )

    assert f.failcnt is not None and f.kmem is not None and f.swap is not None
    under_oom = oom.get("under_oom")
    return CgroupMemory(
        version=1,
        usage_bytes=_read_number(ref, f.usage),
        peak_bytes=_read_number(ref, f.peak),
        limit_bytes=_v1_limit(_read_number(ref, f.limit)),
        high_bytes=None,
        swap_bytes=f.stat_value(stat, f.swap),  # present only with swap accounting (memsw) enabled
        failcnt=_read_number(ref, f.failcnt),
        oom_events=None,
        oom_kill_count=oom.get("oom_kill"),
        under_oom=None if under_oom is None else under_oom != 0,
        anon_bytes=f.stat_value(stat, f.anon),
        file_bytes=f.stat_value(stat, f.file),
        shmem_bytes=f.stat_value(stat, f.shmem),
        file_mapped_bytes=f.stat_value(stat, f.file_mapped),
        kernel_bytes=_read_number(ref, f.kmem),
        active_file_bytes=f.stat_value(stat, f.active_file),
        inactive_file_bytes=f.stat_value(stat, f.inactive_file),
        stat=stat,
        events={},
    )


def read_cgroup_usage_bytes(ref: CgroupRef) -> int | None:
    """One small read, for high-rate sampling."""
    return _read_number(ref, ref.files.usage)


def read_cgroup_peak_bytes(ref: CgroupRef) -> int | None:
    return _read_number(ref, ref.files.peak)


def cgroup_counters(ref: CgroupRef | None) -> dict[str, Any] | None:
    """The counters a run's end and a failed run's evidence need (usage, watermark, limit,
    OOM counters); None when there is no cgroup, or it is gone or half removed (a
    container's goes with it, so callers keep an earlier reading)."""
    if ref is None or not ref.path.is_dir():
        return None
    try:
        cg = read_cgroup_memory(ref)
    except Exception:  # noqa: BLE001 - a half-removed cgroup reads as garbage
        return None
    if cg.usage_bytes is None:
        return None
    return {
        "usage_bytes": cg.usage_bytes,
        "peak_bytes": cg.peak_bytes,
        "limit_bytes": cg.limit_bytes,
        "failcnt": cg.failcnt,
        "oom_events": cg.oom_events,
        "oom_kill_count": cg.oom_kill_count,
        "under_oom": cg.under_oom,
        "events": dict(cg.events),
    }


def cgroup_pids(ref: CgroupRef) -> list[int]:
    """Processes in the cgroup itself (not its children); [] when the cgroup is gone."""
    path = ref.path / "cgroup.procs"
    text = read_optional(path)
    return [] if text is None else _parse_pids(text, str(path))
