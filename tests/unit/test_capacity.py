"""The capacity search: its ladder, the bootstrap verdicts and interval, the next step, and
whole searches (store, resume, prediction) against a fake engine that behaves like a
KV-bound llama.cpp server (slots = ctx // tokens per request; a request beyond them waits
for a whole generation)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.analysis.capacity_outcome import (
    capacities_in_store,
    capacity_outcome,
    compare_arms,
    predict,
    preemptions,
)
from memgap.capacity import (
    Arm,
    CapacitySettings,
    Ladder,
    SearchSettings,
    Trial,
    arm_of_label,
    decide,
    estimate,
    meets,
    next_step,
    point_requests,
    row_percentile,
    run_label,
)
from memgap.capacity_run import new_capacity_id, open_search, run_capacity
from memgap.errors import UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import parse_slo
from memgap.spec import LlamaCppSpec, RunSpec
from memgap.store import Store, open_store

SLO_TEXT = "ttft_p99_s<=2,errors<=0%"
SLO = parse_slo(SLO_TEXT)


def req(i: int, ttft: float, *, error: str | None = None) -> RequestRecord:
    return RequestRecord(i, False, 0.0, 0.0, None if error else ttft, (0.02,) * 7, ttft + 1.0, 8, 8, 64,
                         None if error else 200, error)  # fmt: skip


# -- the ladder -----------------------------------------------------------------------------


def test_concurrency_ladder_rungs_and_brackets() -> None:
    lad = Ladder("concurrency", 1, 32, 1)
    assert lad.size == 32 and lad.load(0) == 1.0 and lad.load(31) == 32.0
    assert [lad.load(r) for r in (lad.up(0), lad.up(1), lad.up(3), lad.up(15), lad.up(31))] == [2, 4, 8, 32, 32]
    assert [lad.load(lad.down(r)) for r in (15, 7, 2, 0)] == [8, 4, 1, 1]
    assert lad.rung_of(12.0) == 11 and lad.rung_of(12.5) is None and lad.rung_of(33) is None and lad.rung_of(0) is None
    assert lad.label(3) == "c=4"
    even = Ladder("concurrency", 2, 20, 2)
    assert even.size == 10 and even.load(9) == 20 and even.rung_of(7) is None
    assert Ladder.from_dict(lad.to_dict()) == lad


def test_rate_ladder_grows_by_its_step() -> None:
    lad = Ladder("rate", 0.5, 16, 0.1)
    assert lad.size == 37  # 0.5 * 1.1^36 = 15.7 <= 16 < 0.5 * 1.1^37
    assert lad.load(36) == pytest.approx(0.5 * 1.1**36) and lad.load(36) <= 16
    assert lad.rung_of(lad.load(20)) == 20 and lad.rung_of(0.52) is None
    assert lad.load(lad.up(0)) >= 1.0 and lad.load(lad.up(0) - 1) < 1.0
    assert lad.label(0) == "rate=0.5"


@pytest.mark.parametrize("args", [("concurrency", 0, 4, 1), ("concurrency", 4, 2, 1), ("concurrency", 1, 8, 0.5),
                                  ("rate", 1, 2, 0), ("load", 1, 2, 1), ("rate", 1, math.inf, 0.1)])  # fmt: skip
def test_bad_ladders_are_refused(args: tuple[Any, ...]) -> None:
    with pytest.raises(UsageError):
        Ladder(*args)


def test_search_settings_validate_and_round_trip() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 8, 1), start=2, max_runs=9)
    assert SearchSettings.from_dict(s.to_dict()) == s
    for bad in ({"start": 8}, {"repeats": 0}, {"confidence": 1.0}, {"bootstrap": 10}, {"attainment": 0}):
        with pytest.raises(UsageError):
            SearchSettings(Ladder("concurrency", 1, 8, 1), **bad)


# -- verdicts and the interval --------------------------------------------------------------


def test_a_rung_meets_when_its_pooled_requests_do() -> None:
    fast = [req(i, 0.5) for i in range(20)]
    assert meets(fast, SLO, 0.9)
    assert not meets([*fast, req(20, 5.0)], parse_slo("ttft_p100_s<=2"), 0.9)
    assert not meets([*fast, req(20, 0.5, error="http 500")], SLO, 0.9)
    assert meets([*fast, req(20, 0.5, error="http 500")], parse_slo("ttft_p99_s<=2,errors<=5%"), 0.9)
    # per-request bounds count by attainment: 19 of 21 is 90.5%
    per = parse_slo("ttft_s=1")
    assert meets([*fast, req(20, 5.0)], per, 0.9) and not meets([*fast, req(20, 5.0), req(21, 5.0), req(22, 5.0)], per, 0.9)
    # a run that failed before serving anything is one failed request: it misses
    assert not meets(Trial(0, "r", (), "engine exited with 1").judged, parse_slo("ttft_p99_s<=2"), 0.9)


def trials_at(rung: int, ttfts: list[list[float]], prefix: str = "r") -> list[Trial]:
    return [Trial(rung, f"{prefix}{rung}-{k}", tuple(req(i, t) for i, t in enumerate(run))) for k, run in enumerate(ttfts)]


def test_a_clear_boundary_has_a_narrow_interval() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 16, 1))
    trials = trials_at(3, [[0.5] * 8, [0.6] * 8]) + trials_at(4, [[0.5] * 6 + [5.0] * 4, [0.5] * 6 + [5.0] * 4])
    est = estimate(trials, SLO, s)
    assert (est.boundary_rung, est.first_miss_rung) == (3, 4)
    assert (est.low_rung, est.high_rung, est.width_rungs) == (3, 3, 0)
    assert [r.pass_probability for r in est.rungs] == [1.0, 0.0]
    assert est.to_dict()["boundary"] == 4.0 and est.to_dict()["low"] == 4.0 and est.to_dict()["high"] == 4.0
    assert next_step(est, s).reason == "converged"


def test_an_unsure_rung_widens_the_interval_and_is_repeated() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 16, 1))
    # rung 3 met the bound, but one of its 8 requests was slow: p99 over a resample often misses
    unsure = trials_at(3, [[0.5] * 7 + [1.9], [0.5] * 7 + [2.5]])
    trials = unsure + trials_at(4, [[5.0] * 8, [5.0] * 8]) + trials_at(2, [[0.5] * 8, [0.5] * 8])
    est = estimate(trials, SLO, s)
    assert est.first_miss_rung == 3  # pooled p99 over 16 requests is above 2
    assert est.boundary_rung == 2
    r3 = next(r for r in est.rungs if r.rung == 3)
    assert 0.1 < r3.pass_probability < 0.9
    assert est.low_rung == 2 and est.high_rung == 3 and est.width_rungs == 1
    step = next_step(est, SearchSettings(Ladder("concurrency", 1, 16, 1), tolerance=0))
    assert (step.rung, step.reason) == (3, "repeat")
    assert next_step(est, s).reason == "converged"  # one rung wide is within the default tolerance


def test_the_same_trials_give_the_same_decision() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 16, 1), tolerance=0)
    trials = trials_at(3, [[0.5] * 7 + [1.9], [0.5] * 7 + [2.5]]) + trials_at(4, [[5.0] * 8] * 2)
    a, b = decide(trials, SLO, s), decide(list(reversed(trials)), SLO, s)
    assert a[0] == b[0] and a[1].to_dict() == b[1].to_dict()


# -- whole searches over a simulated engine -------------------------------------------------


def simulate(capacity: int, s: SearchSettings, *, noise: float = 0.0, seed: int = 0,
             compute_ttft_per_request: float = 0.05) -> tuple[list[int], Any]:  # fmt: skip
    """Run a search against a KV-bound engine with ``capacity`` slots, in memory."""
    rnd = random.Random(seed)
    trials: list[Trial] = []
    tried: list[int] = []
    while True:
        step, est = decide(trials, SLO, s)
        if step.done:
            return tried, (step, est)
        c = int(s.ladder.load(step.rung))  # type: ignore[arg-type]
        n = 2 * c
        ttfts = [compute_ttft_per_request * min(c, capacity) + (3.0 if i % c >= capacity else 0.0)
                 + abs(rnd.gauss(0, noise)) for i in range(n)]  # fmt: skip
        trials.append(Trial(step.rung, f"r{len(trials)}", tuple(req(i, t) for i, t in enumerate(ttfts))))  # type: ignore[arg-type]
        tried.append(c)


def test_brackets_then_bisects_then_repeats_the_two_rungs_beside_the_boundary() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 32, 1))
    tried, (step, est) = simulate(12, s)
    assert tried == [1, 2, 4, 8, 16, 12, 14, 13, 12, 13]
    assert step.reason == "converged" and est.load(est.boundary_rung) == 12.0
    assert (est.load(est.low_rung), est.load(est.high_rung)) == (12.0, 12.0)
    assert len(tried) < s.ladder.size  # 10 runs where a grid of the same resolution runs 32


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 31), st.integers(0, 31))
def test_a_noiseless_boundary_is_found_exactly_from_any_start(capacity: int, start: int) -> None:
    s = SearchSettings(Ladder("concurrency", 1, 32, 1), start=start)
    tried, (step, est) = simulate(capacity, s)
    assert step.reason == "converged" and est.load(est.boundary_rung) == capacity
    # one rung wide at most: just above a large capacity only 1 request in c + 1 waits,
    # and a resample of them without it meets a p99 bound
    lo, hi = est.load(est.low_rung), est.load(est.high_rung)
    assert lo is not None and hi is not None and lo <= capacity <= hi and est.width_rungs <= s.tolerance
    assert len(tried) <= 2 * math.ceil(math.log2(32)) + 2 * s.repeats  # bracket + bisect + repeats


@given(st.lists(st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=12), min_size=1, max_size=6),
       st.floats(0.0, 100.0))
def test_row_percentile_is_numpys_linear_percentile(rows: list[list[float | None]], q: float) -> None:
    width = max(map(len, rows))
    arr = np.array([[np.nan if v is None else v for v in r] + [np.nan] * (width - len(r)) for r in rows])
    got = row_percentile(arr, q)
    for r, g in zip(rows, got, strict=True):
        vals = [v for v in r if v is not None]
        if vals:
            assert g == pytest.approx(float(np.percentile(vals, q)), rel=1e-9, abs=1e-6)
        else:
            assert np.isnan(g)


def test_noise_costs_repeats_but_the_interval_still_holds_the_boundary() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 32, 1), max_runs=24)
    for seed in range(5):
        tried, (step, est) = simulate(10, s, noise=0.6, seed=seed)
        lo, hi = est.load(est.low_rung), est.load(est.high_rung)
        assert lo is not None and hi is not None and lo <= 10 <= hi, (seed, tried, lo, hi)
        assert step.reason in ("converged", "budget") and len(tried) <= 24


def test_the_search_stops_at_either_end_of_the_ladder_and_at_its_budget() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 8, 1))
    tried, (step, est) = simulate(100, s)
    assert tried == [1, 2, 4, 8] and step.reason == "above" and est.open_above
    s = SearchSettings(Ladder("concurrency", 2, 8, 1), start=3)
    tried, (step, est) = simulate(1, s)  # even 2 is too many
    assert tried == [5, 2] and step.reason == "below" and est.boundary_rung is None and est.low_rung is None
    tried, (step, _) = simulate(12, SearchSettings(Ladder("concurrency", 1, 32, 1), max_runs=6))
    assert len(tried) == 6 and step.reason == "budget"


def test_compute_bound_boundary_comes_before_the_kv_one() -> None:
    # 0.2 s of TTFT per request in flight: the 2 s bound breaks at 11 although 16 fit
    tried, (step, est) = simulate(16, SearchSettings(Ladder("concurrency", 1, 32, 1)), compute_ttft_per_request=0.2)
    assert est.load(est.boundary_rung) == 10.0 and step.reason == "converged"


# -- stored searches ------------------------------------------------------------------------

PER_REQUEST = 256  # prompt 64 + output 192


class KvBoundServer:
    """A stand-in for execute_run: slots = --parallel; a request beyond them in its wave
    waits a generation (3 s) and the engine reports it waiting; prefill costs 0.05 s per
    request in flight. Stores the run like the runner does."""

    def __init__(self, crash_at: int | None = None, prefill_s: float = 0.05) -> None:
        self.specs: list[RunSpec] = []
        self.crash_at = crash_at
        self.prefill_s = prefill_s

    def __call__(self, spec: RunSpec, store: Store, *, engine: Any, **kw: Any) -> dict[str, Any]:
        if self.crash_at is not None and len(self.specs) == self.crash_at:
            raise KeyboardInterrupt  # killed: nothing stored for this point
        self.specs.append(spec)
        assert isinstance(spec.engine, LlamaCppSpec)
        c, n, slots = spec.workload.concurrency, spec.workload.requests, spec.engine.parallel
        reqs = [req(i, self.prefill_s * min(c, slots) + (3.0 if i % c >= slots else 0.0)) for i in range(n)]
        waiting = float(max(0, c - slots))
        run_id = f"run{len(store.runs()) + 1:03d}"
        record = {
            "run_id": run_id, "created_at": f"2026-12-01T00:{len(store.runs()) // 60:02d}:{len(store.runs()) % 60:02d}",
            "status": "ok", "environment": spec.environment.name, "engine": "llamacpp", "label": spec.label,
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


def make_settings(cid: str = "capacity-test", **search: Any) -> CapacitySettings:
    base = RunSpec.from_dict({"workload": {"prompt_tokens": 64, "output_tokens": 192}})
    return CapacitySettings(cid, base.to_dict(), (Arm("native", 1024), Arm("native", 3072)), SLO_TEXT,
                            SearchSettings(Ladder("concurrency", 1, 32, 1), **search))  # fmt: skip


def spec_for(settings: CapacitySettings) -> Any:
    def f(arm: Arm) -> RunSpec:
        base = RunSpec.from_dict(dict(settings.base)).with_environment(arm.environment)
        assert arm.ctx_tokens is not None
        return base.replace(engine=LlamaCppSpec(ctx_size=arm.ctx_tokens, parallel=arm.ctx_tokens // PER_REQUEST))
    return f


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "capacity.db") as st:
        yield st


def test_two_kv_budgets_three_times_apart_give_apart_boundaries(store: Store) -> None:
    settings_ = make_settings()
    server = KvBoundServer()
    seen: list[tuple[str, str]] = []
    out = run_capacity(settings_, spec_for(settings_), store, execute=server, make=lambda e: e,
                       on_point=lambda arm, step, rec: seen.append((arm.name, step.reason)))  # fmt: skip
    assert out.done
    small, large = out.arms
    assert small.estimate.to_dict()["boundary"] == 4.0 and large.estimate.to_dict()["boundary"] == 12.0
    assert (small.estimate.to_dict()["low"], small.estimate.to_dict()["high"]) == (4.0, 4.0)
    assert (large.estimate.to_dict()["low"], large.estimate.to_dict()["high"]) == (12.0, 12.0)
    # arms take turns (the one with fewer runs goes next)
    assert [a for a, _ in seen[:4]] == ["native/ctx=1024", "native/ctx=3072"] * 2
    # fewer runs than a grid of the same resolution
    d = out.to_dict()
    assert d["runs"] == len(server.specs) == len(store.runs()) < d["grid"]["once"] == 64
    # every point is a stored run of the search, its load, arm and SLO in its spec
    first = store.runs()[0]
    assert first.study_id == "capacity-test" and first.label == "capacity-test native/ctx=1024 c=1"
    assert first.record["spec"]["slo"] == SLO_TEXT and first.record["workload"]["requests"] == 4
    assert server.specs[4].workload.concurrency == 4 and server.specs[4].workload.requests == 8
    # plan's prediction from each run's own KV budget agrees, and the ratio reads both ways
    assert small.prediction is not None and small.prediction.predicted == 4 and small.prediction.binds == "kv"
    assert large.prediction is not None and large.prediction.predicted == 12
    assert small.diagnosis["agrees"] and large.diagnosis["agrees"]
    c = d["comparisons"][0]
    assert c["predicted_a_over_b"] == pytest.approx(1 / 3) and c["predicted_b_over_a"] == 3.0
    assert c["measured_a_over_b"] == pytest.approx(1 / 3) and c["measured_b_over_a"] == 3.0
    assert c["kv_tokens_b_over_a"] == 3.0 and c["intervals_overlap"] is False
    assert d["sentences"][0].startswith("native/ctx=1024 has 0.33x the KV tokens of native/ctx=3072")
    # the engine's signals at each point: the queue the small budget built at 5
    r5 = next(r for r in small.estimate.rungs if r.load == 5.0)
    assert r5.signals["engine_waiting_peak"] == 1.0 and r5.signals["preemptions"] == 0.0
    assert "queue peaked at 1" in small.diagnosis["evidence"]
    # the report rebuilds it from the store alone
    again = capacities_in_store(store, store.runs())
    assert list(again) == ["capacity-test"] and again["capacity-test"]["runs"] == d["runs"]


def test_a_killed_search_resumes_without_redoing_finished_points(store: Store) -> None:
    whole = KvBoundServer()
    with open_store(store.path.with_name("whole.db")) as other:
        s = make_settings()
        run_capacity(s, spec_for(s), other, execute=whole, make=lambda e: e)
    s = make_settings()
    killed = KvBoundServer(crash_at=7)
    with pytest.raises(KeyboardInterrupt):
        run_capacity(s, spec_for(s), store, execute=killed, make=lambda e: e)
    assert len(store.runs()) == 7
    # a run stopped by Ctrl-C is stored as failed 'interrupted': it is not a finished point
    rec = dict(store.runs()[-1].record, run_id="run-int", failure="interrupted (Ctrl-C or SIGTERM)", status="failed",
               created_at="2026-12-01T00:00:59")  # fmt: skip
    store.add_run(rec)
    resumed = KvBoundServer()
    out = run_capacity(make_settings(), spec_for(s), store, execute=resumed, make=lambda e: e)
    labels = [x.label for x in whole.specs]
    assert [x.label for x in killed.specs] + [x.label for x in resumed.specs] == labels
    assert out.runs == len(labels) and out.done


def test_a_search_is_stored_once_and_resumed_only_with_its_own_settings(store: Store) -> None:
    s = make_settings()
    assert open_search(store, s) is False and open_search(store, s) is True
    with pytest.raises(UsageError, match="stored with other settings"):
        open_search(store, make_settings(tolerance=0))
    assert capacity_outcome(store, "capacity-test").settings == s
    with pytest.raises(UsageError, match="no capacity search"):
        capacity_outcome(store, "capacity-nope")
    assert new_capacity_id("night") == "capacity-night" == new_capacity_id("capacity-night")
    assert new_capacity_id().startswith("capacity-")
    with pytest.raises(UsageError):
        new_capacity_id("a b")


def test_labels_and_point_sizes() -> None:
    s = make_settings()
    label = run_label("capacity-x", Arm("sandbox", None, 64 << 20), s.search.ladder, 3)
    assert label == "capacity-x sandbox/kv=67108864B c=4" and arm_of_label(label, "capacity-x") == "sandbox/kv=67108864B"
    assert arm_of_label(label, "capacity-y") is None and arm_of_label(None, "capacity-x") is None
    assert point_requests(s, 1) == 4 and point_requests(s, 7) == 14
    assert CapacitySettings.from_dict(s.to_dict()) == s and s.fingerprint() == CapacitySettings.from_dict(s.to_dict()).fingerprint()
    with pytest.raises(UsageError, match="distinct arms"):
        CapacitySettings("c", {}, (Arm("native", 1), Arm("native", 1)), SLO_TEXT, s.search)


def test_prediction_reads_the_runs_own_budget() -> None:
    llama = {"status": "ok", "engine_report": {"kv_cache_tokens": 3072}, "engine_options": {"parallel": 12},
             "spec": {"engine": {"kind": "llamacpp"}}}  # fmt: skip
    p = predict(llama, 256)
    assert (p.kv_sequences, p.slots, p.predicted, p.binds) == (12, 12, 12, "kv")
    assert predict({**llama, "engine_options": {"parallel": 4}}, 256).binds == "slots"
    vllm = {"status": "ok", "engine_report": {"kv_cache_tokens": 4096, "kv_cache_blocks": 256},
            "spec": {"engine": {"kind": "vllm", "max_num_seqs": None}}}  # fmt: skip
    v = predict(vllm, 200)
    assert (v.block_size, v.kv_sequences, v.predicted, v.binds) == (16, 19, 19, "kv")
    assert predict({"engine_report": {}}, 256).predicted is None


def test_diagnosis_names_compute_when_the_slo_breaks_before_kv(store: Store) -> None:
    # prefill 0.4 s per request in flight: at 6 the 2 s bound breaks, though 12 fit
    slow = KvBoundServer(prefill_s=0.4)
    s = CapacitySettings("capacity-slow", make_settings().base, (Arm("native", 3072),), SLO_TEXT,
                         SearchSettings(Ladder("concurrency", 1, 32, 1)))  # fmt: skip
    out = run_capacity(s, spec_for(s), store, execute=slow, make=lambda e: e)
    arm = out.arms[0]
    assert arm.estimate.load(arm.estimate.boundary_rung) == 5.0
    assert arm.diagnosis["agrees"] is False
    why = arm.diagnosis["why"]
    assert why.startswith("compute-bound: at load 6, below the predicted 12, no request waited in the engine")
    assert "ttft_p99_s 2.4 > 2" in why


def test_comparison_of_arms_without_a_boundary() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 8, 1))
    _, (_, est) = simulate(100, s)
    from memgap.analysis.capacity_outcome import ArmOutcome, diagnose

    step = next_step(est, s)
    a = ArmOutcome(Arm("native", 1024), step, est, predict({"status": "ok", "engine_report": {"kv_cache_tokens": 1024},
                   "engine_options": {"parallel": 4}}, 256), {})  # fmt: skip
    b = ArmOutcome(Arm("native", 3072), step, est, None, {})
    c = compare_arms(a, b)
    assert c["predicted_a_over_b"] is None and c["measured_a_over_b"] == 1.0
    d = diagnose(est, a.prediction, SLO)
    assert d["why"].startswith("the SLO held up to the top of the ladder (8)")
    assert diagnose(est, None, SLO)["why"].startswith("no prediction")


def test_preemptions_rise_over_the_workload() -> None:
    series = {"marks": {"ready": 1.0, "end": 3.0},
              "columns": {"t_s": [0.0, 1.0, 2.0, 3.0, 4.0], "preemptions_total": [9.0, 10.0, None, 14.0, 20.0]}}
    assert preemptions(series) == 4.0 and preemptions(None) is None
    assert preemptions({"columns": {"t_s": [0.0]}, "marks": {}}) is None
