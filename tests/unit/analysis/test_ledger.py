"""The ledger of a run: over fake /proc and cgroup trees built from real kernel output
(v1 and v2), over hand-made sample rows, and as a property: the categories always add up."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.analysis.ledger import CATEGORIES, NOT_MEASURED, ledger_at, run_ledger, run_ledgers
from memgap.collect.cgroup import CgroupRef
from memgap.importers import blank_record
from memgap.memory import memory_summary
from memgap.sampler import Sampler, SamplerConfig
from memgap.series import COLUMNS

FIX = Path(__file__).resolve().parents[2] / "fixtures"
KIB, MIB = 1024, 1024**2
FIXTURE_MEMTOTAL = 24684092 * KIB  # tests/fixtures/proc/v1host/meminfo


def _llamacpp_report(kv: int, compute: int, model: int = 90 * MIB) -> dict[str, Any]:
    return {"engine": "llamacpp", "model_bytes": model, "kv_cache_bytes": kv, "compute_bytes": compute,
            "evidence": ["llama_kv_cache:        CPU KV buffer size =   180.00 MiB"], "extra": {}}


def _record(memory: dict[str, Any], *, cgroup_version: int | None, report: dict[str, Any],
            mmap: bool | None = True) -> dict[str, Any]:
    r = blank_record()
    r.update(run_id="r1", environment="sandbox", engine="llamacpp", status="ok", created_at="2026-01-01T00:00:00",
             engine_options={"mmap": mmap}, engine_report=report, memory=memory,
             environment_info={"cgroup_version": cgroup_version} if cgroup_version else {})
    return r


def _make_proc(tmp: Path) -> Path:
    proc = tmp / "proc"
    d = proc / "4242"
    (d / "task" / "4242").mkdir(parents=True)
    shutil.copy(FIX / "proc/v1host/meminfo", proc / "meminfo")
    stat = (FIX / "proc/v1host/stat").read_text().split(" ", 1)[1]
    (d / "stat").write_text("4242 " + stat)
    shutil.copy(FIX / "proc/v1host/status", d / "status")
    shutil.copy(FIX / "proc/v1host/smaps_rollup", d / "smaps_rollup")
    (d / "task" / "4242" / "children").write_text("")
    return proc


def _sampled(tmp: Path, version: int) -> dict[str, Any]:
    proc = _make_proc(tmp)
    cg_dir = tmp / "cg"
    shutil.copytree(FIX / f"cgroup/v{version}", cg_dir)
    s = Sampler(4242, CgroupRef(version=version, path=cg_dir, relpath="/run"),  # type: ignore[arg-type]
                SamplerConfig(rate_hz=10, smaps_interval_s=1000), proc_root=proc)
    s._t0 = time.monotonic()
    s.mark("start")
    s.mark("ready")
    series = s.stop()
    return {"series": series, "memory": memory_summary(series)}


def _sum(led: Any) -> int:
    return sum(c.bytes for c in led.categories if c.bytes is not None)


# usage - anon - file - kernel of the fixtures: the kernel counters' own disagreement.
# v1: 3100672 - 1691648 (rss) - 278528 (cache) - 1015808 (kmem); v2: 139350016 - 860160 - 129146880 - 9211904
@pytest.mark.parametrize(("version", "kernel", "unexplained", "stat_name"),
                         [(1, 1015808, 114688, "mapped_file"), (2, 9211904, 131072, "file_mapped")])
def test_ledger_over_real_kernel_files(tmp_path: Path, version: int, kernel: int, unexplained: int,
                                       stat_name: str) -> None:
    got = _sampled(tmp_path, version)
    rec = _record(got["memory"], cgroup_version=version, report=_llamacpp_report(kv=32 * KIB, compute=16 * KIB))
    led = run_ledger(rec, got["series"].to_dict(), at="ready")
    free = 21493964 * KIB  # MemFree of the fixture
    assert led.total_bytes == FIXTURE_MEMTOTAL - free
    assert _sum(led) == led.total_bytes  # the categories add up to the measured total
    assert led.bytes("kernel") == kernel
    assert led.bytes("unexplained") == unexplained
    assert led.bytes("kv_cache") == 32 * KIB and led.bytes("compute_buffers") == 16 * KIB
    assert led.bytes("model_weights_anon") == 0  # mmap: the weights are page cache
    anon = 1691648 if version == 1 else 860160
    assert led.bytes("engine_anon_other") == anon - 48 * KIB
    assert stat_name in led.get("page_cache_mapped").source
    assert led.run_total_bytes == (3100672 if version == 1 else 139350016)
    # the process maps 1556 kB of files (fixture status RssFile); what the cgroup was not charged for
    mapped = 45056 if version == 1 else 0
    assert led.bytes("page_cache_mapped_elsewhere") == 1556 * KIB - mapped
    assert led.get("gpu_outside_cgroup").bytes is None
    # recomputed from the raw series or read from the record: the same ledger
    assert run_ledger(rec, None, at="ready").to_dict() == led.to_dict()


def _row(**kw: int | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(t_s=1.0, host_free_bytes=10_000 * MIB, host_cached_bytes=3_000 * MIB, host_shmem_bytes=10 * MIB,
               host_available_bytes=14_000 * MIB, host_used_bytes=2_000 * MIB)
    row.update(kw)
    return row


MEM = {"host_total_bytes": 16_000 * MIB}


def test_cold_page_cache_is_charged_to_the_run_warm_is_charged_elsewhere() -> None:
    rep = _llamacpp_report(kv=180 * MIB, compute=17 * MIB)
    common = {"cgroup_anon_bytes": 213 * MIB, "cgroup_shmem_bytes": 0, "cgroup_kmem_bytes": 2 * MIB,
              "process_anon_bytes": 213 * MIB, "process_file_bytes": 110 * MIB, "process_shmem_bytes": 0}
    cold = _row(cgroup_usage_bytes=313 * MIB, cgroup_file_bytes=98 * MIB, cgroup_file_mapped_bytes=97 * MIB, **common)
    warm = _row(cgroup_usage_bytes=215 * MIB, cgroup_file_bytes=0, cgroup_file_mapped_bytes=0, **common)
    rec = _record(MEM, cgroup_version=1, report=rep)
    lc, lw = ledger_at(rec, cold, at="ready"), ledger_at(rec, warm, at="ready")
    assert lc.bytes("page_cache_mapped") == 97 * MIB and lc.bytes("page_cache_unmapped") == 1 * MIB
    assert lw.bytes("page_cache_mapped") == 0
    assert lc.bytes("page_cache_mapped_elsewhere") == 13 * MIB
    assert lw.bytes("page_cache_mapped_elsewhere") == 110 * MIB
    assert lc.bytes("engine_anon_other") == lw.bytes("engine_anon_other") == 16 * MIB
    for led in (lc, lw):
        assert _sum(led) == led.total_bytes == 6_000 * MIB
        assert led.bytes("unexplained") == 0
        assert led.bytes("outside_page_cache") + led.bytes("page_cache_mapped_elsewhere") + \
            led.bytes("page_cache_mapped") + led.bytes("page_cache_unmapped") == 3_000 * MIB


def test_engine_figures_larger_than_anon_are_clamped_into_unexplained() -> None:
    rec = _record(MEM, cgroup_version=2, report=_llamacpp_report(kv=300 * MIB, compute=0))
    led = ledger_at(rec, _row(cgroup_usage_bytes=200 * MIB, cgroup_anon_bytes=200 * MIB, cgroup_file_bytes=0,
                              cgroup_shmem_bytes=0, cgroup_file_mapped_bytes=0, cgroup_kmem_bytes=0), at="ready")
    assert led.bytes("engine_anon_other") == 0
    assert led.bytes("unexplained") == -100 * MIB
    assert _sum(led) == led.total_bytes
    assert any("below 0" in n for n in led.notes)


def test_no_mmap_puts_the_weights_in_anon() -> None:
    rec = _record(MEM, cgroup_version=2, report=_llamacpp_report(kv=100 * MIB, compute=10 * MIB, model=90 * MIB),
                  mmap=False)
    led = ledger_at(rec, _row(cgroup_usage_bytes=250 * MIB, cgroup_anon_bytes=250 * MIB, cgroup_file_bytes=0,
                              cgroup_shmem_bytes=0, cgroup_file_mapped_bytes=0, cgroup_kmem_bytes=0), at="peak")
    assert led.bytes("model_weights_anon") == 90 * MIB
    assert led.bytes("engine_anon_other") == 50 * MIB
    assert led.at == "peak"


def test_without_a_cgroup_the_run_is_its_process_tree() -> None:
    rec = _record(MEM, cgroup_version=None, report=_llamacpp_report(kv=100 * MIB, compute=10 * MIB))
    led = ledger_at(rec, _row(process_rss_bytes=300 * MIB, process_anon_bytes=200 * MIB,
                              process_file_bytes=95 * MIB, process_shmem_bytes=5 * MIB), at="ready")
    assert led.run_total_bytes == 205 * MIB  # VmRSS - RssFile
    # nothing is charged to the run alone: what it maps is page cache mapped elsewhere
    assert led.bytes("page_cache_mapped") is None and led.bytes("page_cache_mapped_elsewhere") == 95 * MIB
    assert led.bytes("shmem") == 5 * MIB
    assert led.bytes("kernel") is None and led.bytes("page_cache_unmapped") is None
    assert led.bytes("outside_page_cache") == 2_900 * MIB
    assert _sum(led) == led.total_bytes and led.bytes("unexplained") == 0
    assert "RssAnon" in led.get("engine_anon_other").source


def test_engine_level_only_record_is_not_measured() -> None:
    from memgap.importers.benchmark_spark import parse

    text = ('{"models": {"m": {"native": [{"timestamp": "20250101_000000", "peak_memory": 70.0, '
            '"kv_cache": 44.0, "exit_code": 0}]}}}')
    rec = parse(text)[0].record
    ledgers = run_ledgers(rec)
    for led in ledgers.values():
        assert led.total_bytes is None and not led.measured
        assert all(c.bytes is None for c in led.categories)  # trtllm: KV is in device memory
        assert led.engine["kv_cache_bytes"] == 44 * 1024**3 and led.engine["buffers_on_host"] is False
        assert "not measured" in led.notes[0]
    assert led.get("unexplained").source == NOT_MEASURED


@pytest.mark.parametrize(("gpus", "in_sum"), [([{"unified_memory": True}], True),
                                             ([{"unified_memory": False}], False), (None, False)])
def test_gpu_reading_counts_in_host_memory_only_on_unified_memory(gpus: Any, in_sum: bool) -> None:
    rec = _record(MEM, cgroup_version=2, report=_llamacpp_report(kv=1, compute=1))
    rec["host"] = {"gpus": gpus}
    row = _row(cgroup_usage_bytes=10 * MIB, cgroup_anon_bytes=10 * MIB, cgroup_file_bytes=0, cgroup_shmem_bytes=0,
               cgroup_file_mapped_bytes=0, cgroup_kmem_bytes=0, gpu_process_used_bytes=1_000 * MIB)
    led = ledger_at(rec, row, at="ready")
    without = ledger_at(rec, {**row, "gpu_process_used_bytes": None}, at="ready")
    assert _sum(led) == led.total_bytes
    if in_sum:
        assert led.bytes("gpu_outside_cgroup") == 1_000 * MIB
        assert led.bytes("outside_other") == without.bytes("outside_other") - 1_000 * MIB
    else:
        assert led.bytes("gpu_outside_cgroup") is None
        assert led.engine["gpu_process_used_bytes"] == 1_000 * MIB
        assert led.bytes("outside_other") == without.bytes("outside_other")


sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=2**40))


@given(st.fixed_dictionaries({c: sizes for c in COLUMNS if c.endswith("_bytes") and c != "host_free_bytes"}),
       st.integers(min_value=0, max_value=2**40), st.integers(min_value=2**40, max_value=2**41),
       st.booleans(), st.sampled_from([None, 1, 2]))
def test_categories_always_add_up(row: dict[str, Any], free: int, total: int, mmap: bool, cgv: int | None) -> None:
    row = {**row, "host_free_bytes": free, "t_s": 0.0}
    rec = _record({"host_total_bytes": total}, cgroup_version=cgv, report=_llamacpp_report(kv=5 * MIB, compute=MIB),
                  mmap=mmap)
    led = ledger_at(rec, row, at="ready")
    assert led.total_bytes == total - free
    assert _sum(led) == led.total_bytes
    assert [c.key for c in led.categories] == [k for k, _ in CATEGORIES]
    assert all(c.bytes is None or c.bytes >= 0 for c in led.categories if c.key != "unexplained")
    assert all(c.source for c in led.categories)
