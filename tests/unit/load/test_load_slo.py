"""SLO parsing and goodput accounting on request timings built to pass and fail."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.errors import UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import SLO, goodput, goodput_of_dicts, mean_itl_s, parse_slo


def rec(
    index: int,
    *,
    ttft: float | None = 0.1,
    itl: tuple[float, ...] = (0.02, 0.02, 0.02),
    e2e: float | None = 0.2,
    error: str | None = None,
    warmup: bool = False,
    tokens: int | None = 4,
) -> RequestRecord:
    return RequestRecord(
        index=index, warmup=warmup, scheduled_s=float(index), sent_s=float(index),
        ttft_s=ttft, itl_s=itl, e2e_s=e2e, output_tokens=tokens, output_tokens_client=4,
        prompt_tokens=10, http_status=200 if error is None else 500, error=error,
    )  # fmt: skip


def test_parse_slo_keys_units_and_round_trip() -> None:
    slo = parse_slo("ttft_s=0.5, itl_s=50ms,e2e_s=2s")
    assert slo == SLO(ttft_s=0.5, itl_s=0.05, e2e_s=2.0)
    assert parse_slo(slo.describe()) == slo
    assert parse_slo("").empty and not slo.empty
    assert parse_slo("itl_s=0.05") == SLO(itl_s=0.05)


@pytest.mark.parametrize(
    "text",
    ["ttft=0.5", "ttft_s", "ttft_s=fast", "ttft_s=-1", "ttft_s=0", "ttft_s=1,ttft_s=2", "e2e_s=inf", "tpot_s=1"],
)
def test_parse_slo_refuses_bad_input(text: str) -> None:
    with pytest.raises(UsageError):
        parse_slo(text)


@given(st.text(max_size=40))
def test_parse_slo_never_raises_anything_but_usage_error(text: str) -> None:
    try:
        slo = parse_slo(text)
    except UsageError:
        return
    for v in slo.to_dict().values():
        assert v is None or v > 0


@given(
    st.floats(min_value=1e-3, max_value=1e3),
    st.floats(min_value=1e-3, max_value=1e3),
)
def test_parse_slo_reads_back_what_describe_writes(ttft: float, e2e: float) -> None:
    slo = SLO(ttft_s=ttft, e2e_s=e2e)
    back = parse_slo(slo.describe())
    assert back.ttft_s == pytest.approx(ttft, rel=1e-5) and back.e2e_s == pytest.approx(e2e, rel=1e-5)


def test_each_objective_fails_the_request_it_should() -> None:
    slo = SLO(ttft_s=0.5, itl_s=0.05, e2e_s=2.0)
    assert slo.misses(rec(0)) == ()
    assert slo.misses(rec(0, ttft=0.51)) == ("ttft_s",)
    assert slo.misses(rec(0, ttft=0.5)) == ()  # the bound itself meets it
    assert slo.misses(rec(0, itl=(0.01, 0.2))) == ("itl_s",)  # mean 0.105
    assert slo.misses(rec(0, itl=(0.01, 0.08))) == ()  # one slow gap, mean 0.045 passes
    assert slo.misses(rec(0, itl=())) == ()  # one chunk: no gaps to judge
    assert slo.misses(rec(0, e2e=2.5)) == ("e2e_s",)
    assert slo.misses(rec(0, ttft=0.9, e2e=3.0)) == ("ttft_s", "e2e_s")
    assert slo.misses(rec(0, ttft=None)) == ("ttft_s",)  # ok but no content: no TTFT
    assert slo.misses(rec(0, error="timeout")) == ("error",)
    assert SLO().misses(rec(0, ttft=99.0)) == ()  # no objective: every success meets it
    assert mean_itl_s(rec(0, itl=(0.01, 0.03))) == pytest.approx(0.02)


def test_goodput_counts_met_requests_next_to_throughput() -> None:
    slo = SLO(ttft_s=0.5, e2e_s=2.0)
    records = [
        rec(0, warmup=True, ttft=9.0),  # warm-up: not counted at all
        rec(0),  # meets
        rec(1, tokens=6),  # meets
        rec(2, ttft=0.7),  # ttft miss
        rec(3, e2e=2.1),  # e2e miss
        rec(4, error="http 500: boom"),  # failed
    ]
    g = goodput(records, slo, duration_s=2.0)
    assert (g.requests, g.requests_ok, g.requests_met) == (5, 4, 2)
    assert g.goodput_per_s == pytest.approx(1.0)
    assert g.throughput_per_s == pytest.approx(2.0)
    assert g.goodput_tokens_per_s == pytest.approx((4 + 6) / 2.0)
    assert g.met_fraction == pytest.approx(0.4)
    assert dict(g.missed_by) == {"e2e_s": 1, "error": 1, "ttft_s": 1}
    assert g.meets(0.4) and not g.meets(0.5)
    assert g.to_dict()["slo"] == {"ttft_s": 0.5, "itl_s": None, "e2e_s": 2.0}


def test_goodput_of_stored_rows_and_empty_runs() -> None:
    rows = [rec(0).to_dict(), rec(1, ttft=3.0).to_dict()]
    g = goodput_of_dicts(rows, SLO(ttft_s=1.0), 4.0)
    assert g.requests_met == 1 and g.goodput_per_s == pytest.approx(0.25)
    empty = goodput([], SLO(ttft_s=1.0), 4.0)
    assert empty.goodput_per_s is None and empty.met_fraction is None and not empty.meets(0.1)
    zero = goodput([rec(0)], SLO(), 0.0)
    assert zero.goodput_per_s is None and zero.met_fraction == 1.0


def test_slo_rejects_non_positive_bounds() -> None:
    with pytest.raises(UsageError):
        SLO(ttft_s=0.0)
