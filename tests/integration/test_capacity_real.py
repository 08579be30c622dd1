"""``memgap capacity`` on the real llama.cpp server: two KV budgets 3x apart give boundaries
whose intervals do not overlap, each where ``plan`` predicts it, in fewer runs than a grid;
a search killed with SIGTERM resumes without redoing a finished point.

The shape is KV-bound: 256 tokens per request (prompt 32 + output 224; llama.cpp gives a
slot at least 256 cells), so --ctx-size 256 holds 1 request at once and 768 holds 3, and a
request beyond them waits a whole generation (224 decode steps) for a slot
(llamacpp:requests_deferred). A short prompt keeps the compute the budget's own requests
cost at once small (3 x 32 tokens of prefill), so the SLO breaks on KV, not compute.
The TTFT bound is half of one generation measured here first: the machine is shared, and
a bound in absolute seconds would be compute-bound on a busy day and KV-blind on a quiet
one. About five minutes on two busy cores; one thread (two threads spinning at llama.cpp's
barrier on an oversubscribed machine decoded ten times slower, measured).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.store import open_store

pytestmark = pytest.mark.integration

SHAPE = ["--prompt-tokens", "32", "--output-tokens", "224", "--threads", "1", "--warmup", "0"]


def generation_s(store: Path, capsys: pytest.CaptureFixture[str]) -> float:
    """One request's end-to-end time alone (224 tokens), on this machine now."""
    rc = main(["run", "--env", "native", "--requests", "1", "--concurrency", "1", "--ctx-size", "256",
               "--parallel", "1", *SHAPE, "--store", str(store), "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    record = json.loads(out)["runs"][0]
    return float(record["e2e_s"]["p50"])


def stored_ok(store: Path) -> int:
    with open_store(store) as st:
        return sum(r.status == "ok" for r in st.runs(where={"study_id": "capacity-real"}))


def test_two_budgets_apart_predicted_and_resumed_after_a_kill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None
) -> None:
    store = tmp_path / "capacity.db"
    t0 = time.monotonic()
    bound = round(max(1.0, 0.5 * generation_s(tmp_path / "calibrate.db", capsys)), 2)
    args = ["capacity", "--ctx-size", "256", "--ctx-size", "768", *SHAPE, "--requests-per-load", "1",
            "--min-requests", "2", "--high", "16", "--slo", f"ttft_p99_s<={bound}", "--name", "real",
            "--store", str(store)]  # fmt: skip
    # killed (SIGTERM, as a scheduler or Ctrl-C would) once three points are stored
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "memgap", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and (not store.exists() or stored_ok(store) < 3):
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "resume with memgap capacity --resume capacity-real" in err
    with open_store(store) as st:
        before = {r.run_id: r.label for r in st.runs(where={"study_id": "capacity-real"}) if r.status == "ok"}
    assert len(before) >= 3

    assert main(["capacity", "--resume", "capacity-real", "--store", str(store), "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["runs_before"] == len(before) and f"resuming after {len(before)} runs" in cap.err
    # nothing finished was redone: every point the resumed search ran again was a repeat it chose
    new_points = [line for line in cap.err.splitlines() if line.startswith("memgap: capacity: native/")]
    for line in new_points:
        label = line.removeprefix("memgap: capacity: ").split(" (")[0]
        if f"capacity-real {label}" in before.values():
            assert "(repeat)" in line, line
    with open_store(store) as st:
        runs = st.runs(where={"study_id": "capacity-real"})
    assert set(before) <= {r.run_id for r in runs}
    assert out["runs"] == len(before) + len(new_points)

    small, large = out["arms"]
    assert (small["arm"], large["arm"]) == ("native/ctx=256", "native/ctx=768")
    es, el = small["estimate"], large["estimate"]
    with capsys.disabled():
        print(f"\ncapacity at ttft_p99_s<={bound} (half a generation here): "
              f"ctx 256: {es['boundary']:g} [{es['low']}, {es['high']}] in {es['runs']} runs, "
              f"ctx 768: {el['boundary']:g} [{el['low']}, {el['high']}] in {el['runs']} runs; "
              f"{out['runs']} runs in all, a grid of the same resolution {out['grid']['once']} "
              f"({out['grid']['with_repeats']} with repeats); {time.monotonic() - t0:.0f} s")  # fmt: skip
    assert small["reason"] == large["reason"] == "converged"
    # the intervals do not overlap, in fewer runs than a grid of the same resolution
    assert es["low"] is not None and es["high"] is not None and el["low"] is not None
    assert es["high"] < el["low"]
    assert out["comparisons"][0]["intervals_overlap"] is False
    assert out["runs"] < out["grid"]["once"] == 32
    # plan's prediction from each run's own KV budget: 256 // 256 = 1 and 768 // 256 = 3
    assert small["prediction"]["kv_cache_tokens"] == 256 and large["prediction"]["kv_cache_tokens"] == 768
    assert (small["prediction"]["predicted"], large["prediction"]["predicted"]) == (1, 3)
    for arm in (small, large):
        d = arm["diagnosis"]
        assert d["agrees"] or (d["why"] and any(ch.isdigit() for ch in d["why"])), d  # agree, or say why with numbers
    # the engine's own queue at the first load that missed: a request deferred for KV
    for arm in (small, large):
        first_miss = next(r for r in arm["estimate"]["rungs"] if not r["meets"])
        assert first_miss["signals"]["engine_waiting_peak"] >= 1, first_miss
    assert out["comparisons"][0]["predicted_b_over_a"] == 3.0
    assert out["sentences"] and "plan predicts 0.33x the concurrent requests" in out["sentences"][0]
    # explain on one run of each arm ends its answer with what the larger cache bought
    with open_store(store) as st:
        ok = [r for r in st.runs(where={"study_id": "capacity-real"}) if r.status == "ok"]
    small_run = next(r.run_id for r in ok if " native/ctx=256 " in f"{r.label} ")
    large_run = next(r.run_id for r in ok if " native/ctx=768 " in f"{r.label} ")
    capsys.readouterr()
    assert main(["explain", small_run, large_run, "--store", str(store), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["answer"]
    assert answer["capacity"] is not None and answer["text"].endswith(answer["capacity"])
    assert "native/ctx=768's 3.00\u00d7 larger KV cache gave 3.00\u00d7 the concurrent requests" in answer["capacity"]
