"""The answer paragraph and its fields: the words for sizes, the seed study's answer from
a store filled by the importer, and answer_for_records over stored records and series."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from memgap.analysis.answer import pair, signed, size
from memgap.analysis.explain import RunInput, answer_for_records, explain
from memgap.cli.main import main
from memgap.importers import blank_record
from memgap.series import COLUMNS, MemorySeries
from memgap.store import Store

GIB, MIB = 1024**3, 1024**2
REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "benchmark_spark" / "benchmark-spark-phase1-results.json"
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="fixture missing")
MINUS, ARROW = "\u2212", "\u2192"


def test_sizes_in_words() -> None:
    assert pair(int(37.26 * GIB), int(13.31 * GIB)) == f"37.3 {ARROW} 13.3 GiB ({MINUS}24.0)"
    assert pair(512 * MIB, 2 * GIB) == f"0.5 {ARROW} 2.0 GiB (+1.5)"  # the larger side's unit
    assert pair(180 * MIB, 180 * MIB, change=False) == f"180.0 {ARROW} 180.0 MiB"
    assert size(-int(0.1 * GIB)) == f"{MINUS}102.4 MiB" and size(0) == "0 B"
    assert signed(4 * GIB) == "+4.0 GiB" and signed(-4 * GIB) == f"{MINUS}4.0 GiB"


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("seed") / "s.db"
    assert main(["import", "benchmark-spark", str(REFERENCE), "--store", str(db)]) == 0
    return db


def _fixture_medians(model: str, env: str) -> tuple[int, int]:
    """(KV, peak) medians in bytes straight from the study's JSON, as explain takes them:
    each run's GiB figure rounded to bytes, the median rounded."""
    runs = json.loads(REFERENCE.read_text())["models"][model][env]
    kv = statistics.median([round(r["kv_cache"] * GIB) for r in runs if r["exit_code"] == 0])
    peak = statistics.median([round(r["peak_memory"] * GIB) for r in runs if r["exit_code"] == 0])
    return int(round(kv)), int(round(peak))


@needs_reference
def test_seed_answer_names_trtllm_rule_and_the_free_memory_it_read(seed_store: Path) -> None:
    kv_n, peak_n = _fixture_medians("deepseek", "native")
    kv_c, peak_c = _fixture_medians("deepseek", "container")
    assert (round(kv_n / GIB, 3), round(kv_c / GIB, 3)) == (44.64, 16.715)  # what the JSON holds
    assert (round(peak_n / GIB, 3), round(peak_c / GIB, 3)) == (70.11, 101.135)
    with Store(seed_store) as st:
        a = [r.record for r in st.runs({"model": "deepseek", "environment": "native", "status": "ok"})]
        b = [r.record for r in st.runs({"model": "deepseek", "environment": "container", "status": "ok"})]
    ans = answer_for_records(a, b, a_label="native", b_label="container")
    assert (ans.kv_before_bytes, ans.kv_after_bytes, ans.kv_delta_bytes) == (kv_n, kv_c, kv_c - kv_n)
    assert ans.rule == "trtllm" and ans.rule_verdict == "supported" and ans.rule_explains_kv is True
    assert ans.rule_input_delta_bytes == peak_n - peak_c  # 31.0 GiB less free memory in the container
    assert ans.carriers == () and ans.used_delta_bytes is None  # engine-level numbers only
    assert ans.text == (
        f"KV cache 44.6 {ARROW} 16.7 GiB ({MINUS}27.9). TensorRT-LLM's rule explains it: it read 31.0 GiB less free "
        f"memory when it sized the cache (used memory at profiling 70.1 {ARROW} 101.1 GiB, as the engine logged it), "
        f"and 0.90 \u00d7 that is {MINUS}27.9 GiB of KV cache. What that memory was is not in this data: both sides "
        "carry the engine's own figures only, no memory readings.")


@needs_reference
def test_seed_single_runs_use_the_default_fraction(seed_store: Path) -> None:
    """One run a side (kv 44.69 -> 16.33, peak 70.05 -> 101.56 in the JSON): the rule with
    TensorRT-LLM's default fraction, 0.9 x 31.51 GiB."""
    with Store(seed_store) as st:
        a = [st.get("bs-deepseek-native-20251109_042404").record]
        b = [st.get("bs-deepseek-container-20251109_065229").record]
    ans = answer_for_records(a, b)
    assert ans.kv_delta_bytes == round(16.33 * GIB) - round(44.69 * GIB)
    assert ans.rule_input_delta_bytes == round(70.05 * GIB) - round(101.56 * GIB)
    assert ans.text.startswith(f"KV cache 44.7 {ARROW} 16.3 GiB ({MINUS}28.4). TensorRT-LLM's rule explains it: it "
                               "read 31.5 GiB less free memory")
    assert f"0.90 \u00d7 that is {MINUS}28.4 GiB of KV cache" in ans.text


def _series(cached: int, free: int) -> dict[str, Any]:
    """A run's raw samples at start, ready and end (llama.cpp in a cgroup, 16 GiB host)."""
    s = MemorySeries(rate_hz=1.0)
    for t in (0.0, 1.0, 2.0):
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(t_s=t, host_free_bytes=free, host_cached_bytes=cached, host_shmem_bytes=8 * MIB,
                   host_available_bytes=free + cached, host_used_bytes=2 * GIB, cgroup_usage_bytes=313 * MIB,
                   cgroup_anon_bytes=213 * MIB, cgroup_file_bytes=98 * MIB, cgroup_shmem_bytes=0,
                   cgroup_file_mapped_bytes=97 * MIB, cgroup_kmem_bytes=2 * MIB, process_anon_bytes=213 * MIB,
                   process_file_bytes=110 * MIB, process_shmem_bytes=0, process_rss_bytes=323 * MIB)
        for c in COLUMNS:
            s.columns[c].append(row[c])
    s.marks = {"start": 0.0, "ready": 1.0, "end": 2.0}
    s.host_total_bytes = 16 * GIB
    return s.to_dict()


def _record(run_id: str, created: str) -> dict[str, Any]:
    rec = blank_record()
    rec.update(run_id=run_id, environment="sandbox", engine="llamacpp", model="smol", status="ok", created_at=created,
               engine_options={"mmap": True, "ctx_size": 8192}, environment_info={"cgroup_version": 1})
    rec["engine_report"].update(engine="llamacpp", kv_cache_bytes=180 * MIB, kv_cache_tokens=8192,
                                compute_bytes=17 * MIB, extra={"n_ctx": 8192},
                                evidence=["llama_kv_cache: CPU KV buffer size = 180.00 MiB"])
    rec["memory"] = {"host_total_bytes": 16 * GIB}  # no memory.at: only the series knows
    return rec


def test_answer_for_records_reads_the_stored_series(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        st.add_run(_record("a01", "2026-01-01T00:00:01"), series=_series(3 * GIB, 10 * GIB))
        st.add_run(_record("b02", "2026-01-01T00:00:02"), series=_series(7 * GIB, 6 * GIB))
        runs = st.runs()
        recs = [r.record for r in runs]
        series = [st.series(r.run_id) for r in runs]
    ans = answer_for_records(recs[:1], recs[1:], series[:1], series[1:])
    assert ans.used_delta_bytes == 4 * GIB and ans.kv_delta_bytes == 0
    assert [(c.category, c.delta_bytes, c.share) for c in ans.carriers] == [("outside_page_cache", 4 * GIB, 1.0)]
    assert ans.text.startswith("KV cache 180.0 MiB in both (no difference)")
    assert "other page cache (outside the run) +4.0 GiB (100%)" in ans.text
    # Without the series the same records carry no memory readings.
    bare = answer_for_records(recs[:1], recs[1:])
    assert bare.used_delta_bytes is None and bare.carriers == ()
    assert bare.text.endswith("What that memory was is not in this data: both sides carry the engine's own figures "
                              "only, no memory readings.")
    assert explain("A", [RunInput(recs[0], series[0])], "B", [RunInput(recs[1], series[1])]).answer == ans
    with pytest.raises(ValueError, match="1 series for 2 records"):
        answer_for_records(recs, recs, series[:1])
