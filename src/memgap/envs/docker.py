"""``docker``: the engine in a Docker container, measured from the host.

Without ``--image`` the container starts from memgap's own rootfs image (empty folders;
the host's /usr and the engine's folders bind-mounted read-only), so it runs the same
engine build and model as the native run. The daemon is whatever ``DOCKER_HOST`` (or the
default socket) names; ``scripts/services.sh start`` runs one of memgap's own."""

from __future__ import annotations

import contextlib

from memgap.envs.base import LaunchSpec
from memgap.envs.container_run import ContainerEnvironment, Rootfs
from memgap.envs.rootfs import ensure_skeleton_image
from memgap.errors import UsageError


class DockerEnvironment(ContainerEnvironment):
    tool = "docker"

    def check(self) -> None:
        if self.options.rootfs is not None:
            raise UsageError("--rootfs: docker runs images only (use --image, or --env podman / chroot for a folder)")
        super().check()

    def versions(self) -> dict[str, str | None]:
        out = self.cli.text(["version", "--format", "{{.Client.Version}} {{.Server.Version}}"], action="version",
                            timeout_s=20)
        client, _, server = out.strip().partition(" ")
        return {"client": client or None, "server": server or None}

    def prepare(self, spec: LaunchSpec, stack: contextlib.ExitStack) -> Rootfs:
        if self.options.image is not None:
            return Rootfs(image=self.options.image, rootfs=None, host_usr=False)
        tag, image_id = ensure_skeleton_image(self.cli)
        return Rootfs(image=tag, rootfs=None, host_usr=True, image_id=image_id)
