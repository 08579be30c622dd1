"""chroot's helper command, mount points, and memgap's rootfs skeleton (pure parts)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from memgap.envs import make_environment
from memgap.envs.chroot import ChrootEnvironment, _make_mount_points, helper_argv
from memgap.envs.container import Mount
from memgap.envs.rootfs import (
    LINKS,
    make_skeleton,
    mount_points,
    mounts_under,
    remove_tree,
    skeleton_image_tag,
    skeleton_tar,
)
from memgap.errors import EnvironmentUnavailable, PrivilegeError, UsageError

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /tmp/memgap-rootfs-ab/rootfs/proc rw - proc proc rw
91 22 254:0 /usr /tmp/memgap-rootfs-ab/rootfs/usr ro - ext4 /dev/vda rw
92 22 254:0 /x /tmp/with\\040space rw - ext4 /dev/vda rw
93 22 254:0 /x /tmp/memgap-rootfs-abc rw - ext4 /dev/vda rw
"""


def test_helper_argv_passes_each_bind_and_the_command_verbatim() -> None:
    argv = helper_argv(Path("/r"), [Mount(Path("/usr"), Path("/usr")), Mount(Path("/a"), Path("/b"), read_only=False)],
                       ["/bin/srv", "--port", "1"], python="/py")
    assert argv == ["/py", "-m", "memgap.envs.chroot", "--rootfs", "/r", "--bind", "/usr:/usr:ro",
                    "--bind", "/a:/b:rw", "--", "/bin/srv", "--port", "1"]


def test_mount_points_are_created_and_listed_for_removal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    created = _make_mount_points(root, [Path("/usr"), Path("/work/venv/bin"), Path("/work/venv/models")])
    assert created == [root / "work", root / "work/venv", root / "work/venv/bin", root / "work/venv/models"]
    for d in reversed(created):
        d.rmdir()
    assert sorted(p.name for p in root.iterdir()) == ["usr"]


def test_mountinfo_mount_points_unescape_spaces() -> None:
    assert Path("/tmp/with space") in mount_points(MOUNTINFO)


def test_mounts_under_a_root_only_below_it() -> None:
    below = mounts_under(Path("/tmp/memgap-rootfs-ab"), MOUNTINFO)
    assert below == [Path("/tmp/memgap-rootfs-ab/rootfs/proc"), Path("/tmp/memgap-rootfs-ab/rootfs/usr")]
    assert mounts_under(Path("/tmp/elsewhere"), MOUNTINFO) == []


def test_remove_tree_refuses_while_something_is_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "rootfs"
    (d / "usr").mkdir(parents=True)
    import memgap.envs.rootfs as rootfs

    monkeypatch.setattr(rootfs, "mounts_under", lambda p: [d / "usr"])
    with pytest.raises(EnvironmentUnavailable, match="still mounted"):
        remove_tree(d)
    assert (d / "usr").is_dir()
    monkeypatch.setattr(rootfs, "mounts_under", lambda p: [])
    remove_tree(d)
    assert not d.exists()


def test_skeleton_folder_has_links_into_usr(tmp_path: Path) -> None:
    make_skeleton(tmp_path)
    for name, target in LINKS:
        assert (tmp_path / name).is_symlink() and str((tmp_path / name).readlink()) == target
    assert (tmp_path / "tmp").stat().st_mode & 0o1777 == 0o1777
    make_skeleton(tmp_path)  # idempotent


def test_skeleton_tar_is_the_same_bytes_every_time() -> None:
    a, b = skeleton_tar(), skeleton_tar()
    assert a == b
    names = tarfile.open(fileobj=io.BytesIO(a)).getnames()
    assert {"usr", "proc", "tmp", "lib64"} <= set(names)
    assert skeleton_image_tag().startswith("memgap-rootfs:") and len(skeleton_image_tag().split(":")[1]) == 12


def test_chroot_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError):
        ChrootEnvironment().check()


def test_chroot_rootfs_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    with pytest.raises(UsageError):
        ChrootEnvironment(rootfs=tmp_path / "nope").check()
    with pytest.raises(UsageError):
        ChrootEnvironment(rootfs=tmp_path, image="x")


def test_chroot_has_no_cgroup_of_its_own_and_says_so() -> None:
    d = ChrootEnvironment().describe()
    assert d["own_cgroup"] is False and d["rootfs"] == "memgap skeleton" and d["mount_check"] is None


def test_make_environment_knows_every_environment() -> None:
    assert make_environment("chroot").name == "chroot"
    assert make_environment("docker").name == "docker"
    assert make_environment("podman").name == "podman"
    with pytest.raises(UsageError):
        make_environment("docker", memory_limit_bytes=1 << 30)
    with pytest.raises(UsageError, match="unknown environment"):
        make_environment("lxc")


def test_stale_rootfs_folders_of_dead_owners_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from memgap.envs import rootfs

    monkeypatch.setattr(rootfs, "mounts_under", lambda p: [])
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"memgap-rootfs-{dead.pid}-abc"
    (stale / "rootfs" / "usr").mkdir(parents=True)
    mine = tmp_path / f"memgap-rootfs-{__import__('os').getpid()}-def"
    mine.mkdir()
    other = tmp_path / "memgap-rootfs-notapid"
    other.mkdir()
    assert rootfs.sweep_stale_dirs(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()
