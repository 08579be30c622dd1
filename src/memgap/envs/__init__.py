"""Where a run happens. Each environment launches an engine command and guarantees that
everything it created (processes, cgroups, mounts, temp files) is gone when the launch
context exits, on success, failure or Ctrl-C."""

from __future__ import annotations

from memgap.envs.base import Environment, LaunchSpec, RunningEngine
from memgap.errors import UsageError

ENVIRONMENTS = ("native", "sandbox")


def make_environment(name: str, *, memory_limit_bytes: int | None = None) -> Environment:
    if name == "native":
        from memgap.envs.native import NativeEnvironment

        if memory_limit_bytes is not None:
            raise UsageError("--memory-limit applies to the sandbox environment only (native has no cgroup of its own)")
        return NativeEnvironment()
    if name == "sandbox":
        from memgap.envs.sandbox import SandboxEnvironment

        return SandboxEnvironment(memory_limit_bytes=memory_limit_bytes)
    raise UsageError(f"--env: unknown environment {name!r} (known: {', '.join(ENVIRONMENTS)})")


__all__ = ["ENVIRONMENTS", "Environment", "LaunchSpec", "RunningEngine", "make_environment"]
