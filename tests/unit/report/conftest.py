"""A store of runs with memory series built by hand (two environments, hostile names)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from memgap.memory import memory_summary
from memgap.series import COLUMNS, MemorySeries
from memgap.store import Store

MIB = 1 << 20
HOSTILE_MODEL = 'smol<script>alert("x")</script>&"m"'


def series(scale: float, n: int = 50) -> MemorySeries:
    s = MemorySeries(rate_hz=10.0)
    s.columns = {c: [None] * n for c in COLUMNS}
    s.columns["t_s"] = [i / 10 for i in range(n)]
    rss = [int((100 + 200 * (1 - math.exp(-i / 8))) * scale * MIB) for i in range(n)]
    s.columns["process_rss_bytes"] = rss
    s.columns["process_anon_bytes"] = [int(r * 0.7) for r in rss]
    s.columns["process_file_bytes"] = [int(r * 0.3) for r in rss]
    s.columns["host_used_bytes"] = [2000 * MIB + r for r in rss]
    s.columns["host_free_bytes"] = [6000 * MIB - r for r in rss]
    s.columns["host_cached_bytes"] = [1000 * MIB] * n
    s.columns["host_shmem_bytes"] = [10 * MIB] * n
    s.columns["host_available_bytes"] = [6500 * MIB - r for r in rss]
    s.marks = {"start": 0.0, "ready": 1.0, "end": (n - 1) / 10}
    s.host_total_bytes = 8000 * MIB
    return s


def add(st: Store, i: int, env: str, *, tps: float, model: str = HOSTILE_MODEL, study_id: str | None = None) -> None:
    ser = series(1.0 if env == "native" else 1.1)
    st.add_run({
        "run_id": f"{env[:3]}{i:03d}", "study_id": study_id, "created_at": f"2026-01-01T00:{i:02d}:00+00:00",
        "finished_at": f"2026-01-01T00:{i:02d}:30+00:00", "status": "ok", "failure": None,
        "environment": env, "environment_info": {"name": env}, "engine": "llamacpp",
        "engine_version": "b1 <v>", "engine_options": {"ctx_size": 8192}, "engine_command": ["llama-server", "-c", "8192"],
        "model": model, "workload": {"requests": 4}, "output_tokens_per_s": tps,
        "engine_report": {"kv_cache_bytes": 180 * MIB, "model_bytes": 98 * MIB, "compute_bytes": 20 * MIB},
        "memory": memory_summary(ser),
    }, series=ser.to_dict())


@pytest.fixture
def report_store(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    with Store(db) as st:
        for i in range(5):
            add(st, 2 * i, "native", tps=70 + i % 2)
            add(st, 2 * i + 1, "sandbox", tps=69 + i % 2)
    return db
