from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memgap.errors import StoreError, UsageError
from memgap.record import RECORD_VERSION
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


def test_record_keeps_every_value_and_gains_the_models_defaults(tmp_path: Path) -> None:
    r = record("a1", memory={"samples": 3, "at": {"ready": {"t_s": 1.5, "x": None}}})
    with Store(tmp_path / "s.db") as st:
        st.add_run(r)
        got = st.get("a1").record
    for key, value in json.loads(json.dumps(r)).items():
        if key == "memory":  # an open section: its own keys kept verbatim, the model's added as None
            assert got["memory"]["at"] == value["at"] and got["memory"]["samples"] == 3
            assert got["memory"]["host_used_peak_bytes"] is None
        else:
            assert got[key] == value, key
    assert got["record_version"] == RECORD_VERSION and got["spec"] is None


def test_version_one_record_is_upgraded_and_a_future_one_refused(tmp_path: Path) -> None:
    import sqlite3

    old = {"record_version": 1, "run_id": "v1", "created_at": "2026-11-01T00:00:00", "status": "ok",
           "environment": "native", "engine": "llamacpp", "engine_report": {"kv_cache_bytes": 5}}
    future = {**old, "run_id": "v9", "record_version": RECORD_VERSION + 1}
    db = tmp_path / "s.db"
    with Store(db) as st:
        st.add_run(old)
    # written as the previous memgap wrote it (verbatim JSON), then read back
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET record = ? WHERE run_id = 'v1'", (json.dumps(old),))
    con.execute("INSERT INTO runs (run_id, created_at, status, environment, engine, record) VALUES (?,?,?,?,?,?)",
                ("v9", old["created_at"], "ok", "native", "llamacpp", json.dumps(future)))
    con.commit()
    con.close()
    with Store(db) as st:
        rec = st.get("v1").record
        assert rec["record_version"] == RECORD_VERSION and rec["spec"] is None
        assert rec["engine_report"]["kv_cache_bytes"] == 5
        with pytest.raises(StoreError, match=f"record version {RECORD_VERSION + 1} is newer than this memgap"):
            st.get("v9")
        with pytest.raises(StoreError, match="newer"):
            st.add_run(future)


def test_schema_two_store_gains_the_request_fields(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "v2.db"
    with Store(db) as st:
        st.add_run(record("r1"), requests=[{"index": 0, "warmup": False, "finish_reason": "length",
                                            "cached_prompt_tokens": 7, "max_tokens": 16}])
        assert st.requests("r1")[0]["finish_reason"] == "length"
        assert st.requests("r1")[0]["cached_prompt_tokens"] == 7 and st.requests("r1")[0]["max_tokens"] == 16
    con = sqlite3.connect(db)  # make it a schema-2 store: the requests table without the three columns
    con.executescript(
        "CREATE TABLE r2 AS SELECT run_id, idx, warmup, scheduled_s, sent_s, ttft_s, e2e_s, itl_s, output_tokens,"
        " output_tokens_client, prompt_tokens, http_status, error FROM requests; DROP TABLE requests;"
        " ALTER TABLE r2 RENAME TO requests; UPDATE meta SET value = '2' WHERE key = 'schema_version';")
    con.close()
    with Store(db) as st:
        assert st.schema_version == SCHEMA_VERSION
        row = st.requests("r1")[0]
        assert row["finish_reason"] is None and row["max_tokens"] is None  # not stored then: unknown


def test_capacity_searches_are_stored_once_and_a_schema_three_store_gains_the_table(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    with Store(db) as st:
        st.add_run(record("r1"))
    con = sqlite3.connect(db)  # a schema-3 store: no capacity_searches table
    con.executescript("DROP TABLE capacity_searches; UPDATE meta SET value = '3' WHERE key = 'schema_version';")
    con.close()
    with Store(db) as st:
        assert st.schema_version == SCHEMA_VERSION == 4
        assert st.capacity_searches() == [] and st.capacity_search("capacity-x") is None
        st.add_capacity_search("capacity-x", created_at="2026-12-01T00:00:00", fingerprint="f1",
                               settings={"slo": "ttft_p99_s<=2", "arms": [{"name": "a"}]})
        with pytest.raises(UsageError, match="already exists"):
            st.add_capacity_search("capacity-x", created_at="2026-12-01T00:00:01", fingerprint="f2", settings={})
        got = st.capacity_search("capacity-x")
        assert got is not None and got["fingerprint"] == "f1" and got["settings"]["arms"] == [{"name": "a"}]
        assert [c["capacity_id"] for c in st.capacity_searches()] == ["capacity-x"]
        assert st.get("r1").run_id == "r1"
