"""Capacity under an SLO: the highest load each environment (at its KV budget) serves
while an SLO holds, with an interval, searched adaptively; pure but for the store's reads.

An *arm* is one environment at one KV budget. Its loads lie on a *ladder*: concurrency
``low, low + step, ...`` or request rates growing by a fixed ratio; the ladder is the
resolution, and a fixed grid would run every rung. The search, per arm:

1. *bracket*: from the start rung, double the load until a point misses the SLO (or
   halve it until one meets it);
2. *bisect* between the highest rung that met it and the lowest that missed, down to
   adjacent rungs;
3. *repeat* the two rungs beside the boundary (``repeats`` runs each), then whichever
   tried rung the bootstrap is least sure of, until the interval is at most
   ``tolerance`` rungs wide or the arm's run budget is spent.

A rung *meets* the SLO when its runs' measured requests, pooled, meet every percentile
and error bound (:meth:`memgap.load.slo.SLO.check`) and, when per-request bounds are
set, at least ``attainment`` of them meet those. A run that failed before it could
serve anything counts as one failed request: it is a result, and it missed.

The interval comes from a two-level bootstrap: resample a rung's runs, then the requests
within each chosen run (so both the noise between runs on a shared machine and that
between requests count), and judge every tried rung in each replicate. In a replicate
the boundary lies between the highest tried rung below its lowest missing rung and the
rung just below that missing one; the interval is the lower ``alpha/2`` quantile of the
first and the upper ``1 - alpha/2`` quantile of the second.

Every decision is a function of the stored runs (and the search's stored settings), so a
search resumes from the store alone: :func:`decide` on what is there names the next run.
``memgap.capacity_run`` runs the points; this module only reads what they stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from memgap.errors import UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import SLO, goodput, metric_value

LoadKind = Literal["concurrency", "rate"]
LOAD_KINDS: tuple[LoadKind, ...] = ("concurrency", "rate")


# -- the ladder of loads --------------------------------------------------------------------


@dataclass(frozen=True)
class Ladder:
    """The loads a search may try. Concurrency: ``low + i * step`` up to ``high``
    (whole numbers); rate: ``low * (1 + step) ** i`` up to ``high``."""

    kind: LoadKind
    low: float
    high: float
    step: float

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):  # one type, so a stored ladder reads back equal
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.kind not in LOAD_KINDS:
            raise UsageError(f"load kind must be one of {', '.join(LOAD_KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and 0 < self.low <= self.high):
            raise UsageError(f"the load range needs 0 < low <= high, got {self.low:g}, {self.high:g}")
        if not (math.isfinite(self.step) and self.step > 0):
            raise UsageError(f"the load step must be > 0, got {self.step:g}")
        if self.kind == "concurrency" and any(v != int(v) for v in (self.low, self.high, self.step)):
            raise UsageError(f"concurrency low, high and step are whole numbers, got {self.low:g}, {self.high:g}, "
                             f"{self.step:g}")  # fmt: skip

    @property
    def size(self) -> int:
        """Rungs on the ladder: what a fixed grid of this resolution runs."""
        if self.kind == "concurrency":
            return int((self.high - self.low) // self.step) + 1
        return int(math.floor(math.log(self.high / self.low) / math.log1p(self.step) + 1e-9)) + 1

    def load(self, rung: int) -> float:
        if not 0 <= rung < self.size:
            raise UsageError(f"rung {rung} is off the ladder (0..{self.size - 1})")
        if self.kind == "concurrency":
            return float(self.low + rung * self.step)
        return self.low * (1 + self.step) ** rung

    def rung_of(self, load: float) -> int | None:
        """The rung a stored load was made at; None when it is on no rung."""
        if not (isinstance(load, int | float) and math.isfinite(load) and load > 0):
            return None
        if self.kind == "concurrency":
            x = (load - self.low) / self.step
        else:
            x = math.log(load / self.low) / math.log1p(self.step)
        rung = round(x)
        if not 0 <= rung < self.size or not math.isclose(self.load(rung), load, rel_tol=1e-9, abs_tol=1e-12):
            return None
        return rung

    def up(self, rung: int) -> int:
        """The first rung at or above twice this rung's load (the top rung at most)."""
        target, j = 2 * self.load(rung), rung + 1
        while j < self.size - 1 and self.load(j) < target:
            j += 1
        return min(j, self.size - 1)

    def down(self, rung: int) -> int:
        """The last rung at or below half this rung's load (rung 0 at least)."""
        target, j = self.load(rung) / 2, rung - 1
        while j > 0 and self.load(j) > target:
            j -= 1
        return max(j, 0)

    def label(self, rung: int) -> str:
        return f"c={int(self.load(rung))}" if self.kind == "concurrency" else f"rate={self.load(rung):.4g}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": self.low, "high": self.high, "step": self.step}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ladder:
        return cls(d["kind"], float(d["low"]), float(d["high"]), float(d["step"]))


# -- the settings of a search ---------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    ladder: Ladder
    start: int = 0  # the rung the bracket starts from
    tolerance: int = 1  # stop when the interval spans at most this many rungs
    confidence: float = 0.95
    repeats: int = 2  # runs at each of the two rungs beside the boundary before it may stop
    max_runs: int = 16  # per arm
    bootstrap: int = 2000  # replicates
    seed: int = 0  # of the bootstrap: the same runs give the same decision
    attainment: float = 0.9  # share of requests that must meet the per-request bounds, if any

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.ladder.size:
            raise UsageError(f"the start load is off the ladder (rungs 0..{self.ladder.size - 1})")
        if self.tolerance < 0 or self.repeats < 1 or self.max_runs < 1 or self.bootstrap < 100:
            raise UsageError("need tolerance >= 0, repeats >= 1, max runs >= 1 and bootstrap >= 100")
        if not 0.5 <= self.confidence < 1:
            raise UsageError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not 0 < self.attainment <= 1:
            raise UsageError(f"SLO attainment must be in (0, 1], got {self.attainment}")

    def to_dict(self) -> dict[str, Any]:
        return {"ladder": self.ladder.to_dict(), "start": self.start, "tolerance": self.tolerance,
                "confidence": self.confidence, "repeats": self.repeats, "max_runs": self.max_runs,
                "bootstrap": self.bootstrap, "seed": self.seed, "attainment": self.attainment}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSettings:
        return cls(Ladder.from_dict(d["ladder"]), **{k: v for k, v in d.items() if k != "ladder"})


# -- what was measured ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One finished run at one rung of one arm."""

    rung: int
    run_id: str
    requests: tuple[RequestRecord, ...]  # measured (warm-up excluded)
    failure: str | None = None  # the run's own failure
    signals: Mapping[str, Any] = field(default_factory=dict)  # the engine's queue, KV usage, ... at this point

    @property
    def judged(self) -> tuple[RequestRecord, ...]:
        """What the verdict counts: a run that failed before serving anything is one
        failed request, so it misses rather than vanishing from the pool."""
        if self.requests:
            return self.requests
        why = self.failure or "the run produced no measured request"
        return (RequestRecord(0, False, 0.0, 0.0, None, (), None, None, 0, None, None, f"run failed: {why}"),)


def meets(requests: Sequence[RequestRecord], slo: SLO, attainment: float) -> bool:
    """The SLO holds over these requests (pooled)."""
    if not slo.check(requests).met:
        return False
    if slo.per_request:
        return goodput(requests, slo, 1.0).meets(attainment)
    return True


def row_percentile(values: np.ndarray, q: float) -> np.ndarray:
    """Each row's ``q``-th percentile of its non-NaN values, as numpy's default (linear)
    method computes it; NaN for a row with none. ``np.nanpercentile`` does the same one
    row at a time, 60-75x slower on a search's 2000 replicates (benchmarks/capacity_search.py:
    9 ms against 550-660 ms a decision, 2 busy cores)."""
    s = np.sort(values, axis=1)  # NaN sorts last
    n = (~np.isnan(values)).sum(axis=1)
    h = np.maximum(n - 1, 0) * (q / 100.0)
    lo = np.floor(h).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    a = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    b = np.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    out = a + (h - lo) * (b - a)
    return np.where(n > 0, out, np.nan)


class _Rung:
    """One rung's trials as padded arrays, for the vectorised bootstrap."""

    def __init__(self, trials: Sequence[Trial], slo: SLO) -> None:
        reqs = [t.judged for t in trials]
        self.sizes = np.array([len(r) for r in reqs])
        m, n = len(reqs), int(self.sizes.max())
        self.ok = np.zeros((m, n), bool)
        self.met = np.zeros((m, n), bool)  # per-request bounds
        self.values = np.full((len(slo.percentiles), m, n), np.nan)
        for i, rs in enumerate(reqs):
            for j, r in enumerate(rs):
                self.ok[i, j] = r.ok
                self.met[i, j] = not slo.misses(r)
                for k, b in enumerate(slo.percentiles):
                    v = metric_value(r, b.metric) if r.ok else None
                    self.values[k, i, j] = np.nan if v is None else v

    def passes(self, slo: SLO, attainment: float, rng: np.random.Generator, replicates: int) -> np.ndarray:
        """Whether each bootstrap replicate of this rung meets the SLO: ``(replicates,)``."""
        m, n = self.ok.shape
        runs = rng.integers(0, m, size=(replicates, m))
        n_of = self.sizes[runs][..., None]  # (B, m, 1): each chosen run keeps its request count
        pick = np.floor(rng.random((replicates, m, n)) * n_of).astype(np.intp)
        present = np.arange(n)[None, None, :] < n_of
        rows = np.broadcast_to(runs[..., None], pick.shape)
        count = present.sum(axis=(1, 2))
        ok = self.ok[rows, pick] & present
        good = np.ones(replicates, bool)
        for k, b in enumerate(slo.percentiles):
            v = np.where(present, self.values[k][rows, pick], np.nan).reshape(replicates, -1)
            q = row_percentile(v, b.percentile)
            good &= ~np.isnan(q) & (q <= b.bound_s)
        if slo.errors_max is not None:
            good &= (count - ok.sum(axis=(1, 2))) / count <= slo.errors_max
        if slo.per_request:
            met = (self.met[rows, pick] & present).sum(axis=(1, 2))
            good &= met / count >= attainment
        return good


# -- the estimate and the next step ---------------------------------------------------------


@dataclass(frozen=True)
class RungSummary:
    rung: int
    load: float
    runs: int
    meets: bool  # pooled
    pass_probability: float  # share of bootstrap replicates in which it met the SLO
    observed: Mapping[str, float | None]  # pooled percentiles and error share
    run_ids: tuple[str, ...]
    signals: Mapping[str, Any]  # worst over its runs: engine waiting peak, KV usage peak, preemptions

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "load": self.load, "runs": self.runs, "meets": self.meets,
                "pass_probability": self.pass_probability, "observed": dict(self.observed),
                "run_ids": list(self.run_ids), "signals": dict(self.signals)}  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """Where the boundary lies, given the trials so far."""

    runs: int
    rungs: tuple[RungSummary, ...]  # tried rungs, by load
    boundary_rung: int | None  # highest rung meeting the SLO below the lowest missing one; None: none met
    first_miss_rung: int | None  # lowest rung missing it; None: every tried rung met it
    low_rung: int | None  # the interval's ends, in rungs (None: below the ladder, or nothing tried)
    high_rung: int | None
    confidence: float
    ladder: Ladder

    @property
    def width_rungs(self) -> int | None:
        if not self.rungs:
            return None
        below = -1  # the rung under the ladder: "not even the lowest load"
        return (self.high_rung if self.high_rung is not None else below) - (
            self.low_rung if self.low_rung is not None else below)

    def load(self, rung: int | None) -> float | None:
        return None if rung is None else self.ladder.load(rung)

    @property
    def open_above(self) -> bool:
        """Every tried rung met the SLO: the boundary is at the top rung or beyond."""
        return bool(self.rungs) and self.first_miss_rung is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs, "boundary": self.load(self.boundary_rung),
            "first_miss": self.load(self.first_miss_rung), "low": self.load(self.low_rung),
            "high": self.load(self.high_rung), "width_rungs": self.width_rungs, "confidence": self.confidence,
            "open_above": self.open_above, "open_below": bool(self.rungs) and self.low_rung is None,
            "rungs": [r.to_dict() for r in self.rungs],
        }  # fmt: skip


def _worst(signals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in signals:
        for k, v in s.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = v if out.get(k) is None else max(out[k], v)
            else:
                out.setdefault(k, v)
    return out


def estimate(trials: Sequence[Trial], slo: SLO, settings: SearchSettings) -> Estimate:
    ladder = settings.ladder
    by_rung: dict[int, list[Trial]] = {}
    # One order whatever order they come in, so the same runs draw the same replicates.
    for t in sorted(trials, key=lambda t: t.run_id):
        by_rung.setdefault(t.rung, []).append(t)
    rungs = sorted(by_rung)
    if not rungs:
        return Estimate(0, (), None, None, None, None, settings.confidence, ladder)
    rng = np.random.default_rng(settings.seed)
    passes = np.stack([_Rung(by_rung[r], slo).passes(slo, settings.attainment, rng, settings.bootstrap)
                       for r in rungs], axis=1)  # fmt: skip
    summaries = []
    pooled: dict[int, bool] = {}
    for i, r in enumerate(rungs):
        reqs = [q for t in by_rung[r] for q in t.judged]
        pooled[r] = meets(reqs, slo, settings.attainment)
        summaries.append(RungSummary(
            r, ladder.load(r), len(by_rung[r]), pooled[r], float(passes[:, i].mean()),
            dict(slo.check(reqs).observed), tuple(t.run_id for t in by_rung[r]), _worst([t.signals for t in by_rung[r]]),
        ))  # fmt: skip
    first_miss = next((r for r in rungs if not pooled[r]), None)
    below = [r for r in rungs if first_miss is None or r < first_miss]
    boundary = below[-1] if below else None
    # per replicate: P = the highest tried rung below the lowest missing one, U = the rung below that
    tried = np.array(rungs)
    fail = ~passes
    any_fail = fail.any(axis=1)
    lowest_miss = np.where(any_fail, tried[np.argmax(fail, axis=1)], ladder.size)
    under = tried[None, :] < lowest_miss[:, None]
    p_rung = np.where(under.any(axis=1), np.max(np.where(under, tried[None, :], -1), axis=1), -1)
    alpha = 1 - settings.confidence
    lo = int(np.quantile(p_rung, alpha / 2, method="lower"))
    hi = int(np.quantile(lowest_miss - 1, 1 - alpha / 2, method="higher"))
    return Estimate(len(trials), tuple(summaries), boundary, first_miss, lo if lo >= 0 else None,
                    hi if hi >= 0 else None, settings.confidence, ladder)  # fmt: skip


@dataclass(frozen=True)
class Step:
    rung: int | None  # the rung to run next; None: the search of this arm is over
    reason: str  # start, bracket up, bracket down, bisect, repeat | converged, budget, ...

    @property
    def done(self) -> bool:
        return self.rung is None


STOP_REASONS = {
    "converged": "the interval is within the tolerance",
    "budget": "the run budget is spent",
    "above": "the SLO held at the highest load on the ladder",
    "below": "the SLO failed at the lowest load on the ladder",
}


def next_step(est: Estimate, settings: SearchSettings) -> Step:
    """What to run next for one arm, from its estimate alone."""
    ladder = settings.ladder
    if est.runs == 0:
        return Step(settings.start, "start")

    def run(rung: int, why: str) -> Step:
        return Step(rung, why) if est.runs < settings.max_runs else Step(None, "budget")

    tried = {r.rung: r for r in est.rungs}
    fail, ok = est.first_miss_rung, est.boundary_rung
    if fail is None:
        top = max(tried)
        return Step(None, "above") if top == ladder.size - 1 else run(ladder.up(top), "bracket up")
    if ok is None:
        return Step(None, "below") if fail == 0 else run(ladder.down(fail), "bracket down")
    if fail - ok > 1:
        return run((ok + fail) // 2, "bisect")
    for rung in (ok, fail):
        if tried[rung].runs < settings.repeats:
            return run(rung, "repeat")
    width = est.width_rungs
    if width is not None and width <= settings.tolerance:
        return Step(None, "converged")
    lo = est.low_rung if est.low_rung is not None else 0
    hi = est.high_rung if est.high_rung is not None else fail
    near = [r for r in est.rungs if lo <= r.rung <= hi + 1] or [tried[ok], tried[fail]]
    pick = min(near, key=lambda r: (abs(r.pass_probability - 0.5), r.runs, r.rung))
    return run(pick.rung, "repeat")


def decide(trials: Sequence[Trial], slo: SLO, settings: SearchSettings) -> tuple[Step, Estimate]:
    est = estimate(trials, slo, settings)
    return next_step(est, settings), est


# -- a whole search: arms, settings, prediction ---------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One environment at one KV budget: ``ctx_tokens`` (llama.cpp's context size, vLLM's
    block count in tokens) or ``kv_cache_bytes`` (vLLM's explicit KV size); neither: the
    engine sizes it from the memory it sees there."""

    environment: str
    ctx_tokens: int | None = None
    kv_cache_bytes: int | None = None

    @property
    def name(self) -> str:
        budget = (f"ctx={self.ctx_tokens}" if self.ctx_tokens is not None
                  else f"kv={self.kv_cache_bytes}B" if self.kv_cache_bytes is not None else "kv=auto")  # fmt: skip
        return f"{self.environment}/{budget}"

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "ctx_tokens": self.ctx_tokens, "kv_cache_bytes": self.kv_cache_bytes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Arm:
        return cls(d["environment"], d.get("ctx_tokens"), d.get("kv_cache_bytes"))


@dataclass(frozen=True)
class CapacitySettings:
    """Everything a search needs beyond the stored runs; stored with it (Store
    ``capacity_searches``) so ``--resume`` needs nothing else."""

    capacity_id: str
    base: Mapping[str, Any]  # the base RunSpec (dict): engine, workload shape, sampler, limits
    arms: tuple[Arm, ...]
    slo: str  # SLO text (parse_slo)
    search: SearchSettings
    requests: int | None = None  # per point; None: requests_per_load x load (at least min_requests)
    requests_per_load: int = 2
    concurrency_cap: int | None = None  # rate searches: the client's cap on requests in flight
    parallel: str = "fit"  # llama.cpp slots: 'fit' (ctx // tokens per request) or a number
    min_requests: int = 4  # per point, whatever the load

    def __post_init__(self) -> None:
        if self.min_requests < 1 or self.requests_per_load < 1 or (self.requests is not None and self.requests < 1):
            raise UsageError("requests per point, per unit of load and at least per point must be >= 1")
        names = [a.name for a in self.arms]
        if not names or len(set(names)) != len(names):
            raise UsageError(f"a capacity search needs distinct arms (environment and KV budget), got {names}")

    def to_dict(self) -> dict[str, Any]:
        return {"capacity_id": self.capacity_id, "base": dict(self.base), "arms": [a.to_dict() for a in self.arms],
                "slo": self.slo, "search": self.search.to_dict(), "requests": self.requests,
                "requests_per_load": self.requests_per_load, "concurrency_cap": self.concurrency_cap,
                "parallel": self.parallel, "min_requests": self.min_requests}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CapacitySettings:
        return cls(d["capacity_id"], d["base"], tuple(Arm.from_dict(a) for a in d["arms"]), d["slo"],
                   SearchSettings.from_dict(d["search"]), d.get("requests"), d.get("requests_per_load", 2),
                   d.get("concurrency_cap"), d.get("parallel", "fit"), d.get("min_requests", 4))  # fmt: skip

    def fingerprint(self) -> str:
        body = {k: v for k, v in self.to_dict().items() if k != "capacity_id"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def point_requests(settings: CapacitySettings, load: float) -> int:
    """Measured requests at a point: the fixed count, or ``requests_per_load`` per unit of
    load (so every slot turns over that many times), at least ``min_requests``."""
    if settings.requests is not None:
        return settings.requests
    return max(settings.min_requests, math.ceil(settings.requests_per_load * load))


def run_label(capacity_id: str, arm: Arm, ladder: Ladder, rung: int) -> str:
    return f"{capacity_id} {arm.name} {ladder.label(rung)}"


def arm_of_label(label: str | None, capacity_id: str) -> str | None:
    """The arm's name in a point's label (what :func:`run_label` wrote)."""
    if not label or not label.startswith(capacity_id + " "):
        return None
    parts = label.split(" ")
    return parts[1] if len(parts) >= 3 else None
