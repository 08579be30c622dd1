"""One spec, three ways in: flags, an experiment file and ``memgap rerun`` store the same
RunSpec, and a stored spec runs again (real llama.cpp server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memgap.store import Store

pytestmark = pytest.mark.integration

MEMGAP = [sys.executable, "-m", "memgap"]
FLAGS = ["--requests", "2", "--concurrency", "1", "--prompt-tokens", "16", "--output-tokens", "4", "--warmup", "0",
         "--ctx-size", "1024", "--parallel", "1", "--sample-rate", "20", "--ready-timeout", "60", "--slo", "ttft_s=5"]


def _memgap(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    p = subprocess.run([*MEMGAP, *args], capture_output=True, text=True, timeout=240)
    try:
        return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), p.stderr
    except json.JSONDecodeError:
        return p.returncode, None, p.stderr + p.stdout


def _without(spec: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in keys}


def test_cli_experiment_and_rerun_store_the_same_spec(tmp_path: Path, no_leftovers: None) -> None:
    db = tmp_path / "s.db"
    rc, out, err = _memgap("run", "--env", "native", *FLAGS, "--store", str(db), "--json")
    assert rc == 0 and out is not None, err
    first = out["runs"][0]
    assert first["status"] == "ok", first["failure"]
    assert first["spec"]["workload"]["requests"] == 2 and first["spec"]["engine"]["ctx_size"] == 1024

    rc, out, err = _memgap("rerun", first["run_id"], "--store", str(db), "--json")
    assert rc == 0 and out is not None, err
    again = out["runs"][0]
    assert again["run_id"] != first["run_id"] and again["spec"] == first["spec"]

    exp = tmp_path / "e.toml"
    exp.write_text('slo = "ttft_s=5"\n[study]\nname = "same"\nenvironments = ["native"]\niterations = 1\n'
                   "[engine]\nctx_size = 1024\nparallel = 1\n"
                   "[workload]\nrequests = 2\nconcurrency = 1\nprompt_tokens = 16\noutput_tokens = 4\nwarmup_requests = 0\n"
                   "[sampler]\nrate_hz = 20\n[timeouts]\nready_s = 60\n")
    rc, _, err = _memgap("run", str(exp), "--store", str(db), "--json")
    assert rc == 0, err
    with Store(db) as st:
        (study_run,) = st.runs({"study_id": "study:same"})
        stored = {r.run_id: r.record["spec"] for r in st.runs()}
    # a study's run carries its study's id; every other field of the spec is the same
    assert study_run.record["spec"]["study_id"] == "study:same"
    assert _without(stored[study_run.run_id], "study_id") == _without(first["spec"], "study_id")
    assert stored[first["run_id"]] == stored[again["run_id"]] == first["spec"]


def test_rerun_of_an_unknown_or_old_run_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with Store(db) as st:
        st.add_run({"run_id": "old1", "record_version": 1, "created_at": "2026-11-01T00:00:00", "status": "ok",
                    "environment": "native", "engine": "llamacpp"})
    rc, _, err = _memgap("rerun", "nope", "--store", str(db))
    assert rc == 2 and "no run 'nope'" in err
    rc, _, err = _memgap("rerun", "old1", "--store", str(db))
    assert rc == 2 and "without run specs" in err
