"""Drive an OpenAI-compatible server with a :class:`WorkloadSpec`.

One ``httpx.AsyncClient`` (one connection pool, sized to the concurrency) serves every
request. The order of a run: find the model name (when not given), build the prompts
(their tokenizer calls stay out of the timed part), send the warm-up requests, then the
measured ones, closed-loop or at the spec's rate. Errored requests are records, never
exceptions; only a callback's own exception or cancellation stops a run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from memgap.load.datasets import draw_lengths, load_dataset, sample_entries
from memgap.load.http1 import Pool
from memgap.load.prompts import CountTokens, build_prompt_with, tokenizer_for
from memgap.load.records import RequestRecord, WorkloadSummary, summarize
from memgap.load.request import PlannedRequest, request_body, send_request
from memgap.load.schedule import arrival_offsets_s
from memgap.load.spec import WorkloadSpec

OnRecord = Callable[[RequestRecord], None]
# Seeds of per-request prompts: far apart so that request i's words do not start where
# request i+1's do.
_PROMPT_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class WorkloadResult:
    spec: WorkloadSpec
    records: tuple[RequestRecord, ...]  # warm-up first, then measured, each by index
    duration_s: float  # first measured send to last measured end
    summary: WorkloadSummary
    prompt_info: Mapping[str, Any]
    model: str | None = None  # what requests named: the spec's, or the server's first model
    started_unix_s: float | None = field(default=None)  # wall clock at the measured start

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "model": self.model,
            "started_unix_s": self.started_unix_s,
            "duration_s": self.duration_s,
            "prompt_info": dict(self.prompt_info),
            "summary": self.summary.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }


async def _server_model(client: httpx.AsyncClient, base_url: str) -> str | None:
    """The first model the server lists; None when it lists none or has no `/v1/models`
    (llama.cpp does not need the name; older vLLM rejects a request without it)."""
    try:
        resp = await client.get(base_url + "/v1/models")
        data = resp.json().get("data") if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        model_id = data[0].get("id")
        return model_id if isinstance(model_id, str) else None
    return None


async def _plan_requests(
    client: httpx.AsyncClient, base_url: str, spec: WorkloadSpec
) -> tuple[list[PlannedRequest], list[PlannedRequest], dict[str, Any]]:
    count = tokenizer_for(client, base_url)
    if spec.dataset is not None:
        return await _plan_from_dataset(count, spec)
    n_distinct = spec.warmup_requests + spec.requests if spec.distinct_prompts else 1
    seeds = [spec.seed * _PROMPT_SEED_STRIDE + i for i in range(n_distinct)]
    # Lengths drawn from their own streams, so a uniform prompt length does not change the
    # output lengths drawn for the same seed.
    p_lens = draw_lengths(spec.prompt_tokens, spec.prompt_tokens_max, n_distinct, spec.seed)
    n_all = spec.warmup_requests + spec.requests
    o_lens = draw_lengths(spec.output_tokens, spec.output_tokens_max, n_all, spec.seed + 1)
    sem = asyncio.Semaphore(spec.concurrency)

    async def one(seed: int, n_tokens: int) -> tuple[str, int | None]:
        async with sem:
            return await build_prompt_with(count, n_tokens, seed)

    built = await asyncio.gather(*(one(s, n) for s, n in zip(seeds, p_lens, strict=True)))
    measured = [m for _, m in built if m is not None]
    info: dict[str, Any] = {
        "target_tokens": spec.prompt_tokens,
        "target_tokens_max": spec.prompt_tokens_max,
        "tokenizer": "server" if len(measured) == len(built) else "approximate",
        "distinct": spec.distinct_prompts,
        "prompts": len(built),
        "measured_tokens_min": min(measured) if measured else None,
        "measured_tokens_max": max(measured) if measured else None,
        "exact": sum(1 for (_, m), n in zip(built, p_lens, strict=True) if m == n),
        # A chat request wraps the prompt in the model's chat template, so the server's
        # usage reports more prompt tokens than these.
        "counted": "message content" if spec.api == "chat" else "whole prompt",
    }
    texts = [text for text, _ in built] if spec.distinct_prompts else [built[0][0]] * n_all
    planned = [PlannedRequest(t, o) for t, o in zip(texts, o_lens, strict=True)]
    return planned[: spec.warmup_requests], planned[spec.warmup_requests :], info


async def _plan_from_dataset(
    count: CountTokens, spec: WorkloadSpec
) -> tuple[list[PlannedRequest], list[PlannedRequest], dict[str, Any]]:
    assert spec.dataset is not None
    dataset = load_dataset(spec.dataset)
    n_all = spec.warmup_requests + spec.requests
    entries = sample_entries(dataset.entries, n_all, spec.seed)
    o_lens = draw_lengths(spec.output_tokens, spec.output_tokens_max, n_all, spec.seed + 1)
    sem = asyncio.Semaphore(spec.concurrency)

    async def measure(text: str | None) -> int | None:
        if text is None:
            return None
        async with sem:
            return await count(text)

    prompt_counts = await asyncio.gather(*(measure(e.prompt) for e in entries))
    reply_counts = await asyncio.gather(*(measure(e.output_text) for e in entries))
    planned: list[PlannedRequest] = []
    from_file = 0
    for entry, reply, fallback in zip(entries, reply_counts, o_lens, strict=True):
        # The tokenizer counts the reply with its BOS token, one more than it generates.
        wanted = entry.output_tokens or (max(reply - 1, 1) if reply is not None else None)
        from_file += wanted is not None
        planned.append(PlannedRequest(entry.prompt, wanted or fallback))
    measured = [c for c in prompt_counts if c is not None]
    info: dict[str, Any] = {
        "dataset": dataset.info(),
        "tokenizer": "server" if len(measured) == len(entries) else "approximate",
        "prompts": len(entries),
        "measured_tokens_min": min(measured) if measured else None,
        "measured_tokens_max": max(measured) if measured else None,
        "output_lengths_from_dataset": from_file,
        "counted": "message content" if spec.api == "chat" else "whole prompt",
    }
    return planned[: spec.warmup_requests], planned[spec.warmup_requests :], info


class _Runner:
    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        spec: WorkloadSpec,
        model: str | None,
        on_record: OnRecord | None,
    ) -> None:
        self.client = client
        self.url = url
        # Plain http (every local engine): memgap's own HTTP/1.1 client for the timed
        # requests (memgap.load.http1 says why); httpx for anything else.
        self.pool: Pool | None = None
        if url.startswith("http://"):
            base = url[: len(url) - len(spec.path)]
            self.pool = Pool(base, connect_timeout_s=min(spec.timeout_s, 10.0))
        self.spec = spec
        self.model = model
        self.on_record = on_record
        self.records: list[RequestRecord] = []

    async def send(
        self, index: int, planned: PlannedRequest, *, warmup: bool, scheduled: float, origin: float
    ) -> None:
        record = await send_request(
            self.pool if self.pool is not None else self.client,
            self.spec.path if self.pool is not None else self.url,
            request_body(self.spec, planned, self.model),
            index=index,
            warmup=warmup,
            scheduled=scheduled,
            origin=origin,
            timeout_s=self.spec.timeout_s,
        )
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    async def closed_loop(self, plan: list[PlannedRequest], *, warmup: bool, origin: float) -> None:
        """``concurrency`` workers, each sending its next request as soon as the last ends.
        The scheduled time is when a worker takes the request, so queue delay is ~0."""
        queue = iter(enumerate(plan))

        async def worker() -> None:
            for index, planned in queue:
                now = time.perf_counter()
                await self.send(index, planned, warmup=warmup, scheduled=now, origin=origin)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(self.spec.concurrency, len(plan))):
                tg.create_task(worker())

    async def open_loop(
        self, plan: list[PlannedRequest], offsets: list[float], *, origin: float
    ) -> None:
        """Requests are due at ``origin + offset`` whether or not a slot is free; one due
        while ``concurrency`` are in flight waits, and its latency includes the wait."""
        slots = asyncio.Semaphore(self.spec.concurrency)

        async def gated(index: int, planned: PlannedRequest, scheduled: float) -> None:
            async with slots:
                await self.send(index, planned, warmup=False, scheduled=scheduled, origin=origin)

        async with asyncio.TaskGroup() as tg:
            for (index, planned), offset in zip(enumerate(plan), offsets, strict=True):
                due = origin + offset
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tg.create_task(gated(index, planned, due))


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A TaskGroup wraps the one exception that stopped it (a callback's, say); give the
    caller that exception rather than a group of one."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group


async def run_workload(
    base_url: str, spec: WorkloadSpec, *, on_record: OnRecord | None = None
) -> WorkloadResult:
    """Run ``spec`` against the server at ``base_url`` (e.g. ``http://127.0.0.1:8080``).

    ``on_record`` is called with each record as it completes, warm-up ones included
    (``record.warmup``), from the event loop: keep it quick.
    """
    base = base_url.rstrip("/")
    limits = httpx.Limits(
        max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency
    )
    timeout = httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, 10.0))
    # trust_env=False: a proxy from the environment must not sit between us and a local engine
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        model = spec.model if spec.model is not None else await _server_model(client, base)
        warm_plan, plan, prompt_info = await _plan_requests(client, base, spec)
        runner = _Runner(client, base + spec.path, spec, model, on_record)

        # Computed before the clock starts: the first draw initialises numpy's generator,
        # which would otherwise show up as the first request's queue delay.
        offsets = (
            None
            if spec.request_rate_per_s is None
            else arrival_offsets_s(spec.requests, spec.request_rate_per_s, spec.arrival, spec.seed)
        )
        try:
            if warm_plan:
                await runner.closed_loop(warm_plan, warmup=True, origin=time.perf_counter())
            started_unix_s = time.time()
            origin = time.perf_counter()
            if offsets is None:
                await runner.closed_loop(plan, warmup=False, origin=origin)
            else:
                await runner.open_loop(plan, offsets, origin=origin)
            duration_s = time.perf_counter() - origin
        except BaseExceptionGroup as group:
            raise _sole(group) from None
        finally:
            if runner.pool is not None:
                runner.pool.close()

    records = tuple(sorted(runner.records, key=lambda r: (not r.warmup, r.index)))
    return WorkloadResult(
        spec=spec,
        records=records,
        duration_s=duration_s,
        summary=summarize(records, duration_s),
        prompt_info=prompt_info,
        model=model,
        started_unix_s=started_unix_s,
    )


def run_workload_sync(
    base_url: str, spec: WorkloadSpec, on_record: OnRecord | None = None
) -> WorkloadResult:
    return asyncio.run(run_workload(base_url, spec, on_record=on_record))
