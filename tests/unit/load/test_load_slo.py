"""SLO parsing and goodput accounting on request timings built to pass and fail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.errors import UsageError
from memgap.load.records import RequestRecord
from memgap.load.slo import (
    PERCENTILE_METRICS,
    SLO,
    SLO_KEYS,
    PercentileBound,
    goodput,
    goodput_of_dicts,
    mean_itl_s,
    parse_slo,
)


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


# -- percentile and error bounds (over a load point's requests) ------------------------------

seconds = st.floats(min_value=1e-4, max_value=1e4, allow_nan=False, allow_infinity=False)
percentile_bounds = st.builds(
    PercentileBound,
    metric=st.sampled_from(PERCENTILE_METRICS),
    percentile=st.one_of(st.sampled_from([50.0, 90.0, 95.0, 99.0, 99.9, 100.0]),
                         st.floats(min_value=0.001, max_value=100.0)),
    bound_s=seconds,
)
slos = st.builds(
    SLO,
    ttft_s=st.none() | seconds,
    itl_s=st.none() | seconds,
    e2e_s=st.none() | seconds,
    percentiles=st.lists(percentile_bounds, max_size=4, unique_by=lambda b: b.key).map(tuple),
    errors_max=st.none() | st.floats(min_value=0.0, max_value=1.0) | st.sampled_from([0.0, 0.01, 0.05, 1.0]),
)


@given(slos)
def test_describe_reads_back_exactly(slo: SLO) -> None:
    assert parse_slo(slo.describe()) == slo


@given(slos, st.randoms())
def test_order_of_objectives_does_not_matter(slo: SLO, rnd: Any) -> None:
    parts = slo.describe().split(",")
    rnd.shuffle(parts)
    assert parse_slo(" , ".join(parts)) == slo


@given(st.sampled_from(SLO_KEYS), seconds)
def test_per_request_keys_read_the_same_with_equals_or_at_most(key: str, v: float) -> None:
    # backward compatible: the text every stored spec holds ("ttft_s=0.5") means what it did
    assert parse_slo(f"{key}={v!r}") == parse_slo(f"{key}<={v!r}") == SLO(**{key: v})
    assert parse_slo(f"{key}={v!r}").percentiles == () and parse_slo(f"{key}={v!r}").errors_max is None


@given(st.text(alphabet=st.sampled_from(list("ttfitle2ps_rro%<=,.0129m ")), max_size=30))
def test_grammar_like_text_never_raises_anything_but_usage_error(text: str) -> None:
    try:
        slo = parse_slo(text)
    except UsageError:
        return
    assert all(b.bound_s > 0 and 0 < b.percentile <= 100 for b in slo.percentiles)
    assert slo.errors_max is None or 0 <= slo.errors_max <= 1


def test_the_issue_example_and_its_units() -> None:
    slo = parse_slo("ttft_p99_s<=2,itl_p99_s<=200ms,errors<=1%")
    assert slo.percentiles == (PercentileBound("ttft", 99.0, 2.0), PercentileBound("itl", 99.0, 0.2))
    assert slo.errors_max == 0.01 and not slo.per_request and not slo.empty
    assert slo.describe() == "ttft_p99_s<=2,itl_p99_s<=0.2,errors<=1%"
    assert slo.to_dict() == {"ttft_s": None, "itl_s": None, "e2e_s": None, "ttft_p99_s": 2.0, "itl_p99_s": 0.2,
                             "errors": 0.01}  # fmt: skip
    assert parse_slo("errors<=0.05").errors_max == 0.05 and parse_slo("errors=0").errors_max == 0.0
    assert parse_slo("e2e_p99.0_s<=3") == parse_slo("e2e_p99_s<=3")  # one key, however written
    assert parse_slo("ttft_p99.9_s<=1").percentiles[0].key == "ttft_p99.9_s"


@pytest.mark.parametrize(
    "text",
    ["ttft_p99_s<=0", "ttft_p0_s<=1", "ttft_p101_s<=1", "ttft_p99<=1", "ttft_pxx_s<=1", "tpot_p99_s<=1",
     "errors<=2", "errors<=-1%", "errors<=101%", "errors<=lots", "ttft_p99_s<=1,ttft_p99.0_s<=2",
     "errors<=1%,errors<=2%", "ttft_p99_s<=2%", "ttft_p99_s>=1", "ttft_s<=inf"],
)  # fmt: skip
def test_bad_percentile_and_error_bounds_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_slo(text)


def test_check_judges_a_point_by_percentiles_and_error_share() -> None:
    ttfts = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    records = [rec(i, ttft=t) for i, t in enumerate(ttfts)] + [rec(10, warmup=True, ttft=50.0)]
    p90 = float(np.percentile(ttfts, 90))
    assert p90 == pytest.approx(0.91)
    ok = parse_slo(f"ttft_p90_s<={p90}").check(records)
    assert ok.met and ok.observed["ttft_p90_s"] == pytest.approx(p90) and ok.requests == 10
    assert parse_slo("ttft_p90_s<=0.9").check(records).missed == ("ttft_p90_s",)
    # one failure in 11: 9.1% -- errored requests are out of the percentiles, in the share
    failed = [*records, rec(11, error="http 500: Context size has been exceeded")]
    c = parse_slo(f"ttft_p90_s<={p90},errors<=9%").check(failed)
    assert c.missed == ("errors",) and c.observed["errors"] == pytest.approx(1 / 11) and c.requests_ok == 10
    assert parse_slo(f"ttft_p90_s<={p90},errors<=10%").check(failed).met
    # itl ranks each request's mean gap; a one-chunk reply has none and is not ranked
    itl = [rec(0, itl=(0.01, 0.03)), rec(1, itl=(0.2,)), rec(2, itl=())]
    assert parse_slo("itl_p100_s<=0.2").check(itl).observed["itl_p100_s"] == pytest.approx(0.2)
    # nothing to rank (every request failed, or none measured): the bound is missed, not met
    assert parse_slo("ttft_p99_s<=9").check([rec(0, error="timeout")]).missed == ("ttft_p99_s",)
    assert parse_slo("errors<=100%").check([]).missed == ("errors",)
    assert SLO(ttft_s=0.1).check(records).met  # per-request bounds are goodput's, not judged here
