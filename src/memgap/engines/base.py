"""The interface every engine adapter implements.

An adapter only builds argument lists and reads text: launching happens in an
environment (``memgap.envs``), so the same adapter runs natively, in the sandbox or in
a container."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport


@dataclass(frozen=True)
class ModelFile:
    path: Path
    size_bytes: int
    sha256: str
    name: str


@dataclass(frozen=True)
class EngineCommand:
    """What an environment needs to start the engine: an argument list (never a shell
    string), extra environment variables, and the paths the engine must be able to read
    (so a container or chroot can bind-mount them)."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    read_paths: tuple[Path, ...] = ()


class Engine(Protocol):
    name: str

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
        """``scratch``: a folder of the run's own (removed with it) for the engine's
        temporary files and caches."""
        ...

    def health_path(self) -> str: ...

    def metrics_path(self) -> str | None: ...

    def version(self) -> str | None: ...

    def model(self) -> ModelFile: ...

    def options(self) -> dict[str, Any]: ...

    def parse_log(self, text: str) -> EngineReport: ...
