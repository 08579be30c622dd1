"""``podman``: the engine in a Podman container (no daemon), measured from the host.

Without ``--image`` the container starts from ``--rootfs``: a folder the user gives, or a
fresh copy of memgap's own skeleton (host /usr and the engine's folders bind-mounted
read-only) removed after the run. On hybrid cgroup v1 machines podman needs runc and a
containers.conf without default ulimits (``scripts/services.sh`` writes one and
``CONTAINERS_CONF`` points at it)."""

from __future__ import annotations

import contextlib
import json

from memgap.envs.base import LaunchSpec
from memgap.envs.container_run import ContainerEnvironment, Rootfs
from memgap.envs.rootfs import temp_skeleton
from memgap.errors import UsageError


class PodmanEnvironment(ContainerEnvironment):
    tool = "podman"

    def check(self) -> None:
        if self.options.rootfs is not None and self.options.image is not None:
            raise UsageError("--image and --rootfs: give one of them")
        if self.options.rootfs is not None and not self.options.rootfs.is_dir():
            raise UsageError(f"--rootfs: no such folder: {self.options.rootfs}")
        super().check()

    def versions(self) -> dict[str, str | None]:
        out = self.cli.text(["version", "--format", "json"], action="version", timeout_s=20)
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            data = {}
        client = (data.get("Client") or {}).get("Version")
        info = self.cli.text(["info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}"],
                             action="info", timeout_s=30).split()
        return {
            "client": client,
            "server": None,  # podman has no daemon
            "runtime": info[0] if info else None,
            "cgroup_manager": info[1] if len(info) > 1 else None,
        }

    def prepare(self, spec: LaunchSpec, stack: contextlib.ExitStack) -> Rootfs:
        if self.options.image is not None:
            return Rootfs(image=self.options.image, rootfs=None, host_usr=False)
        if self.options.rootfs is not None:
            return Rootfs(image=None, rootfs=self.options.rootfs, host_usr=False)
        return Rootfs(image=None, rootfs=stack.enter_context(temp_skeleton()), host_usr=True)
