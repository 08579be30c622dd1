"""scripts/gpu_check.py's verdict (the GPU control case; run on a GPU machine, numbers in
the issue note): flat cgroup charge while GPU memory grows, and a host control that the
cgroup must see. Rows shaped as the script records them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

GIB = 1 << 30
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
assert spec is not None and spec.loader is not None
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def rows(charges: list[int], gpu: list[int | None], host_charge: int | None) -> dict[str, Any]:
    out = [{"name": f"step{i}", "gpu_allocated_bytes": 2 * i * GIB, "host_allocated_bytes": 0,
            "cgroup_usage_bytes": c, "cgroup_processes_used_bytes": g, "device_used_bytes": 10 * GIB}
           for i, (c, g) in enumerate(zip(charges, gpu, strict=True))]
    if host_charge is not None:
        out.append({**out[-1], "name": "host", "host_allocated_bytes": GIB, "cgroup_usage_bytes": host_charge})
    return {"sandbox_steps": out}


def test_flat_charge_and_seen_host_control_pass() -> None:
    v = gpu_check.verdict(rows([300 << 20] * 3, [GIB, 3 * GIB, 5 * GIB], (300 << 20) + GIB), "2,4", 1.0, 64)
    assert v["pass"] and v["gpu_growth_bytes"] == 4 * GIB and v["cgroup_charge_growth_bytes"] == 0


def test_charge_that_follows_the_gpu_fails() -> None:
    # what a unified-memory machine would show: the allocation lands in the cgroup
    v = gpu_check.verdict(rows([GIB, 3 * GIB, 5 * GIB], [GIB, 3 * GIB, 5 * GIB], 6 * GIB), "2,4", 1.0, 64)
    assert not v["pass"] and v["cgroup_charge_growth_bytes"] == 4 * GIB


def test_host_control_unseen_fails_and_missing_per_process_uses_the_device() -> None:
    v = gpu_check.verdict(rows([300 << 20] * 3, [GIB, 3 * GIB, 5 * GIB], 300 << 20), "2,4", 1.0, 64)
    assert not v["pass"] and v["host_control_charge_growth_bytes"] == 0
    r = rows([300 << 20] * 3, [None, None, None], (300 << 20) + GIB)
    for i, row in enumerate(r["sandbox_steps"]):
        row["device_used_bytes"] = (1 + 2 * min(i, 2)) * GIB
    v = gpu_check.verdict(r, "2,4", 1.0, 64)
    assert v["pass"] and v["gpu_growth_bytes"] == 4 * GIB
