"""Studies with the real engine: iterations = "auto" settles with fewer runs than a fixed
10 per cell, and a study killed mid-run (SIGKILL) resumes without losing or doubling a run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from memgap_cli import study_rows

from memgap.cli.main import main
from memgap.store import Store

pytestmark = pytest.mark.integration

TINY_WORKLOAD = """
[workload]
requests = 2
concurrency = 2
prompt_tokens = 16
output_tokens = 4
warmup_requests = 0
"""


def _experiment(tmp: Path, body: str) -> Path:
    p = tmp / "exp.toml"
    p.write_text(body + TINY_WORKLOAD)
    return p


def test_auto_reaches_verdicts_with_fewer_runs_and_the_report_says_so(
    tmp_path: Path, no_leftovers: None, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = _experiment(tmp_path, """
[study]
name = "auto-native-sandbox"
environments = ["native", "sandbox"]
iterations = "auto"
min_iterations = 3
max_iterations = 10
seed = 5

# KV cache bytes: fixed by the engine's options, identical in both environments.
[[metrics]]
name = "kv_cache_bytes"
margin = 0

# The engine's resident memory at peak: equivalent within 10% (KV + weights + buffers).
[[metrics]]
name = "process_rss_peak_bytes"
margin = "10%"
""")
    db = tmp_path / "s.db"
    rc = main(["run", str(exp), "--store", str(db)])
    out = capsys.readouterr().out
    with Store(db) as st:
        failures = [(r.environment, r.record.get("failure"), r.record.get("failure_log_tail")) for r in st.runs()
                    if r.status != "ok"]
    assert rc == 0 and not failures, failures[:2]
    assert "settled after 3 block(s)" in out, out
    assert "6 runs instead of 20" in out
    with Store(db) as st:
        rows = st.study_runs("study:auto-native-sandbox")
        assert [r["status"] for r in rows] == ["finished"] * 6
        assert all(st.get(r["run_id"]).status == "ok" for r in rows)
    md = tmp_path / "r.md"
    assert main(["report", "--store", str(db), "--md", str(md), "study_id=study:auto-native-sandbox"]) == 0
    text = md.read_text()
    assert "**6 runs** reached the verdicts, where 10 per cell would have taken **20**" in text
    # the verdict, the margin it applied (the study's), and the pairs it took
    assert re.search(r"\| sandbox vs native: kv_cache_bytes \| equivalent \| [^|]*study[^|]* \| 3 \|", text), text


def test_sigkill_mid_run_then_resume_loses_and_doubles_nothing(tmp_path: Path, no_leftovers: None) -> None:
    exp = _experiment(tmp_path, """
[study]
name = "killed"
environments = ["native"]
iterations = 3
seed = 1
""")
    db = tmp_path / "s.db"
    cmd = [sys.executable, "-m", "memgap", "run", str(exp), "--store", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine: psutil.Process | None = None
    deadline = time.monotonic() + 240
    try:
        # wait until the second planned run has its engine up, then kill memgap outright
        while time.monotonic() < deadline and proc.poll() is None:
            rows = study_rows(db)
            if any(r[0] == 1 and r[2] == "started" for r in rows):
                kids = [k for k in psutil.Process(proc.pid).children(recursive=True) if "llama-server" in " ".join(k.cmdline())]
                if kids:
                    engine = kids[0]
                    break
            time.sleep(0.2)
        assert engine is not None, f"the second run never started: {study_rows(db)}"
        logs = [Path(f.path).parent for f in engine.open_files() if "memgap-run-" in f.path]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # what a reboot would have cleaned up: the engine and the run's temp folder
    engine.kill()
    engine.wait(10)
    for d in logs:
        shutil.rmtree(d, ignore_errors=True)
    assert study_rows(db) == [(0, 1, "finished"), (1, 1, "started")]

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed" in done.stdout
    assert study_rows(db) == [(0, 1, "finished"), (1, 1, "interrupted"), (1, 2, "finished"), (2, 1, "finished")]
    with Store(db) as st:
        runs = st.runs({"study_id": "study:killed"})
        assert len(runs) == 3 and {r.status for r in runs} == {"ok"}  # none lost, none doubled
        finished = {r["run_id"] for r in st.study_runs("study:killed") if r["status"] == "finished"}
        assert finished == {r.run_id for r in runs}
        (cut,) = [r for r in st.study_runs("study:killed") if r["status"] == "interrupted"]
        assert cut["run_id"] is None and "killed" in cut["note"]
    # once finished, running it again runs nothing
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 run(s) this time" in again.stdout
