"""What ``memgap capacity``'s adaptive search costs against a fixed grid, and what its
bootstrap costs per decision, measured side by side.

1. Runs: a simulated KV-bound engine (``capacity`` slots; a request beyond them waits a
   generation, 3 s, against a 2 s TTFT p99 bound; prefill 0.02 s per request in flight;
   optional noise on every TTFT) searched on a ladder of concurrency 1..``--high``. For
   each capacity, the runs the search used, whether its interval holds the true boundary,
   and the grid's count (every rung once; every rung ``repeats`` times, which a grid needs
   for the same interval since it cannot know which rungs are near the boundary).
2. Time per decision: ``memgap.capacity.estimate`` with the row percentile it uses against
   the same bootstrap computed with ``np.nanpercentile`` (which processes rows one by one),
   on the trials of a finished search.

    .venv/bin/python benchmarks/capacity_search.py [--high 32] [--noise 0.3] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import memgap.capacity as cap
from memgap.capacity import Ladder, SearchSettings, Trial, decide, estimate
from memgap.load.records import RequestRecord
from memgap.load.slo import parse_slo

SLO = parse_slo("ttft_p99_s<=2,errors<=0%")
# Small enough that the KV budget, not prefill plus noise, breaks the bound up to 32.
PREFILL_S = 0.02


def _req(i: int, ttft: float) -> RequestRecord:
    return RequestRecord(i, False, 0.0, 0.0, ttft, (0.02,) * 7, ttft + 1.0, 8, 8, 64, 200, None)


def search(capacity: int, s: SearchSettings, noise: float, seed: int) -> tuple[int, Any]:
    rnd = random.Random(seed)
    trials: list[Trial] = []
    while True:
        step, est = decide(trials, SLO, s)
        if step.done:
            return len(trials), (step, est)
        assert step.rung is not None
        c = int(s.ladder.load(step.rung))
        ttfts = [PREFILL_S * min(c, capacity) + (3.0 if i % c >= capacity else 0.0) + abs(rnd.gauss(0, noise))
                 for i in range(max(4, 2 * c))]  # fmt: skip
        trials.append(Trial(step.rung, f"r{len(trials):03d}", tuple(_req(i, t) for i, t in enumerate(ttfts))))


@contextmanager
def nanpercentile_rows() -> Iterator[None]:
    """Swap the row percentile for numpy's nanpercentile (the straightforward way)."""
    real = cap.row_percentile

    def slow(values: np.ndarray, q: float) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanpercentile(values, q, axis=1))

    cap.row_percentile = slow
    try:
        yield
    finally:
        cap.row_percentile = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--high", type=int, default=32)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    s = SearchSettings(Ladder("concurrency", 1, a.high, 1), max_runs=24)
    print(f"ladder 1..{a.high}: a grid runs {s.ladder.size} points once, {s.ladder.size * s.repeats} with "
          f"{s.repeats} repeats each")  # fmt: skip
    print(f"{'capacity':>8} {'noise':>5} {'runs (median, max)':>19} {'held':>5} {'grid/runs':>9}")
    for capacity in (1, 3, 4, 7, 12, 20, a.high - 1):
        for noise in (0.0, a.noise):
            used, held = [], 0
            for seed in range(a.seeds):
                n, (_, est) = search(capacity, s, noise, seed)
                used.append(n)
                lo, hi = est.load(est.low_rung), est.load(est.high_rung)
                held += lo is not None and hi is not None and lo <= capacity <= hi
            med = statistics.median(used)
            print(f"{capacity:>8} {noise:>5.1f} {med:>12g}, {max(used):>4} {held:>3}/{a.seeds} {s.ladder.size / med:>8.1f}x")

    _, (_, est) = search(12, s, a.noise, 0)
    trials = []
    rnd = random.Random(0)
    for r in est.rungs:
        c = int(r.load)
        for k in range(r.runs):
            ttfts = [PREFILL_S * min(c, 12) + (3.0 if i % c >= 12 else 0.0) + abs(rnd.gauss(0, a.noise)) for i in range(2 * c)]
            trials.append(Trial(r.rung, f"{r.rung}-{k}", tuple(_req(i, t) for i, t in enumerate(ttfts))))

    def per_decision() -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            estimate(trials, SLO, s)
            times.append(time.perf_counter() - t)
        return min(times)

    fast = per_decision()
    with nanpercentile_rows():
        slow = per_decision()
    print(f"one decision over {len(trials)} runs at {len(est.rungs)} loads, {s.bootstrap} replicates: "
          f"{1000 * fast:.1f} ms (row percentile), {1000 * slow:.1f} ms (np.nanpercentile): {slow / fast:.0f}x")
    assert math.isfinite(fast)


if __name__ == "__main__":
    main()
