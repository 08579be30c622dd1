"""Statistics for comparing environments: pure functions of lists of numbers.

Fixed-sample comparison of two groups ``a`` and ``b`` (``b - a`` throughout):
summary (n, mean, median, sd, CV), difference of means with a seeded bootstrap 95%
interval, Welch's t-test and Mann-Whitney U (scipy), Hedges' g, Holm's step-down
correction across the metrics of one comparison, and the runs needed for a given
precision or to detect a given difference.

Sequential stopping (``iterations = "auto"``)
-------------------------------------------
A study runs in randomized blocks, one run of every environment per block, so each
block gives one *paired* difference ``d_i = b_i - a_i`` per metric (on the log scale
when the margin is relative). After every block from ``min_n`` to ``max_n`` we look at
the one-sample t-statistic of the differences. Repeatedly testing at the nominal level
would inflate the error rate (at 8 looks, a 5% test errs ~19% of the time); instead the
critical values form a **group-sequential boundary** (Pocock: the same value at every
look; O'Brien-Fleming: ``c * sqrt(max_n / n)``, strict early) whose constant ``c`` is
chosen so that the probability of crossing at *any* look under the null is ``alpha``.
Because the t-statistic of normal data is pivotal (its law does not depend on the
unknown mean or variance), that probability can be computed exactly up to Monte Carlo
error by simulating standard normal data with a fixed seed (``boundary``); this is the
classical Pocock/O'Brien-Fleming design with the t-distribution's small-sample tails
accounted for, instead of the normal approximation that is anti-conservative at n < 10.

Two verdicts are tested at every look:

* **different**: two-sided, ``|t| >= boundary`` (error rate <= alpha when the true mean
  difference is 0);
* **equivalent** within a margin ``m`` (TOST): both one-sided tests ``(mean + m)/se`` and
  ``(m - mean)/se`` cross the one-sided boundary at the same look. Each one-sided
  sequential test errs with probability <= alpha at its edge of the margin, so declaring
  equivalence when the true difference is ``>= m`` in size happens with probability
  <= alpha (intersection-union).

With several primary metrics the level is split among them (Bonferroni), so a cell's
stop decision keeps a family-wise rate <= alpha. A metric whose differences have zero
spread (e.g. KV cache bytes, fixed by the engine's options) is decided exactly: equal
within the margin or not. The rule assumes roughly normal differences; ``tests`` check
its type-I error by simulation with fixed seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

Shape = Literal["pocock", "obrien-fleming"]
SeqVerdict = Literal["different", "equivalent", "continue", "inconclusive"]


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    median: float | None
    sd: float | None  # sample standard deviation (ddof=1); None below 2 values
    cv: float | None  # sd / |mean|; None when undefined

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summarize(values: Sequence[float | None]) -> Summary:
    xs = _clean(values)
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(np.mean(xs))
    sd = float(np.std(xs, ddof=1)) if n >= 2 else None
    cv = sd / abs(mean) if sd is not None and mean != 0 else None
    return Summary(n, mean, float(np.median(xs)), sd, cv)


def bootstrap_diff_ci(
    a: Sequence[float], b: Sequence[float], *, seed: int = 0, n_boot: int = 4000, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``mean(b) - mean(a)``, resampling each group on
    its own; None with fewer than 2 values in either group."""
    xa, xb = np.asarray(_clean(a)), np.asarray(_clean(b))
    if len(xa) < 2 or len(xb) < 2:
        return None
    rng = np.random.default_rng(seed)
    ma = xa[rng.integers(0, len(xa), (n_boot, len(xa)))].mean(axis=1)
    mb = xb[rng.integers(0, len(xb), (n_boot, len(xb)))].mean(axis=1)
    lo, hi = np.percentile(mb - ma, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def _degenerate_p(xa: list[float], xb: list[float]) -> float | None:
    """Both groups without spread: the test statistics are undefined, but the answer is
    not: equal constants do not differ (1.0), different constants do (0.0)."""
    if len(set(xa)) == 1 and len(set(xb)) == 1:
        return 1.0 if xa[0] == xb[0] else 0.0
    return None


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    xa, xb = _clean(a), _clean(b)
    if len(xa) < 2 or len(xb) < 2:
        return None
    d = _degenerate_p(xa, xb)
    if d is not None:
        return d
    p = float(sps.ttest_ind(xa, xb, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    xa, xb = _clean(a), _clean(b)
    if not xa or not xb:
        return None
    d = _degenerate_p(xa, xb)
    if d is not None:
        return d
    p = float(sps.mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standardized mean difference ``(mean_b - mean_a) / pooled sd`` with the small-sample
    correction ``J = 1 - 3 / (4 (na + nb) - 9)``; None when the pooled sd is 0."""
    xa, xb = _clean(a), _clean(b)
    na, nb = len(xa), len(xb)
    if na < 2 or nb < 2:
        return None
    pooled = math.sqrt(((na - 1) * np.var(xa, ddof=1) + (nb - 1) * np.var(xb, ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return None
    j = 1 - 3 / (4 * (na + nb) - 9)
    return float((np.mean(xb) - np.mean(xa)) / pooled * j)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted)."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    m = len(idx)
    order = sorted(idx, key=lambda i: p_values[i])  # type: ignore[arg-type, return-value]
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        p = p_values[i]
        assert p is not None
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def runs_for_precision(sd: float, half_width: float, *, confidence: float = 0.95) -> int | None:
    """Runs needed for a mean's confidence interval to be ``± half_width`` (normal
    approximation): ``ceil((z * sd / half_width)^2)``."""
    if half_width <= 0 or not math.isfinite(sd):
        return None
    z = float(sps.norm.ppf((1 + confidence) / 2))
    return max(2, math.ceil((z * sd / half_width) ** 2))


def runs_to_detect(difference: float, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Runs per group for a two-sided two-sample test at ``alpha`` to detect ``difference``
    with ``power``: ``ceil(2 ((z_{1-alpha/2} + z_power) sd / difference)^2)``."""
    if difference == 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    z = float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    return max(2, math.ceil(2 * (z * sd / abs(difference)) ** 2))


# -- sequential ------------------------------------------------------------------------

BOUNDARY_SIMULATIONS = 40_000
BOUNDARY_SEED = 20261127


@lru_cache(maxsize=256)
def boundary(
    min_n: int, max_n: int, alpha: float, shape: Shape = "pocock", sided: int = 2
) -> tuple[float, ...]:
    """Critical values of the t-statistic at looks ``n = min_n .. max_n`` such that a
    null t-statistic crosses one of them with probability ``alpha`` (see module doc)."""
    if not (2 <= min_n <= max_n):
        raise ValueError(f"need 2 <= min_n <= max_n, got {min_n}, {max_n}")
    if not (0 < alpha < 1) or sided not in (1, 2):
        raise ValueError(f"bad alpha {alpha} or sided {sided}")
    rng = np.random.default_rng(BOUNDARY_SEED)
    z = rng.standard_normal((BOUNDARY_SIMULATIONS, max_n))
    ns = np.arange(1, max_n + 1)
    s = np.cumsum(z, axis=1)
    q = np.cumsum(z * z, axis=1)
    mean = s / ns
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (q - ns * mean * mean) / np.maximum(ns - 1, 1)
        t = mean / np.sqrt(var / ns)
    looks = ns[min_n - 1 :]
    t = t[:, min_n - 1 :]
    stat = np.abs(t) if sided == 2 else t
    w = np.ones(len(looks)) if shape == "pocock" else np.sqrt(max_n / looks)
    c = float(np.quantile(np.max(stat / w, axis=1), 1 - alpha))
    return tuple(float(c * wk) for wk in w)


@dataclass(frozen=True)
class SequentialDesign:
    alpha: float = 0.05
    min_n: int = 3
    max_n: int = 10
    shape: Shape = "pocock"
    n_metrics: int = 1  # the level is split among the primary metrics (Bonferroni)

    @property
    def alpha_per_metric(self) -> float:
        return self.alpha / max(1, self.n_metrics)


@dataclass(frozen=True)
class SequentialResult:
    verdict: SeqVerdict
    n: int
    mean: float | None
    t: float | None
    boundary_two_sided: float | None
    boundary_one_sided: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sequential_verdict(
    diffs: Sequence[float], margin: float | None, design: SequentialDesign
) -> SequentialResult:
    """The verdict at the look made with ``len(diffs)`` paired differences. ``margin``
    None tests only 'different'. Call it after each block, never more often."""
    xs = _clean(diffs)
    n = len(xs)
    if n < design.min_n:
        return SequentialResult("continue", n, None, None, None, None)
    look = min(n, design.max_n)
    a = design.alpha_per_metric
    c2 = boundary(design.min_n, design.max_n, a, design.shape, 2)[look - design.min_n]
    c1 = boundary(design.min_n, design.max_n, a, design.shape, 1)[look - design.min_n]
    mean = float(np.mean(xs))
    sd = float(np.std(xs, ddof=1))
    verdict: SeqVerdict = "continue"
    t: float | None = None
    if sd == 0:
        # Deterministic quantity: decided exactly, no sampling error.
        if margin is not None and abs(mean) <= margin:
            verdict = "equivalent"
        elif mean != 0:
            verdict = "different"
    else:
        se = sd / math.sqrt(n)
        t = mean / se
        if abs(t) >= c2:
            verdict = "different"
        elif margin is not None and margin > 0 and (mean + margin) / se >= c1 and (margin - mean) / se >= c1:
            verdict = "equivalent"
    if verdict == "continue" and n >= design.max_n:
        verdict = "inconclusive"
    return SequentialResult(verdict, n, mean, t, c2, c1)


def paired_differences(
    a: Sequence[float], b: Sequence[float], *, log_scale: bool = False
) -> list[float]:
    """``b_i - a_i`` (or ``ln b_i - ln a_i``) for pairs where both are known (and > 0 on
    the log scale)."""
    out = []
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            continue
        if log_scale:
            if x <= 0 or y <= 0:
                continue
            out.append(math.log(y) - math.log(x))
        else:
            out.append(float(y) - float(x))
    return out


def mean_ci(values: Sequence[float | None], *, level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of one group's mean; None below 2 values."""
    s = summarize(values)
    if s.n < 2 or s.mean is None or s.sd is None:
        return None
    h = float(sps.t.ppf((1 + level) / 2, s.n - 1)) * s.sd / math.sqrt(s.n)
    return s.mean - h, s.mean + h
