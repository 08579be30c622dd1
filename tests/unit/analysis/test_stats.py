"""Statistics: values checked against hand computations and scipy, and the sequential
rule's error rates checked by simulation with fixed seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from memgap.analysis.stats import (
    SequentialDesign,
    bootstrap_diff_ci,
    boundary,
    hedges_g,
    holm,
    mann_whitney_p,
    paired_differences,
    runs_for_precision,
    runs_to_detect,
    sequential_verdict,
    summarize,
    welch_p,
)


def test_summarize_values() -> None:
    s = summarize([1.0, 2.0, 3.0, 10.0, None])
    assert s.n == 4 and s.mean == 4.0 and s.median == 2.5
    assert s.sd == pytest.approx(math.sqrt((9 + 4 + 1 + 36) / 3))
    assert s.cv == pytest.approx(s.sd / 4.0)
    assert summarize([]).mean is None and summarize([5.0]).sd is None


def test_bootstrap_is_seeded_and_brackets_the_difference() -> None:
    rng = np.random.default_rng(1)
    a, b = list(rng.normal(10, 1, 20)), list(rng.normal(12, 1, 20))
    ci = bootstrap_diff_ci(a, b, seed=3)
    assert ci == bootstrap_diff_ci(a, b, seed=3)
    assert ci is not None and ci[0] < np.mean(b) - np.mean(a) < ci[1]
    assert 1.0 < ci[0] and ci[1] < 3.0
    assert bootstrap_diff_ci([1.0], [2.0, 3.0]) is None


def test_tests_match_scipy_and_handle_constants() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 4.0, 6.0]
    assert welch_p(a, b) == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    assert mann_whitney_p(a, b) == pytest.approx(sps.mannwhitneyu(a, b).pvalue)
    assert welch_p([5.0] * 3, [5.0] * 4) == 1.0
    assert welch_p([5.0] * 3, [6.0] * 4) == 0.0


def test_hedges_g_hand_computed() -> None:
    # pooled sd = 1, difference 2, J = 1 - 3/(4*8-9) = 1 - 3/23
    a, b = [0.0, 1.0, 2.0, 1.0], [2.0, 3.0, 4.0, 3.0]
    pooled = math.sqrt(np.var(a, ddof=1))
    assert hedges_g(a, b) == pytest.approx(2 / pooled * (1 - 3 / 23))
    assert hedges_g([1.0, 1.0], [2.0, 2.0]) is None


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_runs_needed() -> None:
    # z=1.96, sd=1, half width 0.5 -> 15.37 -> 16
    assert runs_for_precision(1.0, 0.5) == 16
    # (1.96 + 0.8416)^2 * 2 = 15.7 -> 16 per group for a 1-sd difference
    assert runs_to_detect(1.0, 1.0) == 16
    assert runs_to_detect(0.0, 1.0) is None


@given(st.lists(st.floats(0.01, 1e6), min_size=1, max_size=20))
@settings(max_examples=50, deadline=None)
def test_paired_log_differences_are_log_ratios(xs: list[float]) -> None:
    ys = [2 * x for x in xs]
    assert paired_differences(xs, ys, log_scale=True) == pytest.approx([math.log(2)] * len(xs))


def test_pocock_boundary_exceeds_single_look_t() -> None:
    c = boundary(3, 10, 0.05, "pocock", 2)
    assert len(c) == 8 and len(set(c)) == 1
    assert c[0] > sps.t.ppf(0.975, 9)  # stricter than one look at n=10
    obf = boundary(3, 10, 0.05, "obrien-fleming", 2)
    assert obf[0] > obf[-1] and obf[-1] < c[-1]
    # one look only: the boundary is the t quantile, up to Monte Carlo error
    assert boundary(6, 6, 0.05, "pocock", 2)[0] == pytest.approx(sps.t.ppf(0.975, 5), rel=0.03)


def _simulate(design: SequentialDesign, mean: float, margin: float | None, seed: int, runs: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    counts = {"different": 0, "equivalent": 0, "inconclusive": 0}
    for _ in range(runs):
        d = rng.normal(mean, 1.0, design.max_n)
        for n in range(design.min_n, design.max_n + 1):
            v = sequential_verdict(list(d[:n]), margin, design).verdict
            if v != "continue":
                counts[v] += 1
                break
    return counts


@pytest.mark.parametrize("shape", ["pocock", "obrien-fleming"])
def test_type_one_error_of_different_stays_at_alpha(shape: str) -> None:
    design = SequentialDesign(alpha=0.05, min_n=3, max_n=10, shape=shape)  # type: ignore[arg-type]
    runs = 3000
    counts = _simulate(design, 0.0, None, seed=11, runs=runs)
    rate = counts["different"] / runs
    # nominal 5%; 3 binomial standard errors (1.2%) of room for Monte Carlo noise
    assert rate <= 0.05 + 0.012, rate
    assert rate >= 0.025, rate  # and the boundary is not absurdly conservative


def test_naive_peeking_would_not_keep_alpha() -> None:
    """The reason for the boundary: testing at 5% after every block errs far more often."""
    rng = np.random.default_rng(5)
    runs = 4000
    d = rng.normal(0, 1, (runs, 10))
    crossed = np.zeros(runs, dtype=bool)
    for n in range(3, 11):
        t = d[:, :n].mean(axis=1) / (d[:, :n].std(axis=1, ddof=1) / np.sqrt(n))
        crossed |= np.abs(t) > sps.t.ppf(0.975, n - 1)
    hits = int(crossed.sum())
    assert hits / runs > 0.10


def test_type_one_error_of_equivalence_stays_at_alpha() -> None:
    design = SequentialDesign(alpha=0.05, min_n=3, max_n=10)
    runs = 3000
    # the true difference sits exactly on the margin: declaring equivalence is an error
    counts = _simulate(design, 1.0, 1.0, seed=12, runs=runs)
    assert counts["equivalent"] / runs <= 0.05 + 0.012


def test_sequential_reaches_verdicts_early_when_the_answer_is_clear() -> None:
    design = SequentialDesign(alpha=0.05, min_n=3, max_n=10, n_metrics=2)
    assert sequential_verdict([0.0, 0.0], 0.0, design).verdict == "continue"
    assert sequential_verdict([0.0, 0.0, 0.0], 0.0, design).verdict == "equivalent"
    assert sequential_verdict([5.0, 5.0, 5.0], 1.0, design).verdict == "different"
    near_zero = [0.01, -0.02, 0.015, -0.01]
    assert sequential_verdict(near_zero, 0.2, design).verdict == "equivalent"
    big = [10.0, 10.5, 9.7, 10.2]
    assert sequential_verdict(big, 0.2, design).verdict == "different"
    noisy = [1.0, -1.0, 0.5, -0.7, 0.9, -1.2, 0.3, 0.1, -0.4, 0.6]
    assert sequential_verdict(noisy, 0.2, design).verdict == "inconclusive"
