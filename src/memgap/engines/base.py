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


# Between an engine's log and its own report (a self-driven engine's report JSON) in the
# stored engine log: the report is kept verbatim beside the lines it accompanies.
REPORT_MARKER = "\n==> memgap: the engine's own report <==\n"


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
    # Folders the command writes to (a self-driven engine's dataset, engine and report):
    # bind-mounted read-write where read_paths are read-only.
    write_paths: tuple[Path, ...] = ()
    # What the engine needs in /dev/shm inside a container (docker and podman mount 64m),
    # in docker's size syntax; applied where the run sets neither --shm-size nor --ipc.
    shm_size: str | None = None


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


@dataclass(frozen=True)
class EngineStep:
    """One step of an engine that drives its own workload (trtllm-bench: prepare-dataset,
    build, throughput), launched like an engine command. ``measured``: the step the
    sampler runs during (its exit status is the run's)."""

    name: str
    command: EngineCommand
    measured: bool = False


class SelfDrivenEngine(Protocol):
    """An engine that runs its own load: memgap runs its steps in order in the run's
    scratch folder, samples memory during the measured one, and reads the engine's own
    report for the workload's figures."""

    name: str
    self_driven: bool  # True

    def steps(self, workdir: Path) -> list[EngineStep]: ...

    def version(self) -> str | None: ...

    def model(self) -> ModelFile: ...

    def options(self) -> dict[str, Any]: ...

    def parse_log(self, text: str) -> EngineReport: ...

    def workload_summary(self, workdir: Path) -> tuple[dict[str, Any] | None, str | None]:
        """The workload's figures from the engine's own report, in the shape of
        ``WorkloadSummary.to_dict()`` (None where the report does not say), and the raw
        report text to keep with the log; (None, None) when there is no report."""
        ...
