"""SQLite results store. Each run is written in one transaction when it ends, so a
crash mid-run loses at most that run.

Schema versions (bump ``SCHEMA_VERSION`` and list the change here; ``_migrate`` reads
every older version):
  1 -- runs, engine_logs, requests, memory_series (2026-11).
  2 -- studies (one row per experiment file: its plan and fingerprint) and study_runs
       (one row per attempt at a planned run: started / finished / interrupted, the
       run it produced, cooldown and page-cache actions) so a study can resume
       (2026-11). Version-1 stores gain the two empty tables.
  3 -- requests gain cached_prompt_tokens, finish_reason and max_tokens (every field of
       memgap.load.records.RequestRecord is stored); run records are read through
       memgap.record.load_record (upgraded, or refused when newer) (2026-12).
  4 -- capacity_searches: one row per ``memgap capacity`` search (its settings), so a
       search resumes from the store alone; its points are ordinary runs whose study_id
       is the search's id (2026-12). Older stores gain the empty table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memgap.errors import StoreError, UsageError
from memgap.record import load_record

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    study_id TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    failure TEXT,
    environment TEXT NOT NULL,
    engine TEXT NOT NULL,
    model TEXT,
    label TEXT,
    source TEXT NOT NULL DEFAULT 'memgap',
    record TEXT NOT NULL           -- the full run record (JSON), as printed by --json
);
CREATE INDEX IF NOT EXISTS runs_env ON runs (environment);
CREATE INDEX IF NOT EXISTS runs_study ON runs (study_id);
CREATE TABLE IF NOT EXISTS engine_logs (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    warmup INTEGER NOT NULL,
    scheduled_s REAL, sent_s REAL, ttft_s REAL, e2e_s REAL,
    itl_s TEXT,                    -- JSON list
    output_tokens INTEGER, output_tokens_client INTEGER, prompt_tokens INTEGER,
    http_status INTEGER, error TEXT,
    cached_prompt_tokens INTEGER, finish_reason TEXT, max_tokens INTEGER,
    PRIMARY KEY (run_id, warmup, idx)
);
CREATE TABLE IF NOT EXISTS memory_series (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id) ON DELETE CASCADE,
    series TEXT NOT NULL           -- JSON: columns, marks, watermarks (memgap.sampler.MemorySeries)
);
CREATE TABLE IF NOT EXISTS studies (
    study_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    experiment_path TEXT,
    fingerprint TEXT NOT NULL,     -- digest of the plan-relevant settings
    plan TEXT NOT NULL             -- JSON: the settings the fingerprint covers
);
CREATE TABLE IF NOT EXISTS study_runs (
    study_id TEXT NOT NULL REFERENCES studies (study_id) ON DELETE CASCADE,
    plan_index INTEGER NOT NULL,   -- position in the study's plan
    attempt INTEGER NOT NULL,      -- 1, 2, ... (an interrupted attempt is redone)
    block INTEGER NOT NULL,
    iteration INTEGER NOT NULL,
    cell TEXT NOT NULL,            -- JSON: model, environment, variant
    status TEXT NOT NULL CHECK (status IN ('started', 'finished', 'interrupted')),
    run_id TEXT,                   -- the run it produced, when there is one
    started_at TEXT NOT NULL,
    ended_at TEXT,
    note TEXT,
    actions TEXT,                  -- JSON: cooldown wait, page-cache policy applied
    PRIMARY KEY (study_id, plan_index, attempt)
);
CREATE TABLE IF NOT EXISTS capacity_searches (
    capacity_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,     -- digest of the settings
    settings TEXT NOT NULL         -- JSON: memgap.capacity.CapacitySettings.to_dict()
);
"""


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    status: str
    environment: str
    engine: str
    model: str | None
    label: str | None
    study_id: str | None
    created_at: str
    record: dict[str, Any]


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store {path}: {e}") from e
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA journal_mode = WAL")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise StoreError(f"{path} is not a memgap store (or is damaged): {e}") from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        with self._tx():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
            version = int(row["value"])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this memgap ({SCHEMA_VERSION}); upgrade memgap"
            )
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _migrate(self, from_version: int) -> None:
        if from_version not in (1, 2, 3):
            raise StoreError(f"{self.path}: no migration from schema version {from_version}")  # pragma: no cover
        with self._tx():
            # 1 -> 2 and 3 -> 4 only add tables, which _SCHEMA has just created.
            # 2 -> 3: the request fields that were not stored (None for older runs).
            have = {r["name"] for r in self.db.execute("PRAGMA table_info(requests)")}
            for column, kind in (("cached_prompt_tokens", "INTEGER"), ("finish_reason", "TEXT"),
                                 ("max_tokens", "INTEGER")):
                if column not in have:
                    self.db.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    @property
    def schema_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row["value"])

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------

    def add_run(
        self,
        record: Mapping[str, Any],
        *,
        engine_log: str | None = None,
        requests: Sequence[Mapping[str, Any]] = (),
        series: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        """Write one finished run and everything measured with it, atomically. The record
        is validated as a RunRecord first (memgap.record), so the store holds no record a
        reader would refuse."""
        run_id = record.get("run_id", "?")
        record = load_record(record, where=f"run {run_id}").to_dict()
        try:
            with self._tx():
                exists = self.db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                if exists and not force:
                    raise StoreError(f"run {run_id} is already in {self.path} (use --force to overwrite)")
                if exists:
                    self.db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                self.db.execute(
                    "INSERT INTO runs (run_id, study_id, created_at, finished_at, status, failure, environment,"
                    " engine, model, label, source, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        record.get("study_id"),
                        record["created_at"],
                        record.get("finished_at"),
                        record["status"],
                        record.get("failure"),
                        record["environment"],
                        record["engine"],
                        record.get("model"),
                        record.get("label"),
                        record.get("source", "memgap"),
                        json.dumps(record, allow_nan=False),
                    ),
                )
                if engine_log is not None:
                    self.db.execute("INSERT INTO engine_logs (run_id, text) VALUES (?, ?)", (run_id, engine_log))
                self.db.executemany(
                    "INSERT INTO requests (run_id, idx, warmup, scheduled_s, sent_s, ttft_s, e2e_s, itl_s,"
                    " output_tokens, output_tokens_client, prompt_tokens, http_status, error,"
                    " cached_prompt_tokens, finish_reason, max_tokens)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            run_id,
                            r["index"],
                            int(bool(r["warmup"])),
                            r.get("scheduled_s"),
                            r.get("sent_s"),
                            r.get("ttft_s"),
                            r.get("e2e_s"),
                            json.dumps(list(r.get("itl_s") or [])),
                            r.get("output_tokens"),
                            r.get("output_tokens_client"),
                            r.get("prompt_tokens"),
                            r.get("http_status"),
                            r.get("error"),
                            r.get("cached_prompt_tokens"),
                            r.get("finish_reason"),
                            r.get("max_tokens"),
                        )
                        for r in requests
                    ],
                )
                if series is not None:
                    self.db.execute(
                        "INSERT INTO memory_series (run_id, series) VALUES (?, ?)",
                        (run_id, json.dumps(series, allow_nan=False)),
                    )
        except sqlite3.Error as e:
            raise StoreError(f"cannot write run {run_id} to {self.path}: {e}") from e

    # -- reading -------------------------------------------------------------------------

    def runs(self, where: Mapping[str, str] | None = None) -> list[StoredRun]:
        """Runs in creation order, optionally filtered by column equality."""
        allowed = {"run_id", "study_id", "status", "environment", "engine", "model", "label", "source"}
        clauses, params = [], []
        for k, v in (where or {}).items():
            if k not in allowed:
                raise UsageError(f"cannot select runs by {k!r} (known: {', '.join(sorted(allowed))})")
            clauses.append(f"{k} = ?")
            params.append(v)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY created_at, rowid"
        return [self._row(r) for r in self.db.execute(sql, params)]

    def get(self, run_id: str) -> StoredRun:
        row = self.db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {self.path}")
        return self._row(row)

    def engine_log(self, run_id: str) -> str | None:
        row = self.db.execute("SELECT text FROM engine_logs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row["text"])

    def series(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT series FROM memory_series WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else json.loads(row["series"])

    def requests(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM requests WHERE run_id = ? ORDER BY warmup DESC, idx", (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["itl_s"] = json.loads(d["itl_s"]) if d["itl_s"] else []
            d["warmup"] = bool(d["warmup"])
            out.append(d)
        return out

    # -- studies (schema 2) ----------------------------------------------------------------

    def study(self, study_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM studies WHERE study_id = ?", (study_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["plan"] = json.loads(d["plan"])
        return d

    def add_study(self, study_id: str, *, created_at: str, experiment_path: str | None,
                  fingerprint: str, plan: Mapping[str, Any]) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO studies (study_id, created_at, experiment_path, fingerprint, plan) VALUES (?,?,?,?,?)",
                (study_id, created_at, experiment_path, fingerprint, json.dumps(plan, sort_keys=True)),
            )

    def study_runs(self, study_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM study_runs" + (" WHERE study_id = ?" if study_id else "") + \
            " ORDER BY study_id, plan_index, attempt"
        out = []
        for r in self.db.execute(sql, (study_id,) if study_id else ()):
            d = dict(r)
            d["cell"] = json.loads(d["cell"])
            d["actions"] = json.loads(d["actions"]) if d["actions"] else None
            out.append(d)
        return out

    def start_study_run(self, study_id: str, *, plan_index: int, attempt: int, block: int, iteration: int,
                        cell: Mapping[str, Any], started_at: str, actions: Mapping[str, Any] | None) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO study_runs (study_id, plan_index, attempt, block, iteration, cell, status,"
                " started_at, actions) VALUES (?,?,?,?,?,?, 'started', ?, ?)",
                (study_id, plan_index, attempt, block, iteration, json.dumps(cell, sort_keys=True),
                 started_at, json.dumps(actions) if actions is not None else None),
            )

    def end_study_run(self, study_id: str, *, plan_index: int, attempt: int, status: str,
                      run_id: str | None, ended_at: str, note: str | None = None) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE study_runs SET status = ?, run_id = ?, ended_at = ?, note = ?"
                " WHERE study_id = ? AND plan_index = ? AND attempt = ?",
                (status, run_id, ended_at, note, study_id, plan_index, attempt),
            )

    # -- capacity searches (schema 4) -----------------------------------------------------

    def add_capacity_search(self, capacity_id: str, *, created_at: str, fingerprint: str,
                            settings: Mapping[str, Any]) -> None:
        try:
            with self._tx():
                self.db.execute(
                    "INSERT INTO capacity_searches (capacity_id, created_at, fingerprint, settings) VALUES (?,?,?,?)",
                    (capacity_id, created_at, fingerprint, json.dumps(settings, sort_keys=True, allow_nan=False)),
                )
        except sqlite3.IntegrityError:
            raise UsageError(f"capacity search {capacity_id!r} already exists in {self.path}") from None

    def capacity_search(self, capacity_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM capacity_searches WHERE capacity_id = ?", (capacity_id,)).fetchone()
        if row is None:
            return None
        d = dict(row)
        d["settings"] = json.loads(d["settings"])
        return d

    def capacity_searches(self) -> list[dict[str, Any]]:
        out = []
        for r in self.db.execute("SELECT * FROM capacity_searches ORDER BY created_at, rowid"):
            d = dict(r)
            d["settings"] = json.loads(d["settings"])
            out.append(d)
        return out

    def _row(self, r: sqlite3.Row) -> StoredRun:
        record = load_record(json.loads(r["record"]), where=f"run {r['run_id']} in {self.path}").to_dict()
        return StoredRun(
            run_id=r["run_id"],
            status=r["status"],
            environment=r["environment"],
            engine=r["engine"],
            model=r["model"],
            label=r["label"],
            study_id=r["study_id"],
            created_at=r["created_at"],
            record=record,
        )


def open_store(path: Path) -> Store:
    if path.exists() and path.is_dir():
        raise UsageError(f"--store: {path} is a directory")
    if not path.parent.exists():
        raise UsageError(f"--store: folder {path.parent} does not exist")
    return Store(path)
