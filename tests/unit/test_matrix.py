"""The plan: randomized blocks, reproducible from the seed; cooldown and page cache."""

from __future__ import annotations

import os
from pathlib import Path

from memgap.experiment import CooldownSection, parse_experiment
from memgap.matrix import (
    cells,
    cool_down,
    drop_page_cache,
    page_cache_action,
    pending,
    plan_runs,
    read_temperature_c,
    sysfs_temperature_c,
)


def _exp(extra: str = "") -> object:
    return parse_experiment('[study]\nname = "s"\nenvironments = ["native", "sandbox"]\niterations = 6\nseed = 3\n'
                            '[[variants]]\nname = "a"\n[[variants]]\nname = "b"\n' + extra)


def test_every_cell_once_per_block_and_order_shuffled() -> None:
    exp = _exp()
    plan = plan_runs(exp)  # type: ignore[arg-type]
    assert len(plan) == 6 * 4 and len(cells(exp)) == 4  # type: ignore[arg-type]
    for b in range(1, 7):
        blk = [p.cell for p in plan if p.block == b]
        assert sorted(map(str, blk)) == sorted(map(str, cells(exp)))  # type: ignore[arg-type]
        assert all(p.iteration == b for p in plan if p.block == b)
    orders = {tuple(str(p.cell) for p in plan if p.block == b) for b in range(1, 7)}
    assert len(orders) > 1  # shuffled, not the same order every block
    # environments interleave: never all native first
    envs = [p.cell.environment for p in plan]
    assert envs.index("sandbox") < len(envs) // 2 and envs.index("native") < len(envs) // 2


def test_plan_is_reproducible_from_the_seed() -> None:
    a, b = plan_runs(_exp()), plan_runs(_exp())  # type: ignore[arg-type]
    assert a == b
    other = plan_runs(parse_experiment('[study]\nname = "s"\niterations = 6\nseed = 4\n'
                                       '[[variants]]\nname = "a"\n[[variants]]\nname = "b"\n'))
    assert [p.cell for p in other] != [p.cell for p in a]


def test_pending_skips_finished() -> None:
    plan = plan_runs(_exp())  # type: ignore[arg-type]
    assert [p.index for p in pending(plan, {0, 1, 5})][:4] == [2, 3, 4, 6]


def _sensor(root: Path, rel: str, value: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(value)


def test_temperature_from_hwmon_then_thermal_zones(tmp_path: Path) -> None:
    assert sysfs_temperature_c(tmp_path) == (None, None)
    _sensor(tmp_path, "class/thermal/thermal_zone0/temp", "45000\n")
    assert sysfs_temperature_c(tmp_path) == (45.0, "thermal_zone")
    _sensor(tmp_path, "class/hwmon/hwmon0/temp1_input", "51500\n")
    _sensor(tmp_path, "class/hwmon/hwmon1/temp2_input", "62000\n")
    _sensor(tmp_path, "class/hwmon/hwmon1/temp3_input", "garbage\n")
    assert sysfs_temperature_c(tmp_path) == (62.0, "hwmon")
    assert read_temperature_c(tmp_path, nvml=lambda: 71.0) == (71.0, "nvml")
    assert read_temperature_c(tmp_path, nvml=lambda: None) == (62.0, "hwmon")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    def now(self) -> float:
        return self.t


def test_cooldown_waits_until_below_threshold_and_records_it() -> None:
    clock = FakeClock()
    temps = iter([80.0, 75.0, 69.0])
    rec = cool_down(CooldownSection(pause_s=2, max_temperature_c=70, poll_s=5, max_wait_s=60),
                    read_temperature=lambda: (next(temps), "hwmon"), sleep=clock.sleep, clock=clock.now)
    assert clock.sleeps == [2, 5, 5]
    assert rec.waited_s == 12 and rec.reached is True
    assert (rec.temperature_start_c, rec.temperature_end_c, rec.temperature_source) == (80.0, 69.0, "hwmon")


def test_cooldown_gives_up_at_max_wait_and_without_sensor() -> None:
    clock = FakeClock()
    rec = cool_down(CooldownSection(pause_s=0, max_temperature_c=50, poll_s=10, max_wait_s=30),
                    read_temperature=lambda: (90.0, "nvml"), sleep=clock.sleep, clock=clock.now)
    assert rec.reached is False and rec.waited_s == 30
    clock2 = FakeClock()
    rec2 = cool_down(CooldownSection(pause_s=1, max_temperature_c=50),
                     read_temperature=lambda: (None, None), sleep=clock2.sleep, clock=clock2.now)
    assert rec2.reached is None and clock2.sleeps == [1]


def test_page_cache_drop_records_what_happened(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"w" * 4096)
    calls: list[int] = []
    proc = tmp_path / "proc"
    out = drop_page_cache([model, tmp_path / "missing"], proc_root=proc,
                          fadvise=lambda fd, off, ln, adv: calls.append(adv))
    assert calls == [os.POSIX_FADV_DONTNEED]
    assert out["fadvise"][str(model)] == "done"
    assert out["fadvise"][str(tmp_path / "missing")].startswith("failed")
    assert out["drop_caches"].startswith("not permitted")  # no such file under the fake root
    (proc / "sys/vm").mkdir(parents=True)
    (proc / "sys/vm/drop_caches").write_text("")
    out = drop_page_cache([model], proc_root=proc, fadvise=lambda *a: None)
    assert out["drop_caches"] == "done" and (proc / "sys/vm/drop_caches").read_text() == "1\n"
    assert page_cache_action("keep", [model]) == {"policy": "keep"}
