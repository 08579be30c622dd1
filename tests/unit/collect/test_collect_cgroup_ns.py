"""A process in another mount namespace (a container) is resolved through *our* mounts.

Its own mountinfo shows the memory hierarchy mounted at its own cgroup (root
``/docker/<id>``), so resolving its /proc/PID/cgroup path through that table would name
the host's root cgroup. Found on a real docker run (cgroup usage read as 7.5 GiB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memgap.collect.cgroup import CgroupRef, memory_cgroup_of

CONTAINER = "/docker/2bb2c94b0c39"


def test_container_process_resolved_through_our_mounts(host: Any) -> None:
    host.add_process("v1host", pid="self")
    d = host.add_process("v1host", pid=4242)
    # what the container's process shows: its cgroup path as seen from the host's
    # cgroup namespace, and a mount table whose memory mount is rooted at that cgroup
    (d / "cgroup").write_text((d / "cgroup").read_text().replace(
        [ln for ln in (d / "cgroup").read_text().splitlines() if ":memory:" in ln][0].split(":", 2)[2], CONTAINER
    ))
    mi = (d / "mountinfo").read_text()
    (d / "mountinfo").write_text(mi.replace(" / " + str(host.sys / "sys/fs/cgroup/memory"),
                                            f" {CONTAINER} " + str(host.sys / "sys/fs/cgroup/memory")))
    assert f" {CONTAINER} " in (d / "mountinfo").read_text()
    ref = memory_cgroup_of(4242, host.proc)
    assert ref == CgroupRef(version=1, path=host.sys / "sys/fs/cgroup/memory" / CONTAINER.lstrip("/"), relpath=CONTAINER)
    assert ref.path != host.sys / "sys/fs/cgroup/memory"  # not the host's root cgroup


def test_fake_tree_without_self_uses_the_process_mounts(host: Any, tmp_path: Path) -> None:
    host.add_process("v1host", pid=4242)
    ref = memory_cgroup_of(4242, host.proc)
    assert ref is not None and ref.version == 1
