from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memgap.errors import StoreError, UsageError
from memgap.store import SCHEMA_VERSION, Store, open_store


def record(run_id: str, env: str = "native", status: str = "ok", **kw: Any) -> dict[str, Any]:
    r = {
        "run_id": run_id,
        "created_at": f"2026-11-27T00:00:0{len(run_id) % 10}",
        "status": status,
        "environment": env,
        "engine": "llamacpp",
        "model": "m.gguf",
        "failure": None if status == "ok" else "boom",
        "memory": {"samples": 3},
    }
    r.update(kw)
    return r


def test_round_trip_with_log_requests_and_series(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        assert st.schema_version == SCHEMA_VERSION
        reqs = [
            {"index": 0, "warmup": True, "ttft_s": 0.1, "itl_s": [0.01], "output_tokens": 4},
            {"index": 0, "warmup": False, "ttft_s": 0.2, "itl_s": [0.02, 0.03], "output_tokens": 4, "error": None},
            {"index": 1, "warmup": False, "ttft_s": None, "itl_s": [], "output_tokens": None, "error": "timeout"},
        ]
        st.add_run(record("a1"), engine_log="log text", requests=reqs, series={"columns": {"t_s": [0.0, 0.1]}})
        st.add_run(record("b2", env="sandbox", status="failed"))
    with Store(tmp_path / "s.db") as st:
        runs = st.runs()
        assert [r.run_id for r in runs] == ["a1", "b2"]
        assert st.get("b2").status == "failed" and st.get("b2").record["failure"] == "boom"
        assert st.engine_log("a1") == "log text" and st.engine_log("b2") is None
        got = st.requests("a1")
        assert [(q["warmup"], q["idx"]) for q in got] == [(True, 0), (False, 0), (False, 1)]
        assert got[1]["itl_s"] == [0.02, 0.03] and got[2]["error"] == "timeout" and got[2]["ttft_s"] is None
        assert st.series("a1") == {"columns": {"t_s": [0.0, 0.1]}}
        assert [r.run_id for r in st.runs({"environment": "sandbox"})] == ["b2"]


def test_duplicate_run_refused_without_force_and_nothing_half_written(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        st.add_run(record("a1"), engine_log="first")
        with pytest.raises(StoreError, match="already in"):
            st.add_run(record("a1"), engine_log="second")
        assert st.engine_log("a1") == "first"
        st.add_run(record("a1", label="again"), engine_log="second", force=True)
        assert st.get("a1").record["label"] == "again" and st.engine_log("a1") == "second"


def test_failed_write_rolls_back_whole_run(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        # NaN is not JSON: the series insert fails after the run row was inserted
        with pytest.raises(ValueError):
            st.add_run(record("a1"), engine_log="x", series={"v": float("nan")})
        assert st.runs() == []
        assert st.engine_log("a1") is None


def test_newer_schema_refused(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    Store(p).close()
    db = sqlite3.connect(p)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this memgap"):
        Store(p)


def test_not_a_store(tmp_path: Path) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match="not a memgap store"):
        Store(p)
    with pytest.raises(UsageError, match="is a directory"):
        open_store(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        open_store(tmp_path / "nope" / "s.db")


def test_unknown_selector_key(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st, pytest.raises(UsageError, match="cannot select runs by 'colour'"):
        st.runs({"colour": "red"})


def test_record_is_stored_verbatim(tmp_path: Path) -> None:
    r = record("a1", memory={"samples": 3, "at": {"ready": {"t_s": 1.5, "x": None}}})
    with Store(tmp_path / "s.db") as st:
        st.add_run(r)
        assert st.get("a1").record == json.loads(json.dumps(r))
