import numpy as np
import pytest

from memgap.load.schedule import arrival_offsets_s


def test_constant_spacing() -> None:
    assert arrival_offsets_s(4, 2.0, "constant", seed=0) == [0.0, 0.5, 1.0, 1.5]
    assert arrival_offsets_s(0, 2.0, "constant", seed=0) == []


def test_poisson_is_seeded_increasing_and_has_the_rate() -> None:
    a = arrival_offsets_s(5000, 50.0, "poisson", seed=7)
    assert a == arrival_offsets_s(5000, 50.0, "poisson", seed=7)
    assert a != arrival_offsets_s(5000, 50.0, "poisson", seed=8)
    assert a[0] == 0.0 and all(y >= x for x, y in zip(a, a[1:], strict=False))
    gaps = np.diff(a)
    assert gaps.mean() == pytest.approx(1 / 50.0, rel=0.05)
    # exponential gaps: the standard deviation equals the mean (constant spacing has 0)
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.1)
