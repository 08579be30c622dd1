"""The capacity search (pure): its ladder, the bootstrap verdicts and interval, the next
step, and whole searches in memory against a simulated KV-bound engine (a request beyond
its slots waits a whole generation)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memgap.capacity import (
    Ladder,
    SearchSettings,
    Trial,
    decide,
    estimate,
    meets,
    next_step,
    row_percentile,
)
from memgap.errors import UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import parse_slo

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
        assert step.rung is not None
        c = int(s.ladder.load(step.rung))
        n = 2 * c
        ttfts = [compute_ttft_per_request * min(c, capacity) + (3.0 if i % c >= capacity else 0.0)
                 + abs(rnd.gauss(0, noise)) for i in range(n)]  # fmt: skip
        trials.append(Trial(step.rung, f"r{len(trials)}", tuple(req(i, t) for i, t in enumerate(ttfts))))
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


def test_a_failure_at_the_lowest_load_puts_the_interval_below_the_ladder() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 1, 1))
    est = estimate([Trial(0, "r0", (), "engine exited with status 1 before it was ready")], SLO, s)
    assert (est.boundary_rung, est.first_miss_rung, est.low_rung, est.high_rung, est.width_rungs) == (None, 0, None, None, 0)
    assert est.to_dict()["open_below"] and est.to_dict()["high"] is None
    assert next_step(est, s).reason == "below"
