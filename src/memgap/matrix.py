"""The plan of a study: which runs, in which order, and what happens between them.

Cells are model x variant x environment (x host, for a study on a Ray cluster: see
``memgap.fleet``). Runs are laid out in **randomized blocks**:
each block holds one run of every cell, in an order shuffled by a ``random.Random``
seeded from the study's seed, so environments are interleaved in time and the order can
be reproduced (and resumed) from the seed alone. Never all-A-then-all-B: that confounds
the environment with time, and with whatever builds up over time (page cache, heat).
With a host axis each block holds every host's cells, so the runs of one host, taken in
plan order, are randomized blocks of that host's cells: each host is fair on its own.

Between runs: a cooldown (a fixed pause and/or until a temperature falls below a
threshold, NVML GPU temperature first, else the hottest hwmon sensor or thermal zone,
read over an injected ``sys_root``) and the page-cache policy (``keep``, or ``drop``: the
model file's pages via ``posix_fadvise(DONTNEED)`` and, where permitted, the host's clean
page cache via ``/proc/sys/vm/drop_caches``). Both record what actually happened."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memgap.experiment import CooldownSection, Experiment

EMBEDDED_MODEL = "embedded"
BASE_VARIANT = "base"


@dataclass(frozen=True)
class Cell:
    model: str  # the model path as written, or "embedded"
    variant: str  # a [[variants]] name, or "base" when there are none
    environment: str
    host: str | None = None  # a study on a Ray cluster: the host (memgap.fleet)

    @property
    def group(self) -> tuple[str, str]:
        """Runs of one group are compared across environments (on each host apart)."""
        return (self.model, self.variant)

    def to_dict(self) -> dict[str, str]:
        d = asdict(self)
        if self.host is None:  # a one-machine study's cells are stored as before
            del d["host"]
        return d


@dataclass(frozen=True)
class PlannedRun:
    index: int  # position in the plan, from 0
    block: int  # from 1
    iteration: int  # = block: the n-th run of its cell
    cell: Cell


def cells(exp: Experiment) -> list[Cell]:
    models = exp.models or [EMBEDDED_MODEL]
    variants = [v.name for v in exp.variants] or [BASE_VARIANT]
    hosts: list[str | None] = list(exp.cluster.hosts) or [None]
    return [Cell(m, v, e, h) for m in models for v in variants for e in exp.study.environments for h in hosts]


def block_count(exp: Experiment) -> int:
    it = exp.study.iterations
    return exp.study.max_iterations if it == "auto" else int(it)


def plan_runs(exp: Experiment) -> list[PlannedRun]:
    rng = random.Random(exp.study.seed)
    cs = cells(exp)
    out: list[PlannedRun] = []
    for block in range(1, block_count(exp) + 1):
        order = list(cs)
        rng.shuffle(order)
        for c in order:
            out.append(PlannedRun(len(out), block, block, c))
    return out


def pending(plan: Sequence[PlannedRun], finished: Iterable[int]) -> list[PlannedRun]:
    """Planned runs not yet finished, in plan order (resume)."""
    done = set(finished)
    return [p for p in plan if p.index not in done]


# -- temperature -----------------------------------------------------------------------


def nvml_temperature_c() -> float | None:
    """Hottest GPU by NVML, or None without NVML or a GPU."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver, no device: no reading
        return None
    try:
        temps = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            temps.append(float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)))
        return max(temps) if temps else None
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110
            pass


def _millideg(path: Path) -> float | None:
    try:
        v = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    # Some drivers report whole degrees; sysfs documents millidegrees Celsius.
    return v / 1000 if abs(v) >= 1000 else float(v)


def sysfs_temperature_c(sys_root: Path = Path("/sys")) -> tuple[float | None, str | None]:
    """Hottest hwmon sensor, else hottest thermal zone."""
    hw = [t for p in sorted((sys_root / "class/hwmon").glob("hwmon*/temp*_input"))
          if (t := _millideg(p)) is not None]
    if hw:
        return max(hw), "hwmon"
    tz = [t for p in sorted((sys_root / "class/thermal").glob("thermal_zone*/temp"))
          if (t := _millideg(p)) is not None]
    if tz:
        return max(tz), "thermal_zone"
    return None, None


def read_temperature_c(
    sys_root: Path = Path("/sys"), nvml: Callable[[], float | None] = nvml_temperature_c
) -> tuple[float | None, str | None]:
    t = nvml()
    if t is not None:
        return t, "nvml"
    return sysfs_temperature_c(sys_root)


@dataclass(frozen=True)
class CooldownRecord:
    waited_s: float
    pause_s: float
    temperature_start_c: float | None
    temperature_end_c: float | None
    temperature_source: str | None
    threshold_c: float | None
    reached: bool | None  # None: no threshold, or no sensor to read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cool_down(
    cfg: CooldownSection,
    *,
    read_temperature: Callable[[], tuple[float | None, str | None]] = read_temperature_c,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CooldownRecord:
    start = clock()
    if cfg.pause_s > 0:
        sleep(cfg.pause_s)
    t0, source = read_temperature() if cfg.max_temperature_c is not None else (None, None)
    t, reached = t0, None
    if cfg.max_temperature_c is not None and t0 is not None:
        reached = t0 <= cfg.max_temperature_c
        while not reached and clock() - start < cfg.pause_s + cfg.max_wait_s:
            sleep(cfg.poll_s)
            t, _ = read_temperature()
            reached = t is not None and t <= cfg.max_temperature_c
    return CooldownRecord(
        waited_s=clock() - start, pause_s=cfg.pause_s, temperature_start_c=t0, temperature_end_c=t,
        temperature_source=source, threshold_c=cfg.max_temperature_c, reached=reached,
    )


# -- page cache --------------------------------------------------------------------------


def drop_page_cache(
    files: Sequence[Path],
    *,
    proc_root: Path = Path("/proc"),
    fadvise: Callable[[int, int, int, int], None] = os.posix_fadvise,
) -> dict[str, Any]:
    """Evict the files' cached pages, then ask the kernel to drop the clean page cache.
    Returns what happened to each, so the run records it (a container without
    CAP_SYS_ADMIN or with a read-only /proc/sys cannot do the second)."""
    out: dict[str, Any] = {"policy": "drop", "fadvise": {}, "drop_caches": None}
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)
            try:
                fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            out["fadvise"][str(f)] = "done"
        except OSError as e:
            out["fadvise"][str(f)] = f"failed: {e.strerror or e}"
    try:
        (proc_root / "sys/vm/drop_caches").write_text("1\n")
        out["drop_caches"] = "done"
    except OSError as e:
        out["drop_caches"] = f"not permitted: {e.strerror or e}"
    return out


def page_cache_action(policy: str, files: Sequence[Path], **kw: Any) -> dict[str, Any]:
    if policy == "keep":
        return {"policy": "keep"}
    return drop_page_cache(files, **kw)


def finished_indices(rows: Iterable[Mapping[str, Any]]) -> set[int]:
    return {int(r["plan_index"]) for r in rows if r["status"] == "finished"}
