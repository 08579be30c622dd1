"""``memgap sweep`` on the real llama.cpp server: two KV budgets 3x apart, and the engine's
own queue showing where the smaller one runs out.

256 tokens per request (prompt 192 + output 64): --ctx-size 1024 holds 4 requests' KV
(4 slots of 256 cells), 3072 holds 12. At concurrency 4 both serve everything at once; at
8 the small budget defers 4 requests (llamacpp:requests_deferred) until others finish, so
its slowest first tokens wait for a whole generation. One request wave per point
(requests = concurrency) keeps this to about a minute and a half on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.store import open_store

pytestmark = pytest.mark.integration


def test_small_kv_budget_queues_earlier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_leftovers: None
) -> None:
    store, html = tmp_path / "sweep.db", tmp_path / "sweep.html"
    rc = main([
        "sweep", "--concurrency", "4,8", "--ctx-size", "1024", "--ctx-size", "3072",
        "--prompt-tokens", "192", "--output-tokens", "64", "--requests-per-concurrency", "1",
        "--warmup", "1", "--threads", "1", "--slo", "ttft_s=60", "--store", str(store),
        "--html", str(html), "--json",
    ])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    out = json.loads(cap.out)
    rows = {(r["concurrency"], r["ctx_size"]): r for r in out["points"]}
    assert set(rows) == {(4, 1024), (4, 3072), (8, 1024), (8, 3072)}
    for key, r in rows.items():
        assert r["status"] == "ok", (key, r["failure"])
        assert r["requests_errored"] == 0 and r["requests_ok"] == key[0], (key, r["errors_by_kind"])
    # the engine allocated what was asked: 3x apart, one 256-cell slot per request
    assert rows[(4, 1024)]["kv_cache_tokens"] == 1024 and rows[(4, 3072)]["kv_cache_tokens"] == 3072
    assert rows[(4, 1024)]["parallel"] == 4 and rows[(4, 3072)]["parallel"] == 12
    # the engine's queue: nobody waits at 4; at 8 only the small budget defers requests
    assert rows[(4, 1024)]["engine_waiting_peak"] == 0 and rows[(4, 3072)]["engine_waiting_peak"] == 0
    assert rows[(8, 1024)]["engine_waiting_peak"] >= 1
    assert rows[(8, 3072)]["engine_waiting_peak"] == 0
    # ... and the client sees it: the deferred requests' first token waits for a whole
    # generation of 64 tokens (prefill of the big budget's 8 prompts is shared, not queued)
    small, large = rows[(8, 1024)], rows[(8, 3072)]
    assert small["ttft_p99_s"] > large["ttft_p99_s"], (small["ttft_p99_s"], large["ttft_p99_s"])
    assert out["knees"]["parting"]["engine_waiting_peak"] == 8.0
    assert all(r["slo_met_fraction"] == 1.0 for r in out["points"])  # a 60 s TTFT bound: goodput = throughput
    page = html.read_text()
    assert page.count("<svg") >= 5 and "ctx 1024 (4 slots)" in page and "ctx 3072 (12 slots)" in page
    with open_store(store) as st:
        runs = st.runs(where={"study_id": out["sweep_id"]})
    assert len(runs) == 4 and all(r.label and r.label.startswith(out["sweep_id"]) for r in runs)
