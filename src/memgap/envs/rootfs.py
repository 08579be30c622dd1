"""memgap's own root filesystem: empty folders plus the ``bin``/``lib``/``lib64``/``sbin``
links into ``usr``. With the host's ``/usr`` and the engine's folders bind-mounted
read-only over it, a container or chroot runs the very same engine build and model as
the native run (the comparison the seed study meant to make).

As a folder (podman ``--rootfs``, chroot) it lives in a temp folder removed after the
run -- never while anything is mounted below it. As an image (docker) it is imported
from a tar built in memory; its tag is the tar's digest, so it is made once per machine."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

from memgap.envs.container import ContainerCli
from memgap.errors import EnvironmentUnavailable

TEMP_PREFIX = "memgap-rootfs-"
IMAGE_REPO = "memgap-rootfs"
DIRS = ("usr", "etc", "proc", "sys", "dev", "tmp", "run", "var", "var/tmp", "root", "home", "mnt", "opt")
LINKS = (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin"))


def make_skeleton(dest: Path) -> None:
    for d in DIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    (dest / "var/tmp").chmod(0o1777)
    for name, target in LINKS:
        link = dest / name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(target)


def skeleton_tar() -> bytes:
    """The skeleton as a tar, byte for byte the same on every machine (fixed owner and
    times), so its digest names it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in DIRS:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d in ("tmp", "var/tmp") else 0o755
            tar.addfile(info)
        for name, target in LINKS:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            info.mode = 0o777
            tar.addfile(info)
    return buf.getvalue()


def skeleton_image_tag() -> str:
    return f"{IMAGE_REPO}:{hashlib.sha256(skeleton_tar()).hexdigest()[:12]}"


def ensure_skeleton_image(cli: ContainerCli) -> tuple[str, str | None]:
    """Import the skeleton as an image unless it is there; returns (tag, image id)."""
    tag = skeleton_image_tag()
    proc = cli.call(["image", "inspect", "--format", "{{.Id}}", tag], action="image inspect", check=False, timeout_s=30)
    if proc.returncode != 0:
        proc = cli.call(["import", "-", tag], action="import", stdin=skeleton_tar(), timeout_s=120)
        proc = cli.call(["image", "inspect", "--format", "{{.Id}}", tag], action="image inspect", timeout_s=30)
    image_id = proc.stdout.decode().strip() or None
    return tag, image_id


# ------------------------------------------------------------------- mounts


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo_text: str) -> list[Path]:
    """Mount points listed in /proc/PID/mountinfo (field 5, octal escapes undone)."""
    out = []
    for line in mountinfo_text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            out.append(Path(_unescape(fields[4])))
    return out


def mounts_under(root: Path, mountinfo_text: str | None = None) -> list[Path]:
    """Mount points at or below ``root`` in this process's mount namespace."""
    if mountinfo_text is None:
        mountinfo_text = Path("/proc/self/mountinfo").read_text()
    root = Path(os.path.realpath(root))
    return [m for m in mount_points(mountinfo_text) if m == root or root in m.parents]


def remove_tree(path: Path) -> None:
    """rm -r that refuses while anything is mounted below ``path`` (deleting through a
    bind mount of /usr would delete the host's /usr)."""
    if not path.exists():
        return
    left = mounts_under(path)
    if left:
        raise EnvironmentUnavailable(
            f"refusing to remove {path}: still mounted below it: {', '.join(map(str, left[:5]))}"
        )
    shutil.rmtree(path)


@contextlib.contextmanager
def temp_dir(prefix: str = TEMP_PREFIX) -> Iterator[Path]:
    # The owner's PID is in the name, so a later run can remove what a killed one left.
    sweep_stale_dirs()
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    try:
        yield path
    finally:
        remove_tree(path)


def sweep_stale_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove rootfs folders whose memgap no longer runs (SIGKILL leaves them), unless
    something is still mounted below them or a container still uses them."""
    removed = []
    for d in (tmp or Path(tempfile.gettempdir())).glob(TEMP_PREFIX + "*"):
        owner = d.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or psutil.pid_exists(int(owner)):
            continue
        with contextlib.suppress(OSError, EnvironmentUnavailable):
            remove_tree(d)
            removed.append(d)
    return removed


@contextlib.contextmanager
def temp_skeleton() -> Iterator[Path]:
    """A fresh skeleton rootfs (container runtimes write /etc/hosts and such into it)."""
    with temp_dir() as d:
        root = d / "rootfs"
        root.mkdir()
        make_skeleton(root)
        yield root


@contextlib.contextmanager
def exported_image(cli: ContainerCli, image: str) -> Iterator[Path]:
    """An image's filesystem (``create`` + ``export``) in a temp folder, for chroot."""
    with temp_dir() as d:
        root = d / "rootfs"
        root.mkdir()
        created = cli.call(["create", "--label", "memgap.export=1", image, "/bin/true"], action=f"create {image}",
                           timeout_s=120)
        cid = created.stdout.decode().strip()
        try:
            export = subprocess.Popen(  # noqa: S603 - argument list
                [str(cli.require()), "export", cid], stdout=subprocess.PIPE, env={**os.environ, **cli.env}
            )
            assert export.stdout is not None
            untar = subprocess.run(  # noqa: S603
                ["tar", "-x", "-C", str(root), "--no-same-owner" if os.geteuid() != 0 else "--same-owner"],
                stdin=export.stdout, capture_output=True, check=False,
            )
            export.stdout.close()
            rc = export.wait(timeout=600)
            if rc != 0 or untar.returncode != 0:
                raise EnvironmentUnavailable(
                    f"{cli.tool} export {image} failed (export status {rc}, tar: {untar.stderr.decode()[-200:]})"
                )
        finally:
            cli.remove(cid)
        yield root
