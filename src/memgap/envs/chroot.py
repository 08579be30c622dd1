"""``chroot``: the seed study's "native" method -- the engine inside a root filesystem,
with /proc, /sys, /dev, the host's /usr (for memgap's own rootfs) and the engine's folders
bind-mounted, and no cgroup of its own (like native).

The engine is started through this module's ``__main__``: it enters a private mount
namespace, mounts, chroots and execs the engine, so the engine keeps its PID and every
mount lives only in its namespace and vanishes with it. Afterwards memgap checks that
nothing is mounted below the rootfs and removes what it created."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from memgap.envs.base import Environment, LaunchSpec, RunningEngine, child_engine
from memgap.envs.container import ContainerCli, Mount, engine_mounts
from memgap.envs.rootfs import exported_image, mounts_under, temp_skeleton
from memgap.errors import EnvironmentUnavailable, PrivilegeError, UsageError

SYSTEM_MOUNTS = ("/proc", "/sys", "/dev")


def helper_argv(rootfs: Path, mounts: Sequence[Mount], command: Sequence[str], python: str = sys.executable) -> list[str]:
    """The argument list that starts the engine in the chroot (pure; tested)."""
    argv = [python, "-m", "memgap.envs.chroot", "--rootfs", str(rootfs)]
    for m in mounts:
        argv += ["--bind", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"]
    return [*argv, "--", *command]


class ChrootEnvironment(Environment):
    name = "chroot"

    def __init__(self, rootfs: Path | None = None, image: str | None = None, image_tool: str = "docker") -> None:
        if rootfs is not None and image is not None:
            raise UsageError("chroot: give --rootfs or --image, not both")
        self.rootfs = rootfs
        self.image = image
        self.image_tool = image_tool
        self._mount_check: dict[str, Any] | None = None

    def check(self) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError("chroot: needs root (CAP_SYS_CHROOT and CAP_SYS_ADMIN for mounts); run as root")
        if self.rootfs is not None and not self.rootfs.is_dir():
            raise UsageError(f"--rootfs: no such folder: {self.rootfs}")
        if self.image is not None:
            cli = ContainerCli(self.image_tool)
            cli.call(["image", "inspect", self.image], action=f"image inspect {self.image}", timeout_s=30)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "isolation": "chroot+mount namespace",
            "own_cgroup": False,
            "rootfs": str(self.rootfs) if self.rootfs else ("exported from image" if self.image else "memgap skeleton"),
            "image": self.image,
            "system_mounts": list(SYSTEM_MOUNTS),
            # Filled in when the run's launch context closes: what was still mounted.
            "mount_check": self._mount_check,
        }

    @contextlib.contextmanager
    def _root(self) -> Iterator[tuple[Path, bool]]:
        if self.rootfs is not None:
            yield self.rootfs, False
        elif self.image is not None:
            with exported_image(ContainerCli(self.image_tool), self.image) as root:
                yield root, False
        else:
            with temp_skeleton() as root:
                yield root, True

    @contextlib.contextmanager
    def launch(self, spec: LaunchSpec) -> Iterator[RunningEngine]:
        with self._root() as (root, host_usr):
            mounts = engine_mounts(spec.command.read_paths, host_usr=host_usr, write_paths=spec.command.write_paths)
            created = _make_mount_points(root, [m.target for m in mounts] + [Path(p) for p in SYSTEM_MOUNTS])
            try:
                with child_engine(spec, helper_argv(root, mounts, spec.command.argv)) as engine:
                    yield engine
            finally:
                left = mounts_under(root)
                self._mount_check = {"rootfs": str(root), "mounts_left": [str(p) for p in left]}
                if left:
                    raise EnvironmentUnavailable(f"chroot: mounts left below {root}: {left[:5]}")
                for d in reversed(created):
                    with contextlib.suppress(OSError):
                        d.rmdir()

    def mount_check(self) -> dict[str, Any] | None:
        return self._mount_check


def _make_mount_points(root: Path, targets: Sequence[Path]) -> list[Path]:
    """mkdir -p each target below root; returns what was created (to rmdir afterwards)."""
    created: list[Path] = []
    for t in targets:
        d = root / str(t).lstrip("/")
        missing = []
        p = d
        while not p.exists() and not p.is_symlink() and p != root:
            missing.append(p)
            p = p.parent
        for m in reversed(missing):
            m.mkdir()
            created.append(m)
    return created


# ------------------------------------------------------------------- the helper process

_CLONE_NEWNS = 0x00020000
_MS_RDONLY = 1
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None, flags, None),
        f"mount {source} on {target}",
    )


def enter(rootfs: Path, binds: Sequence[tuple[str, str, bool]], argv: Sequence[str]) -> None:
    """In a private mount namespace: bind what the engine needs, chroot, exec it."""
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Nothing mounted here may propagate back to the host's namespace.
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    root = str(rootfs)
    _mount(libc, "proc", root + "/proc", "proc", 0)
    for sysdir in ("/sys", "/dev"):
        _mount(libc, sysdir, root + sysdir, None, _MS_BIND | _MS_REC)
    for source, target, read_only in binds:
        dest = root + target
        _mount(libc, source, dest, None, _MS_BIND | _MS_REC)
        if read_only:
            _mount(libc, None, dest, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
    os.chroot(root)
    os.chdir("/")
    os.execv(argv[0], list(argv))


def _main(args: list[str]) -> int:
    if "--" not in args:
        print("usage: python -m memgap.envs.chroot --rootfs DIR [--bind SRC:DST:ro|rw]... -- ARGV", file=sys.stderr)
        return 2
    sep = args.index("--")
    opts, argv = args[:sep], args[sep + 1 :]
    rootfs: Path | None = None
    binds: list[tuple[str, str, bool]] = []
    i = 0
    while i < len(opts):
        if opts[i] == "--rootfs":
            rootfs = Path(opts[i + 1])
        elif opts[i] == "--bind":
            src, dst, mode = opts[i + 1].rsplit(":", 2)
            binds.append((src, dst, mode == "ro"))
        i += 2
    if rootfs is None or not argv:
        print("memgap chroot: --rootfs and a command are required", file=sys.stderr)
        return 2
    try:
        enter(rootfs, binds, argv)
    except OSError as e:
        print(f"memgap chroot: {e}", file=sys.stderr)
        return 126
    return 127  # not reached: execv replaced this process


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

