"""trtllm-log importer: one run per log, into the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from memgap import importers
from memgap.importers import RECORD_KEYS, import_files
from memgap.importers.trtllm_log import environment_from_path, parse
from memgap.store import open_store

GiB = 1 << 30
LOG = Path(__file__).parents[2] / "fixtures" / "logs" / "native" / "trtllm-bench-deepseek.log"


def test_rebuilt_seed_run() -> None:
    (run,) = parse(LOG.read_text(), origin=str(LOG))
    rec = run.record
    assert set(RECORD_KEYS) <= set(rec)
    assert rec["environment"] == "native" and rec["engine"] == "trtllm"
    assert rec["status"] == "ok" and rec["failure"] is None
    assert rec["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert rec["engine_version"] == "1.1.0rc2"
    assert rec["created_at"] == "2025-11-09T04:24:04"
    assert rec["request_throughput_per_s"] == pytest.approx(0.9308)
    assert rec["output_tokens_per_s"] == pytest.approx(119.1443)
    rep = rec["engine_report"]
    assert rep["peak_bytes"] == round(70.05 * GiB)
    assert rep["kv_cache_bytes"] == round(44.68 * GiB)
    assert rep["extra"]["kv_available_bytes"] == round(44.69 * GiB)
    assert rep["kv_fraction"] == pytest.approx(0.9)
    assert rep["device_total_bytes"] == round(119.64 * GiB)
    assert run.engine_log == LOG.read_text()
    # the same content gives the same id
    assert parse(LOG.read_text(), origin=str(LOG))[0].record["run_id"] == rec["run_id"]


def test_unfinished_and_oom_logs_are_failed_runs() -> None:
    head = "\n".join(LOG.read_text().splitlines()[:8])
    (run,) = parse(head, origin="/x/docker/run3.log")
    assert run.record["status"] == "failed" and "did not finish" in run.record["failure"]
    assert run.record["environment"] == "docker"
    assert run.record["engine_report"]["peak_bytes"] == round(70.05 * GiB)
    (oom,) = parse(head + "\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                   origin="oom.log")
    assert "out of memory" in oom.record["failure"] and oom.record["environment"] == "unknown"
    (blank,) = parse("", origin="empty.log")
    assert blank.record["created_at"] == "" and blank.record["source_info"]["created_at_unknown"] is True


@pytest.mark.parametrize(("path", "env"), [
    ("/runs/native/a.log", "native"), ("/runs/deepseek-container-3.log", "container"),
    ("podman_run.log", "podman"), ("/data/run.log", "unknown"), ("/nativex/a.log", "unknown"),
])
def test_environment_from_path(path: str, env: str) -> None:
    assert environment_from_path(path) == env


def test_into_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered in memgap.importers.IMPORTERS by the registry's owner; registered here
    # the same way so the test does not depend on it.
    monkeypatch.setitem(importers.IMPORTERS, "trtllm-log", "memgap.importers.trtllm_log")
    with open_store(tmp_path / "m.db") as st:
        summary = import_files(st, "trtllm-log", [LOG])
        assert len(summary.added) == 1
        stored = st.get(summary.added[0])
        assert stored.environment == "native" and stored.engine == "trtllm"
        assert st.engine_log(summary.added[0]) == LOG.read_text()
        again = import_files(st, "trtllm-log", [LOG], skip_existing=True)
        assert again.skipped == summary.added
