"""Where a run happens. Each environment launches an engine command and guarantees that
everything it created (processes, cgroups, mounts, temp files) is gone when the launch
context exits, on success, failure or Ctrl-C."""

from __future__ import annotations

from memgap.envs.base import Environment, LaunchSpec, RunningEngine
from memgap.envs.container import ContainerOptions
from memgap.errors import UsageError
from memgap.spec import EnvironmentSpec

ENVIRONMENTS = ("native", "sandbox", "docker", "podman", "chroot")  # what memgap starts an engine in


def make_environment(
    spec: EnvironmentSpec | str, *, memory_limit_bytes: int | None = None, container: ContainerOptions | None = None
) -> Environment:
    """The environment a spec names. (A bare name with keyword options is the older form.)
    ``container``: flags for docker/podman (image, --memory, ...) and chroot (image, rootfs)."""
    if isinstance(spec, EnvironmentSpec):
        if spec.name == "attached":
            from memgap.envs.attached import AttachedEnvironment

            assert spec.attach is not None
            return AttachedEnvironment(spec.attach)
        name, memory_limit_bytes, container = spec.name, spec.memory_limit_bytes, spec.container
    else:
        name = spec
    if name == "native":
        from memgap.envs.native import NativeEnvironment

        if memory_limit_bytes is not None:
            raise UsageError("--memory-limit applies to the sandbox environment only (native has no cgroup of its own)")
        return NativeEnvironment()
    if name == "sandbox":
        from memgap.envs.sandbox import SandboxEnvironment

        return SandboxEnvironment(memory_limit_bytes=memory_limit_bytes)
    if name in ("docker", "podman", "chroot") and memory_limit_bytes is not None:
        raise UsageError(f"--memory-limit applies to the sandbox only; use --memory for {name}")
    if name == "docker":
        from memgap.envs.docker import DockerEnvironment

        return DockerEnvironment(container)
    if name == "podman":
        from memgap.envs.podman import PodmanEnvironment

        return PodmanEnvironment(container)
    if name == "chroot":
        from memgap.envs.chroot import ChrootEnvironment

        opts = container or ContainerOptions()
        return ChrootEnvironment(rootfs=opts.rootfs, image=opts.image)
    raise UsageError(f"--env: unknown environment {name!r} (known: {', '.join(ENVIRONMENTS)})")


__all__ = ["ENVIRONMENTS", "ContainerOptions", "Environment", "LaunchSpec", "RunningEngine", "make_environment"]
