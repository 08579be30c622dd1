"""Before a run: doctor's findings and probe's notes over facts read from a fake /proc
(real kernel files) -- an engine running, the largest holders, the kernel's reserve,
/dev/shm against what each engine declares."""

from __future__ import annotations

import shutil
from pathlib import Path

from fakeproc import FIXTURES, GIB_KB, add_process, vllm_tree, write_boot_time

from memgap.diagnose.machine import doctor_findings, machine_facts, probe_notes


def _machine(tmp: Path) -> Path:
    proc = tmp / "proc"
    shutil.copytree(FIXTURES / "proc" / "reserve-x86_64-6.18", proc)
    write_boot_time(proc)
    add_process(proc, 4242, 1, "python3", ["python3", "hold.py"], anon_kb=3 * GIB_KB)
    vllm_tree(proc, 5000, 1, api_kb=700 * 1024, core_kb=600 * 1024, worker_kb=2 * GIB_KB)
    add_process(proc, 7000, 1, "llama-server", ["/opt/llama/llama-server", "-m", "m.gguf", "--port", "8080"],
                anon_kb=300 * 1024)
    return proc


def test_doctor_warns_of_running_engines_and_shows_shm_and_the_reserve(tmp_path: Path) -> None:
    facts = machine_facts(_machine(tmp_path), dev_shm=tmp_path)
    found = {f[1]: f for f in doctor_findings(facts.to_dict(), {"vllm": "8g", "llamacpp": None})}
    area, item, ok, detail, disables = found["engines running"]
    assert not ok and detail.startswith("vLLM (pid 5000, port 8000) 3.43 GiB; llama.cpp (pid 7000, port 8080) 0.29 GiB "
                                        "already running")
    assert disables is not None and "default memory fraction" in disables
    assert found["largest holders"][3].startswith("python3 (pid 4242) 3.00 GiB")
    assert "vm.min_free_kbytes 66.00 MiB: MemAvailable is 0.33 GiB below" in found["kernel reserve"][3]
    shm = found["/dev/shm"][3]
    assert "in a docker or podman container 64.00 MiB unless --shm-size or --ipc=host; engines declare vllm 8g" in shm
    assert doctor_findings({}) == []


def test_probe_names_what_a_predicted_refusal_is_up_against(tmp_path: Path) -> None:
    facts = machine_facts(_machine(tmp_path), dev_shm=tmp_path)
    notes = probe_notes(facts, refusals=["vllm-cpu at utilization 0.92: would refuse to start: ..."])
    assert notes[0].startswith("Kernel reserve: vm.min_free_kbytes 66.00 MiB")
    assert notes[1].startswith("Engines running: a vLLM engine (pid 5000, 3 processes, port 8000) 3.43 GiB; "
                               "a llama.cpp engine (pid 7000, port 8080) 0.29 GiB.")
    assert notes[3] == ("Predicted refusal, vllm-cpu at utilization 0.92: would refuse to start: .... Memory held now: "
                        "a vLLM engine (pid 5000, 3 processes, port 8000) 3.43 GiB, python3 (pid 4242) 3.00 GiB, "
                        "a llama.cpp engine (pid 7000, port 8080) 0.29 GiB.")
