"""A sweep's curves, from the store alone (pure but for the store's reads): each stored run
of a sweep back as one point's row (throughput, goodput under the sweep's SLO, latencies,
the engine's own queue from its /metrics), one curve per KV budget, where the curves of
the smallest and largest budget part, and where throughput stops scaling.
``memgap.sweep`` plans and runs the points; this module only reads what they stored."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memgap.load.records import RequestRecord
from memgap.load.slo import SLO, Goodput, goodput, parse_slo
from memgap.nested import value_at
from memgap.store import Store


@dataclass(frozen=True)
class SweepPoint:
    concurrency: int
    request_rate_per_s: float | None = None
    ctx_size: int | None = None  # the engine's KV budget in tokens; None: the engine's own

    @property
    def load(self) -> float:
        """The x of the curves: the rate in rate sweeps, the concurrency otherwise."""
        return self.request_rate_per_s if self.request_rate_per_s is not None else float(self.concurrency)

    @property
    def label(self) -> str:
        parts = [f"c={self.concurrency}"]
        if self.request_rate_per_s is not None:
            parts.append(f"rate={self.request_rate_per_s:g}")
        if self.ctx_size is not None:
            parts.append(f"ctx={self.ctx_size}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "request_rate_per_s": self.request_rate_per_s, "ctx_size": self.ctx_size}



# -- one point's row ------------------------------------------------------------------------


def request_from_row(row: Mapping[str, Any]) -> RequestRecord:
    """A stored request row (``Store.requests``) back as a RequestRecord."""
    return RequestRecord(
        index=int(row.get("idx", row.get("index", 0))),
        warmup=bool(row["warmup"]),
        scheduled_s=float(row["scheduled_s"] or 0.0),
        sent_s=float(row["sent_s"] or 0.0),
        ttft_s=row.get("ttft_s"),
        itl_s=tuple(row.get("itl_s") or ()),
        e2e_s=row.get("e2e_s"),
        output_tokens=row.get("output_tokens"),
        output_tokens_client=int(row.get("output_tokens_client") or 0),
        prompt_tokens=row.get("prompt_tokens"),
        http_status=row.get("http_status"),
        error=row.get("error"),
        cached_prompt_tokens=row.get("cached_prompt_tokens"),
        finish_reason=row.get("finish_reason"),
        max_tokens=row.get("max_tokens"),
    )


def _window(series: Mapping[str, Any] | None, column: str) -> list[float]:
    """Non-missing values of ``column`` between the ready and end marks (the workload)."""
    if not series:
        return []
    cols = series.get("columns", {})
    ts, vals = cols.get("t_s", []), cols.get(column, [])
    marks = series.get("marks", {})
    lo, hi = marks.get("ready", -math.inf), marks.get("end", math.inf)
    return [float(v) for t, v in zip(ts, vals, strict=False) if v is not None and lo <= t <= hi]


def point_row(
    point: SweepPoint,
    record: Mapping[str, Any],
    requests: Sequence[RequestRecord],
    series: Mapping[str, Any] | None,
    slo: SLO,
) -> dict[str, Any]:
    """What the curves plot for one run (JSON-ready; unknown is None)."""
    duration = record.get("workload_duration_s")
    g: Goodput | None = goodput(requests, slo, duration) if duration else None
    waiting = _window(series, "requests_waiting")
    running = _window(series, "requests_running")
    kv = _window(series, "kv_usage_ratio")
    return {
        **point.to_dict(),
        "load": point.load,
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "failure": record.get("failure"),
        "parallel": value_at(record, "engine_options.parallel"),
        "kv_cache_tokens": value_at(record, "engine_report.kv_cache_tokens"),
        "kv_cache_bytes": value_at(record, "engine_report.kv_cache_bytes"),
        "requests_ok": record.get("requests_ok"),
        "requests_errored": record.get("requests_errored"),
        "errors_by_kind": record.get("errors_by_kind") or {},
        "output_tokens_per_s": record.get("output_tokens_per_s"),
        "request_throughput_per_s": record.get("request_throughput_per_s"),
        "goodput_per_s": g.goodput_per_s if g else None,
        "slo_met_fraction": g.met_fraction if g else None,
        "slo_missed_by": dict(g.missed_by) if g else {},
        "ttft_p50_s": value_at(record, "ttft_s.p50"),
        "ttft_p99_s": value_at(record, "ttft_s.p99"),
        "itl_p50_s": value_at(record, "itl_s.p50"),
        "e2e_p50_s": value_at(record, "e2e_s.p50"),
        "e2e_p99_s": value_at(record, "e2e_s.p99"),
        "queue_delay_p50_s": value_at(record, "queue_delay_s.p50"),
        # the engine's own queue: llamacpp:requests_deferred, vllm:num_requests_waiting, ...
        "engine_waiting_peak": max(waiting) if waiting else None,
        "engine_waiting_mean": sum(waiting) / len(waiting) if waiting else None,
        "engine_running_peak": max(running) if running else None,
        "kv_usage_peak": max(kv) if kv else None,
    }


# -- curves ---------------------------------------------------------------------------------


def curves(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[int | None, list[tuple[float, float | None]]]:
    """``{ctx_size: [(load, value), ...]}`` sorted by load: one curve per KV budget."""
    out: dict[int | None, list[tuple[float, float | None]]] = {}
    for r in rows:
        out.setdefault(r.get("ctx_size"), []).append((float(r["load"]), r.get(metric)))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in out.items()}


def _apart(a: float | None, b: float | None, rel_tol: float) -> bool | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        return True  # one side failed outright: as apart as can be
    scale = max(abs(a), abs(b))
    return scale > 0 and abs(a - b) / scale > rel_tol


def parting_point(
    a: Sequence[tuple[float, float | None]], b: Sequence[tuple[float, float | None]], rel_tol: float = 0.2
) -> float | None:
    """The smallest load from which the two curves stay more than ``rel_tol`` apart
    (relative to the larger value), the same one ahead, at every load both measured; None
    if they never part. Requiring them to stay apart on the same side keeps one noisy
    point from being called the knee."""
    bmap = dict(b)
    common = [(x, y, bmap[x]) for x, y in a if x in bmap]
    knee = None
    side = None
    for x, ya, yb in reversed(common):
        apart = _apart(ya, yb, rel_tol)
        if apart is None:
            continue
        here = None if ya is None or yb is None else ya > yb
        if not apart or (side is not None and here is not None and here != side):
            break
        side = here if here is not None else side
        knee = x
    return knee


def saturation_point(curve: Sequence[tuple[float, float | None]], efficiency: float = 0.25) -> float | None:
    """The last load up to which throughput still scaled: the load before the first step
    whose relative gain is below ``efficiency`` times its relative load increase. None
    when it scaled all the way (or there are fewer than two measured points)."""
    pts = [(x, y) for x, y in curve if y is not None]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= 0 or y0 <= 0:
            continue
        if (y1 / y0 - 1) < efficiency * (x1 / x0 - 1):
            return x0
    return None


def knees(rows: Sequence[Mapping[str, Any]], rel_tol: float = 0.2) -> dict[str, Any]:
    """Where the smallest and largest KV budget's curves part, per metric, and where each
    budget's throughput stops scaling."""
    tput = curves(rows, "output_tokens_per_s")
    out: dict[str, Any] = {
        "saturation": {str(k): saturation_point(v) for k, v in tput.items()},
        "parting": {},
    }
    budgets = sorted(k for k in tput if k is not None)
    if len(budgets) >= 2:
        lo, hi = budgets[0], budgets[-1]
        out["compared"] = [lo, hi]
        for metric in ("output_tokens_per_s", "goodput_per_s", "ttft_p50_s", "e2e_p50_s", "engine_waiting_peak"):
            c = curves(rows, metric)
            out["parting"][metric] = parting_point(c[lo], c[hi], rel_tol)
    return out


def point_of(record: Mapping[str, Any]) -> SweepPoint:
    """The sweep point a stored run was made at, read back from its record."""
    w = record.get("workload") or {}
    ctx = value_at(record, "engine_options.ctx_size")
    return SweepPoint(int(w.get("concurrency") or 1), w.get("request_rate_per_s"), ctx if isinstance(ctx, int) else None)


def sweeps_in_store(store: Store, runs: Sequence[Any], slo: SLO | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{sweep_id: rows}`` for the runs (``StoredRun``) that belong to a sweep, in run order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        sid = r.study_id
        if not (isinstance(sid, str) and sid.startswith("sweep-")):
            continue
        requests = [request_from_row(x) for x in store.requests(r.run_id)]
        # The sweep's SLO is stored with each run (its spec); one given here overrides it.
        stored = (r.record.get("spec") or {}).get("slo") or ""
        run_slo = slo if slo is not None else parse_slo(stored)
        out.setdefault(sid, []).append(point_row(point_of(r.record), r.record, requests, store.series(r.run_id), run_slo))
    return out


def sweep_results(store: Store, runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Each sweep among the runs as a report shows it: its rows, its knees and the SLO its
    runs were made under (stored in each run's spec; goodput's knee only with an SLO)."""
    out = []
    for sid, rows in sweeps_in_store(store, runs).items():
        slo_text = next((str((r.record.get("spec") or {}).get("slo") or "") for r in runs if r.study_id == sid), "")
        k = knees(rows)
        if not slo_text:
            k.get("parting", {}).pop("goodput_per_s", None)  # no SLO: goodput would only repeat throughput
        out.append({"sweep_id": sid, "points": rows, "knees": k, "slo_text": slo_text})
    return out
