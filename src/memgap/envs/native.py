"""``native``: the engine as a plain child process, sharing memgap's own cgroup."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from memgap.envs.base import Environment, LaunchSpec, RunningEngine, child_engine


class NativeEnvironment(Environment):
    name = "native"

    def check(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "isolation": "none", "own_cgroup": False}

    @contextlib.contextmanager
    def launch(self, spec: LaunchSpec) -> Iterator[RunningEngine]:
        with child_engine(spec, list(spec.command.argv)) as engine:
            yield engine
