import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.load.records import Percentiles, RequestRecord, error_kind, summarize


def rec(
    index: int = 0,
    *,
    warmup: bool = False,
    scheduled_s: float = 0.0,
    sent_s: float | None = None,
    ttft_s: float | None = 0.1,
    itl_s: tuple[float, ...] = (0.01, 0.02),
    e2e_s: float | None = 0.2,
    output_tokens: int | None = 3,
    output_tokens_client: int = 3,
    http_status: int | None = 200,
    error: str | None = None,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        warmup=warmup,
        scheduled_s=scheduled_s,
        sent_s=scheduled_s if sent_s is None else sent_s,
        ttft_s=ttft_s,
        itl_s=itl_s,
        e2e_s=e2e_s,
        output_tokens=output_tokens,
        output_tokens_client=output_tokens_client,
        prompt_tokens=10,
        http_status=http_status,
        error=error,
    )


def test_error_kind() -> None:
    assert error_kind("http 503: server busy: try later") == "http 503"
    assert error_kind("timeout") == "timeout"
    assert error_kind("broken stream: peer closed") == "broken stream"


def test_record_round_trips_through_json() -> None:
    r = rec(3, itl_s=(0.5, 0.25))
    assert RequestRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_ok_needs_status_200_and_no_error() -> None:
    assert rec().ok
    assert not rec(http_status=500, error="http 500: x").ok
    assert not rec(error="timeout").ok
    assert not rec(http_status=None, error="connect: refused").ok


def test_summary_counts_tokens_errors_and_excludes_warmup() -> None:
    records = [
        rec(0, warmup=True, output_tokens=1000, ttft_s=99.0),
        rec(0, ttft_s=0.1, output_tokens=4, output_tokens_client=4, e2e_s=1.0),
        rec(1, ttft_s=0.3, output_tokens=6, output_tokens_client=5, e2e_s=2.0),  # mismatch
        rec(2, output_tokens=None, output_tokens_client=7),  # no usage: client count
        rec(
            3,
            http_status=503,
            error="http 503: busy",
            ttft_s=None,
            output_tokens=None,
            output_tokens_client=0,
        ),
        rec(4, error="timeout", ttft_s=5.0, output_tokens=None, output_tokens_client=2),
        rec(5, error="timeout", ttft_s=None, output_tokens=None, output_tokens_client=0),
    ]
    s = summarize(records, duration_s=2.0)
    assert (s.requests_ok, s.requests_errored) == (3, 3)
    assert s.output_tokens == 4 + 6 + 7
    assert s.output_tokens_per_s == pytest.approx(17 / 2.0)
    assert s.request_throughput_per_s == pytest.approx(1.5)
    assert s.token_count_mismatches == 1
    assert s.usage_missing == 1
    assert dict(s.errors_by_kind) == {"http 503": 1, "timeout": 2}
    # failed requests' TTFT (5.0) and warm-up's (99.0) are not in the latency percentiles
    assert s.ttft_s.n == 3 and s.ttft_s.p50 == pytest.approx(0.1)
    assert s.itl_s.n == 6
    # queue delay covers every measured request, failed ones too
    assert s.queue_delay_s.n == 6
    json.dumps(s.to_dict())


def test_all_failed_run_has_none_not_zero() -> None:
    records = [
        rec(
            i,
            error="connect: refused",
            http_status=None,
            ttft_s=None,
            e2e_s=None,
            itl_s=(),
            output_tokens=None,
            output_tokens_client=0,
        )
        for i in range(3)
    ]
    s = summarize(records, duration_s=1.0)
    assert s.requests_ok == 0 and s.requests_errored == 3
    assert s.request_throughput_per_s is None and s.output_tokens_per_s is None
    for p in (s.ttft_s, s.itl_s, s.e2e_s):
        assert p == Percentiles(None, None, None, None, 0)
    d = s.to_dict()
    assert d["ttft_s"] == {"p50": None, "p90": None, "p99": None, "mean": None, "n": 0}


def test_empty_run_and_zero_duration() -> None:
    s = summarize([], duration_s=0.0)
    assert s.requests_ok == 0 and s.output_tokens == 0
    assert s.queue_delay_s.n == 0 and s.queue_delay_s.p99 is None
    s2 = summarize([rec()], duration_s=0.0)
    assert s2.request_throughput_per_s is None  # no duration, no rate


def test_queue_delay_is_sent_minus_scheduled() -> None:
    s = summarize([rec(0, scheduled_s=1.0, sent_s=1.5), rec(1, scheduled_s=2.0, sent_s=2.0)], 3.0)
    assert s.queue_delay_s.mean == pytest.approx(0.25)
    assert s.queue_delay_s.p50 == pytest.approx(0.25)


finite = st.floats(min_value=0, max_value=1e4, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, max_size=200))
def test_percentiles_match_numpy(values: list[float]) -> None:
    p = Percentiles.of(values)
    assert p.n == len(values)
    if not values:
        assert (p.p50, p.p90, p.p99, p.mean) == (None, None, None, None)
        return
    expected = np.percentile(np.array(values), [50, 90, 99])
    assert [p.p50, p.p90, p.p99] == pytest.approx(list(expected))
    assert p.mean == pytest.approx(float(np.mean(values)))
    assert p.p50 is not None and p.p90 is not None and p.p99 is not None
    assert min(values) <= p.p50 <= p.p90 <= p.p99 <= max(values)


@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), finite),  # ttft
            st.lists(finite, max_size=5),  # itl
            st.booleans(),  # ok
            st.booleans(),  # warmup
        ),
        max_size=60,
    )
)
def test_summary_percentiles_match_numpy_over_ok_measured(rows: list) -> None:
    records = [
        rec(
            i,
            ttft_s=t,
            itl_s=tuple(itl),
            warmup=w,
            http_status=200 if ok else 500,
            error=None if ok else "http 500: x",
        )
        for i, (t, itl, ok, w) in enumerate(rows)
    ]
    s = summarize(records, duration_s=10.0)
    ok_measured = [r for r in records if r.ok and not r.warmup]
    ttfts = [r.ttft_s for r in ok_measured if r.ttft_s is not None]
    gaps = [g for r in ok_measured for g in r.itl_s]
    assert s.ttft_s == Percentiles.of(ttfts)
    assert s.itl_s == Percentiles.of(gaps)
    if ttfts:
        assert s.ttft_s.p90 == pytest.approx(float(np.percentile(ttfts, 90)))
    assert s.requests_ok == len(ok_measured)
    assert s.requests_errored == sum(1 for r in records if not r.ok and not r.warmup)
    assert s.requests_ok + s.requests_errored == sum(1 for r in records if not r.warmup)
    assert all(not math.isnan(v) for v in (s.ttft_s.mean or 0.0, s.itl_s.mean or 0.0))
