"""memgap's streaming client against the TEST DOUBLE server (openai_stream_double.py)."""

from __future__ import annotations

import json
import socket

import pytest
from openai_stream_double import Behavior, OpenAIStreamDouble

from memgap.load.client import run_workload_sync
from memgap.load.records import RequestRecord
from memgap.load.spec import WorkloadSpec


def spec(**kw: object) -> WorkloadSpec:
    base: dict[str, object] = {
        "requests": 4, "concurrency": 2, "prompt_tokens": 12, "output_tokens": 5,
        "warmup_requests": 1, "timeout_s": 10.0,
    }  # fmt: skip
    base.update(kw)
    return WorkloadSpec(**base)


def measured(records: tuple[RequestRecord, ...]) -> list[RequestRecord]:
    return [r for r in records if not r.warmup]


def test_completions_tokens_itls_usage_and_warmup(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(first_delay_s=0.05, token_delay_s=0.01)
    seen: list[RequestRecord] = []
    res = run_workload_sync(stream_double.base_url, spec(), seen.append)

    assert len(seen) == 5 and sum(r.warmup for r in seen) == 1  # callback sees warm-up too
    assert len(stream_double.state.received) == 5  # the server got the warm-up as well
    assert [r.index for r in measured(res.records)] == [0, 1, 2, 3]
    for r in measured(res.records):
        assert r.ok, r.error
        assert r.output_tokens == 5 and r.output_tokens_client == 5
        assert len(r.itl_s) == 4 and all(g >= 0.005 for g in r.itl_s)
        assert r.ttft_s is not None and r.ttft_s >= 0.045
        assert r.e2e_s is not None and r.e2e_s >= r.ttft_s + sum(r.itl_s) - 1e-6
        assert r.finish_reason == "length" and r.cached_prompt_tokens == 0
        assert r.prompt_tokens == 12  # the double's usage counts the prompt it was sent
    s = res.summary
    assert (s.requests_ok, s.requests_errored, s.output_tokens) == (4, 0, 20)
    assert s.token_count_mismatches == 0 and s.itl_s.n == 16
    assert s.output_tokens_per_s == pytest.approx(20 / res.duration_s)
    json.dumps(res.to_dict())


def test_request_body(stream_double: OpenAIStreamDouble) -> None:
    run_workload_sync(stream_double.base_url, spec(requests=1, warmup_requests=0))
    body = stream_double.state.received[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 5 and body["temperature"] == 0 and body["ignore_eos"] is True
    assert body["model"] == "double-model"  # from /v1/models when the spec names none
    run_workload_sync(
        stream_double.base_url,
        spec(requests=1, warmup_requests=0, api="chat", model="m", ignore_eos=False),
    )
    body = stream_double.state.received[1].body
    assert stream_double.state.received[1].path == "/v1/chat/completions"
    assert body["messages"][0]["role"] == "user" and body["model"] == "m"
    assert "ignore_eos" not in body


def test_chat_ttft_skips_role_only_and_empty_chunks(stream_double: OpenAIStreamDouble) -> None:
    # role-only and empty chunks arrive at once; the first word 0.2 s later
    stream_double.state.behave = lambda seq, body: Behavior(first_delay_s=0.2, empty_chunk=True)
    res = run_workload_sync(stream_double.base_url, spec(api="chat", requests=2, warmup_requests=0))
    for r in res.records:
        assert r.ok, r.error
        assert r.ttft_s is not None and r.ttft_s >= 0.19
        assert r.output_tokens_client == 5 and r.output_tokens == 5
        assert len(r.itl_s) == 4


def test_chat_without_usage_counts_client_tokens(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(usage=False)
    res = run_workload_sync(stream_double.base_url, spec(api="chat", warmup_requests=0))
    assert all(r.ok and r.output_tokens is None for r in res.records)
    assert res.summary.usage_missing == 4 and res.summary.output_tokens == 20
    assert res.summary.token_count_mismatches == 0


def test_usage_mismatch_is_counted(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(usage_tokens=7 if seq % 2 else None)
    res = run_workload_sync(stream_double.base_url, spec(warmup_requests=0))
    assert res.summary.token_count_mismatches == 2
    assert res.summary.output_tokens == 5 + 7 + 5 + 7  # the server's count wins


def test_batched_events_in_one_read_each_count(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(batch=True)
    res = run_workload_sync(stream_double.base_url, spec(requests=1, warmup_requests=0))
    (r,) = res.records
    assert r.ok and r.output_tokens_client == 5 and len(r.itl_s) == 4


def test_concurrency_is_never_exceeded(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(token_delay_s=0.01, first_delay_s=0.02)
    res = run_workload_sync(stream_double.base_url, spec(requests=12, concurrency=3))
    assert stream_double.state.max_in_flight == 3  # reached, and never more
    assert res.summary.requests_ok == 12


def test_errors_are_records_not_exceptions(stream_double: OpenAIStreamDouble) -> None:
    behaviors = {
        0: Behavior(status=500),
        1: Behavior(status=503, error_body="busy, come back later"),
        2: Behavior(cut_after=2),
        3: Behavior(stall_after=1),
        4: Behavior(error_event_after=3),
        5: Behavior(done=False),
    }
    stream_double.state.behave = lambda seq, body: behaviors.get(seq, Behavior())
    res = run_workload_sync(
        stream_double.base_url, spec(requests=8, concurrency=8, warmup_requests=0, timeout_s=0.6)
    )
    by_seq = {r.index: r for r in res.records}
    kinds = {r.index: r.error_kind for r in res.records}
    # the double numbers requests in arrival order; map that back through the prompts
    errors = sorted(k for k in kinds.values() if k)
    assert errors == [
        "broken stream",
        "broken stream",
        "http 500",
        "http 503",
        "stream error",
        "timeout",
    ]
    assert dict(res.summary.errors_by_kind) == {
        "broken stream": 2,
        "http 500": 1,
        "http 503": 1,
        "stream error": 1,
        "timeout": 1,
    }
    assert res.summary.requests_ok == 2 and res.summary.requests_errored == 6
    http503 = next(r for r in by_seq.values() if r.error_kind == "http 503")
    assert http503.http_status == 503 and http503.error == "http 503: busy, come back later"
    stalled = next(r for r in by_seq.values() if r.error == "timeout")
    assert stalled.output_tokens_client == 1 and stalled.ttft_s is not None
    assert stalled.e2e_s is None
    cut = next(
        r
        for r in by_seq.values()
        if r.error_kind == "broken stream" and r.output_tokens_client == 2
    )
    assert cut.http_status == 200 and not cut.ok
    assert any(r.error == "broken stream: ended before [DONE]" for r in res.records)
    assert res.summary.e2e_s.n == 2  # only the successful ones


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_gives_all_failed_summary() -> None:
    res = run_workload_sync(f"http://127.0.0.1:{free_port()}", spec(requests=3))
    assert all(r.error is not None and r.error.startswith("connect: ") for r in res.records)
    assert res.summary.requests_errored == 3 and res.summary.requests_ok == 0
    assert res.summary.ttft_s.p50 is None and res.summary.output_tokens_per_s is None
    assert res.prompt_info["tokenizer"] == "approximate"


def test_rate_mode_schedule_and_queue_delay(stream_double: OpenAIStreamDouble) -> None:
    # 20 req/s but one slot and 0.15 s per request: requests pile up behind the slot
    stream_double.state.behave = lambda seq, body: Behavior(first_delay_s=0.15, tokens=1)
    res = run_workload_sync(
        stream_double.base_url,
        spec(requests=5, concurrency=1, request_rate_per_s=20.0, warmup_requests=0),
    )
    recs = list(res.records)
    assert [r.scheduled_s for r in recs] == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20])
    for r in recs:
        assert r.ok and r.sent_s >= r.scheduled_s - 1e-3
        # latency is measured from the scheduled time, so it includes the wait for the slot
        assert r.ttft_s is not None and r.ttft_s >= r.queue_delay_s + 0.14
    assert recs[-1].queue_delay_s >= 4 * 0.15 - 0.2 - 0.02
    assert res.summary.queue_delay_s.p99 is not None and res.summary.queue_delay_s.p99 > 0.3


def test_rate_mode_sends_on_time_when_slots_are_free(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(tokens=1)
    res = run_workload_sync(
        stream_double.base_url,
        spec(requests=6, concurrency=6, request_rate_per_s=10.0, warmup_requests=0),
    )
    arrivals = sorted(r.arrived for r in stream_double.state.received)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # the server sees the schedule's spacing (loose bounds: a loaded 2-core machine jitters)
    assert sum(gaps) / len(gaps) == pytest.approx(0.1, abs=0.02)
    assert min(gaps) > 0.04
    assert all(r.queue_delay_s < 0.05 for r in res.records)


def test_prompts_are_exact_distinct_and_built_before_timing(
    stream_double: OpenAIStreamDouble,
) -> None:
    res = run_workload_sync(stream_double.base_url, spec(prompt_tokens=40))
    info = res.prompt_info
    assert info["tokenizer"] == "server" and info["exact"] == 5 and info["prompts"] == 5
    prompts = [r.body["prompt"] for r in stream_double.state.received]
    assert len(set(prompts)) == 5
    assert all(r.prompt_tokens == 40 for r in res.records)
    again = run_workload_sync(stream_double.base_url, spec(prompt_tokens=40))
    assert again.prompt_info == info
    prompts2 = [r.body["prompt"] for r in stream_double.state.received[5:]]
    assert sorted(prompts2) == sorted(prompts)  # same seed, same prompts


def test_shared_prompt_when_not_distinct(stream_double: OpenAIStreamDouble) -> None:
    run_workload_sync(stream_double.base_url, spec(distinct_prompts=False))
    assert len({r.body["prompt"] for r in stream_double.state.received}) == 1


def test_no_tokenizer_gives_approximate_prompts(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.tokenizer = False
    res = run_workload_sync(stream_double.base_url, spec(prompt_tokens=30))
    assert res.prompt_info["tokenizer"] == "approximate"
    assert res.prompt_info["measured_tokens_min"] is None
    assert all(len(r.body["prompt"].split()) == 30 for r in stream_double.state.received)


def test_wrong_path_is_an_http_error(stream_double: OpenAIStreamDouble) -> None:
    res = run_workload_sync(stream_double.base_url + "/nope", spec(requests=2, warmup_requests=0))
    assert {r.error_kind for r in res.records} == {"http 404"}


class Stop(Exception):
    pass


def test_callback_exception_reaches_the_caller_as_itself(stream_double: OpenAIStreamDouble) -> None:
    def on_record(r: RequestRecord) -> None:
        if not r.warmup:
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        run_workload_sync(stream_double.base_url, spec(), on_record)


def test_records_say_what_they_asked_for(stream_double: OpenAIStreamDouble) -> None:
    res = run_workload_sync(stream_double.base_url, spec(output_tokens=3, requests=2))
    assert all(r.max_tokens == 3 and r.output_tokens == 3 for r in res.records)


def test_prompt_cache_hits_are_counted(stream_double: OpenAIStreamDouble) -> None:
    stream_double.state.behave = lambda seq, body: Behavior(cached_tokens=4 if seq >= 3 else 0)
    res = run_workload_sync(stream_double.base_url, spec())  # seq 0 is the warm-up
    assert [r.cached_prompt_tokens for r in res.records if not r.warmup] == [0, 0, 4, 4]
    assert res.summary.prompt_cache_hits == 2
