"""Each quality check on data built to trigger it, and on data that must not."""

from __future__ import annotations

import datetime as dt
from typing import Any

from memgap.analysis.quality import (
    Observation,
    check_confounding,
    check_cv,
    check_drift,
    check_failed,
    check_iterations,
    check_power,
)

T0 = dt.datetime(2026, 1, 1)


def obs(i: int, env: str, value: float = 100.0, *, it: int | None = None, status: str = "ok",
        model: str = "m") -> Observation:
    return Observation(run_id=f"{env}{i}", model=model, environment=env, time=(T0 + dt.timedelta(minutes=i)).isoformat(),
                       status=status, iteration=it, values={"x": value})


def interleaved(n: int = 10, values: Any = None) -> list[Observation]:
    out = []
    for i in range(n):
        v = values(i) if values else 100.0 + (i % 3)
        out += [obs(2 * i, "native", v, it=i + 1), obs(2 * i + 1, "sandbox", v, it=i + 1)]
    return out


def test_duplicate_iterations_found() -> None:
    rows = [obs(i, "native", it=it) for i, it in enumerate([1, 1, 1, 2, 3])]
    (f,) = [f for f in check_iterations(rows) if f.check == "duplicate_iterations"]
    assert f.severity == "error" and f.data["duplicates"] == {1: 3}
    assert "2 extra run(s)" in f.message and "5 runs for 3 iterations" in f.message
    assert check_iterations(interleaved()) == []


def test_missing_iterations_found() -> None:
    rows = [obs(i, "native", it=it) for i, it in enumerate([1, 2, 5])]
    (f,) = check_iterations(rows)
    assert f.check == "missing_iterations" and f.data["missing"] == [3, 4]


def test_failed_runs() -> None:
    rows = interleaved(4) + [obs(50, "sandbox", status="failed")]
    (f,) = check_failed(rows)
    assert f.environment == "sandbox" and f.data["run_ids"] == ["sandbox50"] and "1 of 5" in f.message
    assert check_failed(interleaved(4)) == []


def test_drift_found_only_for_a_trend() -> None:
    rising = [obs(i, "native", 100.0 + i + (0.3 if i % 2 else 0)) for i in range(10)]
    (f,) = check_drift(rising, ["x"])
    assert f.check == "drift" and "rises" in f.message and f.data["tau"] > 0.8
    flat = [obs(i, "native", 100.0 + [0.1, -0.3, 0.2, 0.0, -0.1, 0.3, -0.2, 0.1, 0.0, -0.1][i]) for i in range(10)]
    assert check_drift(flat, ["x"]) == []
    assert check_drift(rising[:4], ["x"]) == []  # too few runs to call a trend


def test_confounding_all_a_then_all_b() -> None:
    seq = [obs(i, "native") for i in range(5)] + [obs(5 + i, "container") for i in range(5)]
    (f,) = check_confounding(seq)
    assert f.check == "confounded_with_time" and f.severity == "error"
    assert "all native runs came before all container runs" in f.message
    assert check_confounding(interleaved()) == []
    # mostly-before is flagged too
    mostly = [obs(i, "native") for i in range(9)] + [obs(9, "sandbox"), obs(10, "native")] + \
             [obs(11 + i, "sandbox") for i in range(8)]
    (g,) = check_confounding(mostly)
    assert "mostly before" in g.message


def test_high_cv() -> None:
    noisy = [obs(i, "native", v) for i, v in enumerate([80, 120, 100, 70, 130])]
    (f,) = check_cv(noisy, ["x"])
    assert f.check == "high_cv" and f.data["cv"] > 0.2 and f.data["runs_for_2pct"] > 100
    steady = [obs(i, "native", v) for i, v in enumerate([100, 101, 99, 100, 100.5])]
    assert check_cv(steady, ["x"]) == []


def _cmp(verdict: str, diff: float, sd: float, n: int) -> dict[str, Any]:
    return {"model": "m", "metric": "x", "verdict": verdict, "difference": {"mean": diff},
            "a": {"environment": "native", "n": n, "sd": sd}, "b": {"environment": "sandbox", "n": n, "sd": sd}}


def test_too_few_runs_for_the_claimed_difference() -> None:
    (f,) = check_power([_cmp("inconclusive", 1.0, 2.0, 5)])
    assert f.check == "too_few_runs" and f.data["runs_needed"] == 63 and f.data["n"] == 5
    (g,) = check_power([_cmp("different", 10.0, 1.0, 2)])
    assert "2 run(s)" in g.message
    assert check_power([_cmp("different", 10.0, 1.0, 10), _cmp("equivalent", 0.1, 1.0, 10)]) == []
