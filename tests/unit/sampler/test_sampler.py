"""The sampler over fake /proc and cgroup trees built from real kernel output
(tests/fixtures: a v1 host, a v2 host)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from memgap.collect.cgroup import CgroupRef
from memgap.sampler import Sampler, SamplerConfig
from memgap.sampler.native import native_module

FIX = Path(__file__).resolve().parents[2] / "fixtures"
ROOT_PID = 14847  # the pid in fixtures/proc/v1host/stat
CHILD_PID = 14900


@pytest.fixture(params=[False, True], ids=["python-loop", "native-loop"])
def native(request: pytest.FixtureRequest) -> bool:
    """Every test runs on both high-rate loops: the Python thread and memgap._fastsample's."""
    if request.param and native_module() is None:
        pytest.skip("memgap._fastsample is not built here")
    return bool(request.param)


def make_proc(tmp: Path) -> Path:
    proc = tmp / "proc"
    proc.mkdir()
    shutil.copy(FIX / "proc/v1host/meminfo", proc / "meminfo")
    for pid, ppid in ((ROOT_PID, 14834), (CHILD_PID, ROOT_PID)):
        d = proc / str(pid)
        (d / "task" / str(pid)).mkdir(parents=True)
        stat = (FIX / "proc/v1host/stat").read_text()
        stat = re.sub(r"^\d+ \(sleep\) S \d+", f"{pid} (sleep) S {ppid}", stat)
        (d / "stat").write_text(stat)
        shutil.copy(FIX / "proc/v1host/status", d / "status")
        shutil.copy(FIX / "proc/v1host/smaps_rollup", d / "smaps_rollup")
        (d / "task" / str(pid) / "children").write_text(f"{CHILD_PID} " if pid == ROOT_PID else "")
    return proc


def set_status(proc: Path, pid: int, rss_anon_kb: int, hwm_kb: int) -> None:
    p = proc / str(pid) / "status"
    text = p.read_text()
    text = re.sub(r"RssAnon:\s+\d+ kB", f"RssAnon:\t{rss_anon_kb} kB", text)
    text = re.sub(r"VmHWM:\s+\d+ kB", f"VmHWM:\t{hwm_kb} kB", text)
    p.write_text(text)


def set_meminfo(proc: Path, key: str, kb: int) -> None:
    p = proc / "meminfo"
    p.write_text(re.sub(rf"^{key}:\s+\d+ kB", f"{key}:       {kb} kB", p.read_text(), flags=re.M))


@pytest.mark.parametrize("version", [1, 2])
def test_samples_every_layer(tmp_path: Path, version: int, native: bool) -> None:
    proc = make_proc(tmp_path)
    cg_dir = tmp_path / "cg"
    shutil.copytree(FIX / f"cgroup/v{version}", cg_dir)
    cg = CgroupRef(version=version, path=cg_dir, relpath="/run")  # type: ignore[arg-type]
    usage_file = cg_dir / ("memory.usage_in_bytes" if version == 1 else "memory.current")

    s = Sampler(ROOT_PID, cg, SamplerConfig(rate_hz=10, smaps_interval_s=1000, native=native), proc_root=proc)
    s._t0 = time.monotonic()
    s.sample()
    usage_file.write_text("999999999\n")
    set_status(proc, CHILD_PID, rss_anon_kb=50_000, hwm_kb=60_000)
    set_meminfo(proc, "MemAvailable", 1000)
    s.sample()
    series = s.stop()

    cols = series.columns
    assert len(cols["t_s"]) == 2 and cols["t_s"][0] <= cols["t_s"][1]
    assert cols["process_count"] == [2, 2]
    # both processes' RssAnon: 108 kB (fixture) each, then 108 + 50000 kB
    assert cols["process_anon_bytes"][0] == 2 * 108 * 1024
    assert cols["process_anon_bytes"][1] == (108 + 50_000) * 1024
    assert series.kernel_process_hwm_bytes == 60_000 * 1024
    assert cols["cgroup_usage_bytes"][1] == 999999999
    stat_anon_key = "total_rss" if version == 1 else "anon"
    stat_text = (cg_dir / "memory.stat").read_text()
    expected_anon = int(re.search(rf"^{stat_anon_key} (\d+)$", stat_text, re.M).group(1))  # type: ignore[union-attr]
    assert cols["cgroup_anon_bytes"][0] == expected_anon
    mem_total_kb = int(re.search(r"MemTotal:\s+(\d+)", (proc / "meminfo").read_text()).group(1))  # type: ignore[union-attr]
    assert cols["host_used_bytes"][1] == (mem_total_kb - 1000) * 1024
    # smaps_rollup is read at the first tick only (interval 1000 s), then None
    assert cols["process_pss_bytes"][0] is not None and cols["process_pss_bytes"][1] is None


def test_vanished_process_and_cgroup_are_none_not_zero(tmp_path: Path, native: bool) -> None:
    proc = make_proc(tmp_path)
    s = Sampler(ROOT_PID, None, SamplerConfig(rate_hz=10, native=native), proc_root=proc)
    s._t0 = time.monotonic()
    shutil.rmtree(proc / str(ROOT_PID))
    shutil.rmtree(proc / str(CHILD_PID))
    s.sample()
    series = s.stop()
    assert series.columns["process_rss_bytes"] == [None]
    assert series.columns["process_count"] == [0]
    assert series.columns["cgroup_usage_bytes"] == [None]
    assert series.columns["host_used_bytes"][0] is not None


def test_kernel_peak_read_before_cgroup_removal(tmp_path: Path, native: bool) -> None:
    proc = make_proc(tmp_path)
    cg_dir = tmp_path / "cg"
    shutil.copytree(FIX / "cgroup/v2", cg_dir)
    s = Sampler(ROOT_PID, CgroupRef(version=2, path=cg_dir, relpath="/x"), proc_root=proc)
    s.read_kernel_peaks()
    assert s.series.kernel_cgroup_peak_bytes == int((cg_dir / "memory.peak").read_text())
    (cg_dir / "memory.peak").unlink()  # kernels before 5.19 have no memory.peak
    s.read_kernel_peaks()
    assert s.series.kernel_cgroup_peak_bytes is None


def test_thread_samples_at_about_the_rate_and_marks(tmp_path: Path, native: bool) -> None:
    proc = make_proc(tmp_path)
    s = Sampler(ROOT_PID, None, SamplerConfig(rate_hz=50, native=native), proc_root=proc)
    s.start()
    time.sleep(0.5)
    t_ready = s.mark("ready")
    time.sleep(0.1)
    series = s.stop()
    n = len(series)
    assert 10 <= n <= 40, n  # ~25 ticks + start + mark; generous for a loaded CI box
    assert series.marks["ready"] == t_ready
    assert any(abs(t - t_ready) < 1e-6 for t in series.columns["t_s"])  # a sample at the mark
    ts = series.columns["t_s"]
    assert all(a <= b for a, b in zip(ts, ts[1:], strict=False))


def test_rate_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Sampler(1, None, SamplerConfig(rate_hz=0), proc_root=tmp_path)


def test_a_mark_walks_the_tree_afresh(tmp_path: Path, native: bool) -> None:
    """An engine forked after the last walk (unshare's child, say) counts from the next mark."""
    proc = make_proc(tmp_path)
    children = proc / str(ROOT_PID) / "task" / str(ROOT_PID) / "children"
    children.write_text("")  # the child is not forked yet
    s = Sampler(ROOT_PID, None, SamplerConfig(rate_hz=10, tree_refresh_s=1000, native=native), proc_root=proc)
    s._t0 = time.monotonic()
    s.sample()
    children.write_text(f"{CHILD_PID} ")
    s.sample()  # within tree_refresh_s: the old tree
    s.mark("ready")
    series = s.stop()
    assert series.columns["process_count"] == [1, 1, 2]


def test_engine_queue_kv_usage_and_preemptions_from_metrics(tmp_path: Path, native: bool) -> None:
    proc = make_proc(tmp_path)
    text = ("vllm:kv_cache_usage_perc{engine=\"0\"} 0.75\nvllm:num_requests_running{engine=\"0\"} 3\n"
            "vllm:num_requests_waiting{engine=\"0\"} 2\nvllm:num_preemptions_total{engine=\"0\"} 5\n")
    s = Sampler(ROOT_PID, None, SamplerConfig(rate_hz=10, metrics_interval_s=0, native=native), proc_root=proc,
                metrics_fetch=lambda: text, gpu_read=None)  # fmt: skip
    s._t0 = time.monotonic()
    s.sample()
    c = s.stop().columns
    assert (c["kv_usage_ratio"][-1], c["requests_running"][-1], c["requests_waiting"][-1]) == (0.75, 3.0, 2.0)
    assert c["preemptions_total"][-1] == 5.0


def test_a_slow_metrics_endpoint_does_not_stall_sampling(tmp_path: Path, native: bool) -> None:
    """Under load vLLM took up to 1.3 s to answer /metrics here: the fetch runs in a thread
    of its own once the sampler starts, and its readings still land in the series."""
    proc = make_proc(tmp_path)
    calls = []

    def slow() -> str:
        calls.append(time.monotonic())
        time.sleep(0.4)
        return "vllm:kv_cache_usage_perc{engine=\"0\"} 0.25\n"

    s = Sampler(ROOT_PID, None, SamplerConfig(rate_hz=20, metrics_interval_s=0.1, native=native), proc_root=proc,
                metrics_fetch=slow, gpu_read=None)  # fmt: skip
    s.start()
    time.sleep(1.5)
    s.mark("end")
    t = time.monotonic()
    c = s.stop().columns
    assert time.monotonic() - t < 1.0  # stop waits for at most the fetch in flight
    assert [u for u in c["kv_usage_ratio"] if u is not None][:1] == [0.25]
    assert len(calls) >= 2
    # 20 Hz for 1.5 s, not one row per 0.4 s fetch
    assert len(c["t_s"]) >= 15
