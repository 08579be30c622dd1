"""Who holds memory: a fake /proc of real kernel files, engines grouped by process tree."""

from __future__ import annotations

import os
from pathlib import Path

from fakeproc import GIB_KB, add_process, start_s, vllm_tree, write_boot_time

from memgap.diagnose.holders import (
    Proc,
    engine_of,
    group_holders,
    read_processes,
    running_engines,
    with_gpu,
)


def _tree(proc: Path) -> None:
    write_boot_time(proc)
    add_process(proc, 1, 0, "systemd", ["/sbin/init"], anon_kb=9000)
    add_process(proc, 4242, 1, "python3", ["python3", "-c", "hold 3 GiB"], anon_kb=3 * GIB_KB)
    vllm_tree(proc, 5000, 1, api_kb=700 * 1024, core_kb=600 * 1024, worker_kb=2 * GIB_KB)
    add_process(proc, 6000, 1, "memgap", ["python", "-m", "memgap", "run"], anon_kb=200 * 1024, start_ticks=900000)
    add_process(proc, 6001, 6000, "python", VLLM_B, anon_kb=500 * 1024, start_ticks=900100)


VLLM_B = ["python", "-m", "vllm.entrypoints.openai.api_server", "--port", "9000"]


def test_engine_processes_are_recognised_by_command_line_and_title() -> None:
    assert engine_of("/opt/venv/bin/python -m vllm.entrypoints.openai.api_server --model m") == "vllm"
    assert engine_of("VLLM::EngineCore") == "vllm"
    assert engine_of("python3 -m sglang.launch_server --model-path m") == "sglang"
    assert engine_of("/usr/bin/llama-server -m x.gguf") == "llamacpp"
    assert engine_of("trtllm-serve serve m") == "trtllm"
    assert engine_of("python3 -c 'import vllm_helper'") is None


def test_an_engine_tree_is_one_holder_and_memgaps_own_subtree_is_left_out(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _tree(proc)
    procs = read_processes(proc)
    assert {p.pid for p in procs} == {1, 4242, 5000, 5001, 5002, 6000, 6001}
    holders = group_holders(procs, exclude=[6000])
    assert [h.pid for h in holders][:2] == [5000, 4242]
    vllm = holders[0]
    assert vllm.engine == "vllm" and vllm.pids == (5000, 5001, 5002) and vllm.port == 8000
    # RssAnon + RssShmem of all three processes (the worker's 160 MiB queue included)
    assert vllm.held_bytes == (700 + 600 + 2048 + 160) * 1024 * 1024
    assert holders[1].held_bytes == 3 << 30 and holders[1].engine is None
    assert 6000 not in {h.pid for h in holders} and 6001 not in {p for h in holders for p in h.pids}
    assert vllm.label() == "a vLLM engine (pid 5000, 3 processes, port 8000)"
    assert [h.pid for h in running_engines(holders)] == [5000]


def test_processes_started_after_the_engine_are_not_what_held_memory_at_its_start(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _tree(proc)
    procs = read_processes(proc)
    assert next(p for p in procs if p.pid == 6000).start_s == start_s(900000)
    holders = group_holders(procs, started_before_s=start_s(800000))
    assert {h.pid for h in holders} == {1, 4242, 5000}


def test_nvml_figures_join_the_processes_and_unknown_pids_are_kept() -> None:
    procs = [Proc(10, 1, "python", "python -m vllm.entrypoints.openai.api_server", None, 100, 0),
             Proc(11, 10, "VLLM::Worker", "VLLM::Worker_TP0", None, 100, 0)]
    holders = group_holders(with_gpu(procs, {11: 40 << 30, 99: 2 << 30}))
    assert holders[0].engine == "vllm" and holders[0].gpu_bytes == 40 << 30
    assert holders[1].pid == 99 and holders[1].gpu_bytes == 2 << 30


def test_the_real_proc_shows_this_process_with_its_memory() -> None:
    me = next(p for p in read_processes() if p.pid == os.getpid())
    assert me.anon_bytes is not None and me.anon_bytes > 10 << 20
    assert me.start_s is not None and me.start_s > 1.6e9
