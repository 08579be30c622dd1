"""Test double for orchestration logic, never for a measurement: a KV-bound llama.cpp
server standing in for ``memgap.runner.execute_run`` in capacity searches (unit tests of
the search, its CLI and its report). The real engine is tested in
tests/integration/test_capacity_real.py.

Slots = the spec's --parallel; a request beyond them in its wave waits a generation (3 s)
and the engine reports it waiting; prefill costs ``prefill_s`` per request in flight. The
run is stored as the runner stores one: record, requests and a series with the engine's
queue, KV usage and preemption counter."""

from __future__ import annotations

from typing import Any

from memgap.load.records import RequestRecord
from memgap.spec import LlamaCppSpec, RunSpec
from memgap.store import Store

GENERATION_S = 3.0


def request(i: int, ttft_s: float) -> RequestRecord:
    return RequestRecord(i, False, 0.0, 0.0, ttft_s, (0.02,) * 7, ttft_s + 1.0, 8, 8, 64, 200, None)


class KvBoundServer:
    """``crash_at``: the point at which the process is killed (KeyboardInterrupt, nothing
    stored for it). ``specs``: every spec it ran, in order."""

    def __init__(self, crash_at: int | None = None, prefill_s: float = 0.05) -> None:
        self.specs: list[RunSpec] = []
        self.crash_at = crash_at
        self.prefill_s = prefill_s

    def __call__(self, spec: RunSpec, store: Store, *, engine: Any, **kw: Any) -> dict[str, Any]:
        if self.crash_at is not None and len(self.specs) == self.crash_at:
            raise KeyboardInterrupt
        self.specs.append(spec)
        assert isinstance(spec.engine, LlamaCppSpec)
        c, n, slots = spec.workload.concurrency, spec.workload.requests, spec.engine.parallel
        reqs = [request(i, self.prefill_s * min(c, slots) + (GENERATION_S if i % c >= slots else 0.0))
                for i in range(n)]  # fmt: skip
        waiting = float(max(0, c - slots))
        k = len(store.runs())
        record = {
            "run_id": f"run{k + 1:03d}", "created_at": f"2026-12-01T00:{k // 60:02d}:{k % 60:02d}", "status": "ok",
            "environment": spec.environment.name, "engine": "llamacpp", "model": "smol", "label": spec.label,
            "study_id": spec.study_id, "spec": spec.to_dict(), "workload": spec.workload.to_dict(),
            "workload_duration_s": 4.0, "requests_ok": n, "requests_errored": 0,
            "engine_options": {"parallel": slots, "ctx_size": spec.engine.ctx_size},
            "engine_report": {"kv_cache_tokens": spec.engine.ctx_size},
        }  # fmt: skip
        series = {"rate_hz": 1.0, "marks": {"ready": 0.0, "end": 3.0},
                  "columns": {"t_s": [0.0, 1.0, 2.0, 3.0], "requests_waiting": [0.0, waiting, waiting, 0.0],
                              "kv_usage_ratio": [0.0, min(c, slots) / slots, 0.5, 0.0],
                              "preemptions_total": [0.0, 0.0, 0.0, 0.0]}}  # fmt: skip
        store.add_run(record, requests=[r.to_dict() for r in reqs], series=series)
        return record
