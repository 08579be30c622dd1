"""The ledger against the real kernel and the real engine.

1. A child process in a memory cgroup of its own (under ours) allocates anonymous memory,
   reads a file and writes to tmpfs; the ledger must put each amount in its category.
2. The embedded llama.cpp engine runs in the sandbox twice, its GGUF first cold (dropped
   from the page cache with POSIX_FADV_DONTNEED) and then warm (read by this process
   first). cgroup v1 and v2 charge a page to the cgroup that touched it first, so the
   cold run's cgroup is charged for the mmap'd weights and the warm run's is not: the
   difference must show as page cache, with ``unexplained`` under 5 % of the total."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kernel_child import CHILD, drop_from_page_cache, step

from memgap.analysis.explain import CONTRADICTED, SUPPORTED, RunInput, explain
from memgap.analysis.ledger import run_ledger
from memgap.collect.cgroup import CgroupRef, memory_cgroup_of
from memgap.errors import MemgapError
from memgap.importers import blank_record
from memgap.memory import memory_summary
from memgap.sampler import Sampler, SamplerConfig

pytestmark = pytest.mark.integration

MIB = 1024**2
ANON, FILE, SHM = 64 * MIB, 64 * MIB, 32 * MIB

def _about(actual: int | None, expected: int, what: str, tol: float = 0.15) -> None:
    assert actual is not None, f"{what}: not measured"
    assert abs(actual - expected) <= tol * expected, f"{what}: {actual / MIB:.1f} MiB, expected {expected / MIB:.0f}"


def test_ledger_of_anon_file_and_tmpfs(child_cgroup: CgroupRef, tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x5a" * FILE)
    drop_from_page_cache(data)
    shm = Path("/dev/shm") / f"memgap-ledger-{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(shm), str(ANON), "0", str(SHM)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        (child_cgroup.path / "cgroup.procs").write_text(str(child.pid))  # before it allocates anything
        sampler = Sampler(child.pid, child_cgroup, SamplerConfig(rate_hz=20))
        sampler.start()
        sampler.mark("start")
        for cmd in ("anon", "file", "shm"):
            step(child, cmd)
        sampler.mark("ready")
        sampler.read_kernel_peaks()
        series = sampler.stop()
    finally:
        child.kill()
        child.wait()
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()
    rec = blank_record()
    rec.update(run_id="kernel", environment="cgroup", engine="none", status="ok", created_at="now",
               memory=memory_summary(series), environment_info={"cgroup_version": child_cgroup.version})
    led = run_ledger(rec, series, at="ready")
    # nothing engine-shaped: all anon is "other engine anon memory"
    _about(led.bytes("engine_anon_other"), ANON, "anon")
    _about(led.bytes("page_cache_unmapped"), FILE, "page cache read, not mapped")
    _about(led.bytes("shmem"), SHM, "tmpfs")
    assert (led.bytes("page_cache_mapped") or 0) < 8 * MIB
    assert sum(c.bytes for c in led.categories if c.bytes is not None) == led.total_bytes
    assert led.run_total_bytes is not None and led.run_total_bytes >= ANON + FILE + SHM
    frac = led.unexplained_fraction("run")
    assert frac is not None and frac < 0.05, led.to_dict()


def _engine_run(store: Any, model: Path, label: str) -> dict[str, Any]:
    from memgap.runner import execute_run
    from memgap.spec import RunSpec

    spec = RunSpec.from_dict({
        "engine": {"kind": "llamacpp", "model_path": str(model), "ctx_size": 2048, "parallel": 1},
        "environment": {"name": "sandbox"}, "label": label, "sampler": {"rate_hz": 20},
        "workload": {"requests": 2, "concurrency": 1, "prompt_tokens": 16, "output_tokens": 4, "warmup_requests": 0},
    })
    return execute_run(spec, store)


def _left_behind(model: Path, run_ids: list[str]) -> list[str]:
    """What these runs could have left: a process on this model copy, their cgroups.
    (Narrower than the no_leftovers fixture, which also sees other sessions' engines.)"""
    import psutil

    out = [f"process {p.pid}" for p in psutil.process_iter(["cmdline"])
           if str(model) in " ".join(p.info["cmdline"] or [])]
    own = memory_cgroup_of("self")
    if own is not None:
        out += [d.name for d in own.path.iterdir() if d.is_dir() and any(r in d.name for r in run_ids)]
    return out


def test_cold_and_warm_weights_show_as_page_cache(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sandbox environment needs root")
    from memgap.engines.llamacpp import LlamaCppEngine, LlamaCppOptions
    from memgap.store import Store

    try:
        gguf = LlamaCppEngine(LlamaCppOptions()).model().path
    except MemgapError as e:
        pytest.skip(f"embedded engine not installed: {e}")
    # A private copy on disk: nobody else maps it, so dropping it from the cache works.
    model = tmp_path / gguf.name
    shutil.copyfile(gguf, model)
    size = model.stat().st_size
    with Store(tmp_path / "runs.db") as store:
        drop_from_page_cache(model)
        cold = _engine_run(store, model, "cold")
        drop_from_page_cache(model)  # the sandbox's cgroup is emptied on removal; make sure nothing stayed
        with model.open("rb") as f:  # warm: this process touches every page first
            while f.read(1 << 20):
                pass
        time.sleep(0.1)
        warm = _engine_run(store, model, "warm")
        assert cold["status"] == "ok", cold["failure"]
        assert warm["status"] == "ok", warm["failure"]
        series = {r["run_id"]: store.series(r["run_id"]) for r in (cold, warm)}
    assert _left_behind(model, [cold["run_id"], warm["run_id"]]) == []
    lc = run_ledger(cold, series[cold["run_id"]], at="ready")
    lw = run_ledger(warm, series[warm["run_id"]], at="ready")
    weights = cold["engine_report"]["model_bytes"]
    assert weights and 0.8 * size < weights <= size
    # cold: the run's cgroup read the GGUF first and is charged for the mmap'd weights
    assert lc.bytes("page_cache_mapped") >= 0.9 * weights, lc.to_dict()
    # warm: this process was charged; the run maps the same pages without being charged
    assert lw.bytes("page_cache_mapped") < 0.1 * weights, lw.to_dict()
    assert lw.bytes("page_cache_mapped_elsewhere") >= 0.9 * weights
    assert lw.bytes("page_cache_mapped_elsewhere") - lc.bytes("page_cache_mapped_elsewhere") >= 0.85 * weights
    for led in (lc, lw):
        assert led.bytes("kv_cache") == cold["engine_report"]["kv_cache_bytes"] == warm["engine_report"]["kv_cache_bytes"]
        assert sum(c.bytes for c in led.categories if c.bytes is not None) == led.total_bytes
        assert led.unexplained_fraction("total") < 0.05
        assert led.unexplained_fraction("run") < 0.05, led.to_dict()
    ex = explain("cold", [RunInput(cold, series[cold["run_id"]])], "warm", [RunInput(warm, series[warm["run_id"]])])
    assert ex.hypothesis("page_cache").verdict == SUPPORTED
    assert ex.hypothesis("cgroup_accounting").verdict == CONTRADICTED
    assert ex.hypothesis("kv_sizing_rule").verdict == SUPPORTED
