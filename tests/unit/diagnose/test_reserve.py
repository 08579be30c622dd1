"""Case 6: the kernel's reserve, from this machine's real /proc/zoneinfo and meminfo
(tests/fixtures/proc/reserve-x86_64-6.18), and from a fake /proc built from them with
vm.min_free_kbytes raised to 1 GiB (the sysctl itself is not written: the machine is
shared, and raising the reserve makes the kernel reclaim under everyone's feet)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fakeproc import FIXTURES
from typer.testing import CliRunner

from memgap.cli.main import app
from memgap.collect.meminfo import parse_meminfo
from memgap.diagnose.base import KERNEL_RESERVE
from memgap.diagnose.machine import reserve_rule_effects
from memgap.diagnose.reserve import (
    PAGE_BYTES,
    KernelReserve,
    Zone,
    parse_zoneinfo,
    read_kernel_reserve,
    read_reserve_and_meminfo,
    reserve_diagnosis,
    reserve_effect,
    total_reserve_pages,
    watermarks_for,
)

REAL = FIXTURES / "proc" / "reserve-x86_64-6.18"
GIB = 1 << 30


def test_si_mem_available_from_the_real_files_gives_memavailable_to_the_byte() -> None:
    mi, r = read_reserve_and_meminfo(REAL)
    e = reserve_effect(mi, r)
    assert e is not None and e.computed_available_bytes == mi.available_bytes
    assert r.min_free_kbytes == 67584 and r.watermark_scale_factor == 10
    assert [z.name for z in r.zones] == ["DMA", "DMA32", "Normal", "Movable", "Device"]
    # DMA: lowmem_reserve 17738 + high 20 capped at managed 3840; Movable: managed 0
    assert total_reserve_pages(r.zones) == 3840 + (14720 + 4416) + 21544
    assert e.taken_bytes == e.total_reserve_bytes + e.page_cache_kept_bytes + e.reclaimable_kept_bytes


def test_the_watermarks_follow_min_free_kbytes_as_the_kernel_sets_them() -> None:
    r = read_kernel_reserve(REAL)
    assert watermarks_for(r.zones, 67584, 10) == r.zones
    bigger = watermarks_for(r.zones, 1 << 20, 10)
    assert sum(z.min for z in bigger) * PAGE_BYTES > (1 << 30) - 64 * PAGE_BYTES


def test_pageset_high_lines_are_not_the_zones_watermark() -> None:
    zones = parse_zoneinfo((REAL / "zoneinfo").read_text())
    assert zones[2] == Zone(0, "Normal", zones[2].free, 14008, 17776, 21544, 3768320, (0, 0, 0, 0, 0))


def fake_proc_with_reserve(tmp: Path, min_free_kbytes: int, short: float = 0.1) -> tuple[Path, int]:
    """A /proc whose zoneinfo has the watermarks of ``min_free_kbytes`` and whose meminfo
    has MemFree such that vLLM's start-up check at 0.9 x MemTotal falls ``short`` GiB
    short on MemAvailable; returns the tree and the requested bytes."""
    proc = tmp / "proc"
    shutil.copytree(REAL, proc)
    r = read_kernel_reserve(proc)
    zones = watermarks_for(r.zones, min_free_kbytes, r.watermark_scale_factor or 10)
    text, i = [], -1
    for line in (proc / "zoneinfo").read_text().splitlines():
        if line.startswith("Node "):
            i += 1
        m = re.match(r"^(\s+)(min|low|high)(\s+)\d+$", line)
        text.append(f"{m.group(1)}{m.group(2)}{m.group(3)}{getattr(zones[i], m.group(2))}" if m else line)
    (proc / "zoneinfo").write_text("\n".join(text) + "\n")
    (proc / "sys/vm/min_free_kbytes").write_text(f"{min_free_kbytes}\n")
    mi = parse_meminfo((proc / "meminfo").read_text())
    assert mi.total_bytes is not None and mi.free_bytes is not None
    requested = int(mi.total_bytes * 0.9)
    e = reserve_effect(mi, KernelReserve(min_free_kbytes, 10, zones))
    assert e is not None
    # MemAvailable is linear in MemFree: shift MemFree until MemAvailable = requested - 0.1 GiB
    target = requested - int(short * GIB)
    shift = target - e.computed_available_bytes
    free_kb, avail_kb = (mi.free_bytes + shift) // 1024, target // 1024
    meminfo = re.sub(r"^MemFree:\s+\d+ kB", f"MemFree:        {free_kb} kB", (proc / "meminfo").read_text(), flags=re.M)
    meminfo = re.sub(r"^MemAvailable:\s+\d+ kB", f"MemAvailable:   {avail_kb} kB", meminfo, flags=re.M)
    (proc / "meminfo").write_text(meminfo)
    return proc, requested


def test_probe_shows_the_reserve_and_that_it_alone_fails_vllms_start_up_check(tmp_path: Path) -> None:
    proc, requested = fake_proc_with_reserve(tmp_path, 1 << 20)
    mi, r = read_reserve_and_meminfo(proc)
    e = reserve_effect(mi, r)
    assert e is not None and abs(e.computed_available_bytes - (mi.available_bytes or 0)) < 2048
    # short of the request by 0.1 GiB, while without the reserve it would have 2.9 GiB to spare
    assert e.taken_bytes > 2.9 * GIB and (mi.available_bytes or 0) + e.taken_bytes > requested
    d = reserve_diagnosis(mi, r)
    assert d is not None and d.case == 6 and d.mechanism == KERNEL_RESERVE
    assert d.sentence.startswith("Kernel reserve: vm.min_free_kbytes 1.00 GiB (min watermarks 1.00 GiB, low ")
    result = CliRunner().invoke(app, ["probe", "--proc-root", str(proc), "--json", "--no-nvml", "--no-torch"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    note = next(n for n in out["notes"] if n.startswith("Kernel reserve"))
    assert f"keeps {e.taken_bytes / GIB:.2f} GiB of MemFree out of MemAvailable" in note
    assert "vllm at 0.9: its start-up check fails only because of the reserve" in note
    assert "trtllm-pytorch, trtllm-cpp, sglang and vllm-cpu: nothing" in note
    unified = next(s for s in out["scenarios"] if s["name"] == "unified")
    vllm = next(b for b in unified["budgets"] if b["rule"] == "vllm" and b["fraction"] == 0.9)
    assert vllm["kv_budget_bytes"] is None and "would refuse to start: MemAvailable" in vllm["note"]


def test_at_the_machines_own_reserve_a_larger_shortfall_is_refused_either_way(tmp_path: Path) -> None:
    proc, _ = fake_proc_with_reserve(tmp_path, 67584, short=0.5)
    mi, r = read_reserve_and_meminfo(proc)
    effects = reserve_rule_effects(mi, r, 0, (0.8,), None, None)
    assert effects[0].startswith("vllm at 0.9: the reserve takes 0.33 GiB from its start-up check's margin")
    assert effects[0].endswith("refused either way).")
    assert effects[1].startswith("vllm at 0.8: the reserve takes 0.33 GiB") and "to spare" in effects[1]
