"""When each request of an open-loop (rate-driven) workload is meant to be sent."""

from __future__ import annotations

import numpy as np

from memgap.load.spec import Arrival


def arrival_offsets_s(n: int, rate_per_s: float, arrival: Arrival, seed: int) -> list[float]:
    """Intended send times, seconds after the workload's start; the first is at 0.

    ``constant`` spaces requests ``1/rate`` apart; ``poisson`` draws exponential gaps of
    mean ``1/rate`` from a generator seeded with ``seed``, so a schedule is reproducible.
    """
    if n <= 0:
        return []
    if arrival == "constant":
        return [i / rate_per_s for i in range(n)]
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, size=n - 1)
    return [0.0, *np.cumsum(gaps).tolist()]
