"""A self-driven engine through ``memgap run`` in every environment: each trtllm-bench
step runs in the environment like an engine command (in docker and podman, one container
per step, the run's folder mounted read-write), memory is sampled while throughput runs,
and the record's workload figures come from the report JSON.

trtllm-bench itself needs an NVIDIA GPU; its place is taken by the TEST DOUBLE
tests/fixtures/bin/trtllm-bench-double (it writes the files trtllm-bench writes, holds
64 MiB while "throughput" runs and prints log lines rebuilt from TensorRT-LLM's format
strings). Containers need root and the services of ``scripts/services.sh``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from services_env import services_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOUBLE = REPO / "tests" / "fixtures" / "bin" / "trtllm-bench-double"
ON_CI = os.environ.get("CI", "").lower() == "true"
MiB = 1 << 20




def _environments(env: dict[str, str]) -> list[str]:
    if os.geteuid() != 0:
        if ON_CI:
            pytest.fail("CI must run the sandbox and container environments (root)")
        return ["native"]
    envs = ["native", "sandbox"]
    for tool, args in (("docker", ["version"]), ("podman", ["info"])):
        try:
            ok = subprocess.run([tool, *args], capture_output=True, env={**os.environ, **env}, timeout=30,
                                check=False).returncode == 0
        except FileNotFoundError:
            ok = False
        if ok:
            envs.append(tool)
        elif ON_CI:
            pytest.fail(f"CI must run the container tests: {tool} does not answer")
    return envs


def test_trtllm_bench_double_in_every_environment(tmp_path: Path, no_leftovers: None) -> None:
    env = services_env()
    envs = _environments(env)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"model_type": "qwen2"}')
    env_flags = [a for e in envs for a in ("--env", e)]
    p = subprocess.run(
        [sys.executable, "-m", "memgap", "run", "--engine", "trtllm", "--set", "engine.mode=bench",
         "--set", f"engine.executable={DOUBLE}", "--model", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
         "--set", f"engine.model_path={ckpt}", "--set", "engine.free_gpu_memory_fraction=0.9", *env_flags,
         "--requests", "8", "--prompt-tokens", "64", "--output-tokens", "32", "--concurrency", "4",
         "--store", str(tmp_path / "r.db"), "--json"],
        # the double holds its 64 MiB for its default 2.5 s: more than two of the sampler's
        # process-tree walks (sampler.tree_refresh_s, 1 s), so the walk finds it in every
        # environment (0.8 s fell between two walks in the sandbox once)
        capture_output=True, text=True, timeout=600, env={**os.environ, **env},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    runs = {r["environment"]: r for r in json.loads(p.stdout)["runs"]}
    assert list(runs) == envs
    for name, r in runs.items():
        assert r["status"] == "ok", (name, r["failure"], r.get("failure_log_tail"))
        steps = r["environment_info"]["self_driven"]["steps"]
        assert [(s["name"], s["exit_status"]) for s in steps] == [("prepare-dataset", 0), ("throughput", 0)], name
        # the load memgap asked for, as the engine reported it
        assert r["requests_ok"] == 8 and r["output_tokens"] == 8 * 32, name
        assert r["output_tokens_per_s"] > 0 and r["e2e_s"]["n"] == 8
        # its memory lines and its report (device total, fraction)
        assert r["engine_report"]["kv_cache_tokens"] == 836608 and r["engine_report"]["kv_fraction"] == 0.9
        # the measured step's process: the double holds 64 MiB while throughput runs
        assert r["memory"]["process_anon_peak_bytes"] >= 64 * MiB, name
    for name in set(envs) - {"native"}:  # the environment's own cgroup, charged the same 64 MiB
        assert 64 * MiB <= runs[name]["memory"]["cgroup_anon_peak_bytes"] < 512 * MiB, name
    assert runs["native"]["memory"]["cgroup_usage_peak_bytes"] is None
