"""``memgap run`` end to end on the real llama.cpp server, natively and in the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from memgap.store import Store

pytestmark = pytest.mark.integration

MEMGAP = [sys.executable, "-m", "memgap"]
ROOT = os.geteuid() == 0


def memgap_run(args: list[str], store: Path, timeout_s: float = 240) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(
        [*MEMGAP, "run", "--store", str(store), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    return proc.returncode, out, proc.stderr


# SmolLM2-135M: 30 layers, 3 KV heads, head_dim 64, f16 -> 30*3*(64+64)*2 bytes per token.
SMOLLM2_KV_BYTES_PER_TOKEN = 30 * 3 * (64 + 64) * 2


@pytest.mark.skipif(not ROOT, reason="the sandbox environment needs root")
def test_native_and_sandbox_real_engine(tmp_path: Path, no_leftovers: None) -> None:
    store = tmp_path / "runs.db"
    rc, out, err = memgap_run(
        ["--requests", "6", "--concurrency", "2", "--output-tokens", "8", "--prompt-tokens", "32", "--warmup", "1"],
        store,
    )
    assert rc == 0, err
    assert out is not None and out["schema_version"] >= 1
    runs = {r["environment"]: r for r in out["runs"]}
    assert set(runs) == {"native", "sandbox"}
    for env, r in runs.items():
        assert r["status"] == "ok", (env, r["failure"])
        assert r["failure"] is None
        assert r["engine"] == "llamacpp"
        assert r["requests_ok"] == 6 and r["requests_errored"] == 0
        # end of sequence is ignored, so every request produced exactly 8 tokens (server's count)
        assert r["output_tokens"] == 6 * 8
        assert r["output_tokens_per_s"] > 0
        for key in ("ttft_s", "e2e_s"):
            p = r[key]
            assert 0 < p["p50"] <= p["p90"] <= p["p99"]
        assert r["ttft_s"]["p50"] < r["e2e_s"]["p50"]
        rep = r["engine_report"]
        # what llama.cpp printed and the DESIGN formula agree: 8192 cells x 5760 B = 180 MiB
        assert rep["kv_cache_bytes"] == 8192 * SMOLLM2_KV_BYTES_PER_TOKEN == 180 * 1024 * 1024
        assert rep["kv_cache_tokens"] == 8192
        assert 80 * 2**20 < rep["model_bytes"] < 110 * 2**20
        assert rep["compute_bytes"] and rep["compute_bytes"] > 0
        mem = r["memory"]
        assert mem["samples"] >= 10
        # the engine holds at least its KV cache in anonymous memory
        assert mem["process_anon_peak_bytes"] >= rep["kv_cache_bytes"]
        assert mem["process_rss_peak_bytes"] >= mem["process_anon_peak_bytes"]
        assert mem["host_used_peak_bytes"] > rep["kv_cache_bytes"]
    assert runs["native"]["memory"]["cgroup_usage_peak_bytes"] is None
    sb = runs["sandbox"]["memory"]
    # the sandbox's own cgroup was charged at least what its process holds as anon memory
    assert sb["cgroup_usage_peak_bytes"] >= sb["process_anon_peak_bytes"]
    assert sb["cgroup_anon_peak_bytes"] >= runs["sandbox"]["engine_report"]["kv_cache_bytes"]

    with Store(store) as st:
        stored = st.runs()
        assert [s.run_id for s in stored] == [r["run_id"] for r in out["runs"]]
        for s in stored:
            log = st.engine_log(s.run_id)
            assert log is not None and "llama_kv_cache" in log
            reqs = st.requests(s.run_id)
            assert len([q for q in reqs if not q["warmup"]]) == 6
            series = st.series(s.run_id)
            assert series is not None and len(series["columns"]["t_s"]) == s.record["memory"]["samples"]
            assert {"start", "ready", "end"} <= set(series["marks"])


def test_impossible_engine_option_is_a_failed_run(tmp_path: Path, no_leftovers: None) -> None:
    store = tmp_path / "runs.db"
    envs = ["--env", "native"] + (["--env", "sandbox"] if ROOT else [])
    rc, out, err = memgap_run([*envs, "--requests", "2", "--engine-arg=--no-such-option"], store, timeout_s=120)
    assert rc == 1, err
    assert out is not None
    for r in out["runs"]:
        assert r["status"] == "failed"
        assert "before it was ready" in r["failure"]
        assert "--no-such-option" in r["failure_log_tail"]
        assert r["requests_ok"] == 0
    with Store(store) as st:
        assert [s.status for s in st.runs()] == ["failed"] * len(out["runs"])


def test_bad_model_file_is_a_failed_run(tmp_path: Path, no_leftovers: None) -> None:
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a GGUF file\n" * 100)
    rc, out, err = memgap_run(["--env", "native", "--model", str(bogus), "--requests", "1"], tmp_path / "r.db", 120)
    assert rc == 1, err
    assert out is not None
    (r,) = out["runs"]
    assert r["status"] == "failed" and r["failure_log_tail"]


@pytest.mark.skipif(not ROOT, reason="the sandbox environment needs root")
def test_sandbox_memory_limit_oom_kill_is_recorded(tmp_path: Path, no_leftovers: None) -> None:
    # 180 MiB of KV cache cannot fit in 64 MiB: the kernel kills the engine.
    rc, out, err = memgap_run(
        ["--env", "sandbox", "--memory-limit", "64MiB", "--requests", "2", "--no-mmap"], tmp_path / "r.db", 120
    )
    assert rc == 1, err
    assert out is not None
    (r,) = out["runs"]
    assert r["status"] == "failed"
    assert "OOM" in r["failure"], r["failure"]
    assert r["cgroup_final"]["oom_kill_count"] >= 1 or r["cgroup_final"]["failcnt"] > 0
    assert r["memory"]["cgroup_usage_peak_bytes"] <= 64 * 2**20
    kills = r["environment_info"].get("kernel_oom_kills")
    if kills is not None:  # the kernel's log was readable (root, no dmesg_restrict in the way)
        assert kills and kills[-1]["task"] == "llama-server", kills
        assert all(k["constraint"] == "CONSTRAINT_MEMCG" and "/memgap-" in k["oom_memcg"]
                   for k in kills), kills
        assert "kernel log: the OOM killer killed llama-server (PID " in r["failure"], r["failure"]


@pytest.mark.skipif(not ROOT, reason="the sandbox environment needs root")
def test_ctrl_c_leaves_nothing_behind(tmp_path: Path, no_leftovers: None) -> None:
    proc = subprocess.Popen(
        [*MEMGAP, "run", "--store", str(tmp_path / "r.db"), "--env", "sandbox", "--requests", "200",
         "--output-tokens", "64"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait until the engine is up and serving (a llama-server below our child)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if any("llama-server" in " ".join(k.cmdline()) for k in kids if k.is_running()):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("engine never started")
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    with Store(tmp_path / "r.db") as st:
        (r,) = st.runs()
        assert r.status == "failed" and "interrupted" in (r.record["failure"] or "")
