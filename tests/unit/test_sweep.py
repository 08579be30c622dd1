"""Sweep planning, rows, knees and the saturation search, with a fake engine run that
behaves like a KV-limited server (slots = ctx // tokens per request)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memgap.analysis.sweep_curves import (
    SweepPoint,
    knees,
    parting_point,
    point_row,
    request_from_row,
    saturation_point,
    sweeps_in_store,
)
from memgap.errors import UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import SLO
from memgap.load.spec import WorkloadSpec
from memgap.spec import LlamaCppSpec, RunSpec
from memgap.store import Store, open_store
from memgap.sweep import (
    SweepSettings,
    fit_parallel,
    parse_list,
    plan_points,
    run_sweep,
    saturation_search,
    search_saturation,
    tokens_per_request,
    workload_for,
)


def test_plan_is_load_major_with_budgets_interleaved() -> None:
    pts = plan_points([4, 1, 2, 2], ctx_sizes=[2048, 6144, 2048])
    assert [(p.concurrency, p.ctx_size) for p in pts] == [
        (1, 2048), (1, 6144), (2, 2048), (2, 6144), (4, 2048), (4, 6144)
    ]  # fmt: skip
    assert pts[0].label == "c=1 ctx=2048" and pts[0].load == 1.0
    rates = plan_points([1, 8], rates=[2.0, 0.5])
    assert [(p.concurrency, p.request_rate_per_s, p.ctx_size) for p in rates] == [(8, 0.5, None), (8, 2.0, None)]
    assert rates[0].label == "c=8 rate=0.5" and rates[0].load == 0.5


@pytest.mark.parametrize(
    "kwargs", [{"concurrency": []}, {"concurrency": [0]}, {"concurrency": [1], "rates": [0.0]},
               {"concurrency": [1], "ctx_sizes": [0]}, {"concurrency": [1], "rates": [math.nan]}],
)  # fmt: skip
def test_plan_refuses_bad_points(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        plan_points(**kwargs)


def test_parse_list_and_fit() -> None:
    assert parse_list("1, 2,4,", int, "--concurrency") == [1, 2, 4]
    assert parse_list("0.5,2", float, "--rate") == [0.5, 2.0]
    for bad in ("", "1,x", ","):
        with pytest.raises(UsageError):
            parse_list(bad, int, "--concurrency")
    spec = WorkloadSpec(prompt_tokens=200, output_tokens=64)
    assert tokens_per_request(spec) == 264
    assert tokens_per_request(WorkloadSpec(prompt_tokens=10, prompt_tokens_max=30, output_tokens=5, output_tokens_max=9)) == 39
    assert fit_parallel(2048, 264) == 7 and fit_parallel(6144, 264) == 23
    with pytest.raises(UsageError, match="holds no request"):
        fit_parallel(100, 264)


def test_workload_for_scales_requests_with_concurrency() -> None:
    base = WorkloadSpec(requests=5, seed=3)
    w = workload_for(SweepPoint(8, None, 2048), base, None)
    assert (w.concurrency, w.requests, w.request_rate_per_s, w.seed) == (8, 24, None, 3)
    assert workload_for(SweepPoint(1), base, None).requests == 4
    assert workload_for(SweepPoint(2, 1.5), base, 10).requests == 10
    assert workload_for(SweepPoint(2, 1.5), base, 10).request_rate_per_s == 1.5


def rec(i: int, ttft: float, e2e: float, *, error: str | None = None, tokens: int = 8) -> RequestRecord:
    return RequestRecord(i, False, float(i), float(i), ttft, (0.01,) * (tokens - 1), e2e, tokens, tokens, 20,
                         200 if error is None else 500, error)  # fmt: skip


def test_request_rows_from_the_store_round_trip(tmp_path: Path) -> None:
    r = rec(3, 0.25, 1.5)
    with open_store(tmp_path / "s.db") as st:
        st.add_run(fake_record("r1", 1, 1.0), requests=[r.to_dict()])
        back = [request_from_row(x) for x in st.requests("r1")]
    assert back == [r]


def series(waiting: list[float | None], marks: tuple[float, float] = (1.0, 3.0)) -> dict[str, Any]:
    ts = [float(i) for i in range(len(waiting))]
    return {"rate_hz": 1.0, "columns": {"t_s": ts, "requests_waiting": waiting, "requests_running": [2.0] * len(ts),
            "kv_usage_ratio": [None] * len(ts)}, "marks": {"ready": marks[0], "end": marks[1]}}  # fmt: skip


def test_point_row_joins_record_goodput_and_engine_queue() -> None:
    record = fake_record("r1", 4, 2.0)
    reqs = [rec(0, 0.1, 1.0), rec(1, 0.9, 1.2), rec(2, 0.2, 3.0), rec(3, 0.1, 0.5, error="http 500: full")]
    # the engine queue is read between the ready and end marks: the 9 before ready and 7 after end are not
    row = point_row(SweepPoint(4, None, 2048), record, reqs, series([9.0, 0.0, 3.0, 1.0, 7.0]), SLO(ttft_s=0.5, e2e_s=2.0))
    assert row["goodput_per_s"] == pytest.approx(0.5)  # 1 of 4 met, over 2 s
    assert row["slo_met_fraction"] == pytest.approx(0.25)
    assert row["slo_missed_by"] == {"e2e_s": 1, "error": 1, "ttft_s": 1}
    assert row["engine_waiting_peak"] == 3.0 and row["engine_waiting_mean"] == pytest.approx(4 / 3)
    assert row["engine_running_peak"] == 2.0 and row["kv_usage_peak"] is None
    assert (row["ctx_size"], row["load"], row["parallel"], row["kv_cache_tokens"]) == (2048, 4.0, 7, 2048)
    assert row["output_tokens_per_s"] == 16.0 and row["ttft_p50_s"] == 0.3
    none = point_row(SweepPoint(1), {"run_id": "x", "status": "failed"}, [], None, SLO())
    assert none["goodput_per_s"] is None and none["engine_waiting_peak"] is None


def test_parting_point_needs_curves_to_stay_apart() -> None:
    xs = [1.0, 2.0, 4.0, 8.0, 16.0]
    small = list(zip(xs, [10, 20, 40, 42, 43], strict=True))
    large = list(zip(xs, [10, 21, 41, 80, 120], strict=True))
    assert parting_point(small, large) == 8.0
    # a single noisy point early does not count: they came back together at 4
    noisy = list(zip(xs, [10, 30, 41, 80, 120], strict=True))
    assert parting_point(small, noisy) == 8.0
    assert parting_point(small, small) is None
    # apart at 4 but the other way round: the knee is where they part for good
    flipped = list(zip(xs, [10, 20, 25, 80, 120], strict=True))
    assert parting_point(small, flipped) == 8.0
    failed: list[tuple[float, float | None]] = [(1.0, 10.0), (2.0, 20.0), (4.0, None)]
    assert parting_point(failed, [(1.0, 10.0), (2.0, 20.0), (4.0, 39.0)]) == 4.0  # one side failed
    assert parting_point([(1.0, None)], [(1.0, None)]) is None


def test_saturation_point_is_where_throughput_stops_scaling() -> None:
    assert saturation_point([(1, 10), (2, 19), (4, 37), (8, 40), (16, 41)]) == 4
    assert saturation_point([(1, 10), (2, 20), (4, 40)]) is None
    assert saturation_point([(1, 10), (2, None), (4, 11)]) == 1  # a failed point is skipped
    assert saturation_point([(1, 10)]) is None


def test_saturation_search_bisects_to_the_threshold() -> None:
    tried: list[float] = []

    def measure(rate: float) -> tuple[bool, dict[str, Any]]:
        tried.append(rate)
        return rate <= 3.0, {"met_fraction": 1.0 if rate <= 3.0 else 0.5}

    res = saturation_search(measure, 0.5, 16.0, steps=6)
    assert res.bounded and res.best_rate_per_s is not None
    assert 3.0 / 1.25 < res.best_rate_per_s <= 3.0
    assert tried[:2] == [16.0, 0.5] and len(tried) == 8
    assert res.to_dict()["trials"][0] == {"rate_per_s": 16.0, "meets": False, "met_fraction": 0.5}
    easy = saturation_search(lambda r: (True, {}), 0.5, 16.0, steps=4)
    assert easy.best_rate_per_s == 16.0 and not easy.bounded and len(easy.trials) == 1
    hard = saturation_search(lambda r: (False, {}), 0.5, 16.0, steps=4)
    assert hard.best_rate_per_s is None and len(hard.trials) == 2
    with pytest.raises(UsageError):
        saturation_search(measure, 2.0, 1.0, steps=2)


# -- a fake run that behaves like a KV-limited engine ---------------------------------------


class FakeEngine:
    def __init__(self, ctx: int, per_request: int) -> None:
        self.ctx = ctx
        self.slots = ctx // per_request


def fake_record(run_id: str, n_ok: int, duration: float, **kw: Any) -> dict[str, Any]:
    return {
        "run_id": run_id, "created_at": "2026-11-27T00:00:00", "status": "ok", "environment": "native",
        "engine": "fake", "workload_duration_s": duration, "requests_ok": n_ok, "requests_errored": 0,
        "output_tokens_per_s": n_ok * 8 / duration, "request_throughput_per_s": n_ok / duration,
        "ttft_s": {"p50": 0.3}, "engine_options": {"parallel": 7}, "engine_report": {"kv_cache_tokens": 2048}, **kw,
    }  # fmt: skip


class FakeExecute:
    """Each slot serves one request per second; a request beyond the slots waits a turn."""

    def __init__(self) -> None:
        self.configs: list[RunSpec] = []

    def __call__(self, cfg: RunSpec, store: Store, *, engine: FakeEngine, **kw: Any) -> dict[str, Any]:
        self.configs.append(cfg)
        c, n = cfg.workload.concurrency, cfg.workload.requests
        if cfg.workload.request_rate_per_s is not None:
            c = max(1, math.ceil(cfg.workload.request_rate_per_s))  # rate stands for load
        turns = math.ceil(c / engine.slots)
        reqs = [rec(i, 0.1 + (turns - 1) * 1.0, 1.0 * turns) for i in range(n)]
        duration = n / min(c, engine.slots)
        run_id = f"run{len(self.configs)}"
        waiting = float(max(0, c - engine.slots))
        record = fake_record(run_id, n, duration, label=cfg.label, study_id=cfg.study_id, spec=cfg.to_dict(),
                             engine_options={"parallel": engine.slots, "ctx_size": engine.ctx})  # fmt: skip
        store.add_run(record, requests=[r.to_dict() for r in reqs], series=series([0.0, waiting, waiting, 0.0]))
        return record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "sweep.db") as st:
        yield st


def test_run_sweep_stores_each_point_and_finds_the_knee(store: Store) -> None:
    base = RunSpec(workload=WorkloadSpec(prompt_tokens=200, output_tokens=56))
    per = tokens_per_request(base.workload)
    settings = SweepSettings(base=base, slo=SLO(ttft_s=0.5), sweep_id="sweep-test")
    execute = FakeExecute()
    seen: list[dict[str, Any]] = []
    points = plan_points([1, 2, 4, 8, 16], ctx_sizes=[2048, 6144])
    rows = run_sweep(points, settings, lambda p: base.replace(engine=LlamaCppSpec(ctx_size=p.ctx_size or 1)), store,
                     on_row=seen.append, execute=execute, make=lambda s: FakeEngine(s.engine.ctx_size, per))  # fmt: skip
    assert seen == rows and len(rows) == 10
    stored = store.runs(where={"study_id": "sweep-test"})
    assert len(stored) == 10 and stored[0].label == "sweep-test c=1 ctx=2048"
    assert [c.workload.concurrency for c in execute.configs] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16]
    assert execute.configs[-1].workload.requests == 48
    by = {(r["concurrency"], r["ctx_size"]): r for r in rows}
    # 2048 cells hold 8 requests of 256 tokens, 6144 hold 24
    assert by[(8, 2048)]["engine_waiting_peak"] == 0.0 and by[(16, 2048)]["engine_waiting_peak"] == 8.0
    assert by[(16, 6144)]["engine_waiting_peak"] == 0.0
    assert by[(16, 2048)]["goodput_per_s"] == 0.0 and by[(16, 6144)]["goodput_per_s"] > 0
    k = knees(rows)
    assert k["compared"] == [2048, 6144]
    assert k["parting"]["output_tokens_per_s"] == 16.0
    assert k["parting"]["ttft_p50_s"] is None  # the fake's record TTFT is flat; the goodput is not
    assert k["parting"]["goodput_per_s"] == 16.0
    assert k["saturation"] == {"2048": 8.0, "6144": None}
    # the sweep's SLO travels with each run's spec: the report rebuilds the curves from the store alone
    rebuilt = sweeps_in_store(store, store.runs(where={"study_id": "sweep-test"}))["sweep-test"]
    assert [r["goodput_per_s"] for r in rebuilt] == [r["goodput_per_s"] for r in rows]
    assert by[(16, 6144)]["goodput_per_s"] is not None


def test_search_saturation_runs_until_the_slo_breaks(store: Store) -> None:
    base = RunSpec(workload=WorkloadSpec(prompt_tokens=200, output_tokens=56, requests=4))
    settings = SweepSettings(base=base, slo=SLO(ttft_s=0.5), sweep_id="sweep-sat")
    execute = FakeExecute()
    res, rows = search_saturation(
        settings, lambda p: base, store, concurrency=8, ctx_size=1024,
        lo=0.5, hi=16.0, steps=4, attainment=0.9, execute=execute, make=lambda s: FakeEngine(1024, 256),
    )  # 4 slots: a rate above 4 (load ceil(rate)) misses the TTFT objective
    assert res.bounded and res.best_rate_per_s is not None and 3.0 <= res.best_rate_per_s <= 4.0
    assert len(rows) == 6 == len(store.runs(where={"study_id": "sweep-sat"}))
    assert rows[0]["request_rate_per_s"] == 16.0 and rows[0]["slo_met_fraction"] == 0.0
    with pytest.raises(UsageError, match="needs an SLO"):
        search_saturation(SweepSettings(base=base), lambda p: base, store, concurrency=8,
                          ctx_size=None, lo=1, hi=2, steps=1, attainment=0.9, execute=execute)  # fmt: skip


class _Made(Exception):
    """Stops a point once its engine is made: what the test looks at."""


def _made_engine(base: RunSpec, store: Store, point: SweepPoint) -> Any:
    def execute(cfg: RunSpec, store: Store, *, engine: Any, **kw: Any) -> dict[str, Any]:
        raise _Made(engine)

    with pytest.raises(_Made) as made:
        run_sweep([point], SweepSettings(base=base, sweep_id="sweep-made"), lambda p: base, store, execute=execute)
    return made.value.args[0]


def test_a_points_engine_is_made_as_a_run_makes_it(store: Store) -> None:
    """registry.engine_for_run: an attached engine is not launched, and trtllm-bench drives
    the point's own workload (its concurrency and requests), not a default load."""
    from memgap.engines.attached import AttachedEngine
    from memgap.engines.trtllm import TrtllmBench

    attached = RunSpec.model_validate({"environment": {"name": "attached", "attach": {"url": "http://127.0.0.1:9"}}})
    assert isinstance(_made_engine(attached, store, SweepPoint(2, None, None)), AttachedEngine)
    bench = RunSpec.model_validate({
        "engine": {"kind": "trtllm", "mode": "bench", "model": "org/tiny"},
        "environment": {"name": "docker", "container": {"image": "trtllm:test"}},  # an image brings its own engine
        "workload": {"prompt_tokens": 96, "output_tokens": 32},
    })
    engine = _made_engine(bench, store, SweepPoint(6, None, None))
    assert isinstance(engine, TrtllmBench)
    assert (engine.load.concurrency, engine.load.num_requests, engine.load.input_len, engine.load.output_len) == (
        6, 18, 96, 32)  # 3 requests per unit of concurrency
