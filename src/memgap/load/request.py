"""One streamed request, timed, turned into a :class:`RequestRecord` whatever happens.

Every failure a server or network can cause becomes the record's ``error``:
``http <status>: <body head>``, ``timeout``, ``broken stream: ...``, ``connect: ...``,
``stream error: ...`` (an error event inside a 200 stream). Only cancellation escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from memgap.load.chunks import DONE, StreamFormatError, parse_chunk
from memgap.load.http1 import BrokenResponse, ConnectFailed, Pool
from memgap.load.records import RequestRecord
from memgap.load.spec import WorkloadSpec
from memgap.load.sse import SSEDecoder, SSEError

ERROR_BODY_HEAD_CHARS = 200
_ERROR_BODY_READ_BYTES = 4096
_DRAIN_S = 1.0


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """What one request will ask for. Fixed-length workloads give every request the same
    lengths; length distributions and datasets plan each request apart."""

    prompt: str
    max_tokens: int


def request_body(spec: WorkloadSpec, planned: PlannedRequest, model: str | None) -> dict[str, Any]:
    prompt = planned.prompt
    body: dict[str, Any] = {
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": planned.max_tokens,
        "temperature": 0,
        "seed": spec.seed,
    }
    if spec.ignore_eos:
        body["ignore_eos"] = True
    if model is not None:
        body["model"] = model
    if spec.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


class _Stream:
    """What has been seen of one response so far; times are perf_counter() seconds."""

    __slots__ = (
        "status", "first", "last", "gaps", "n_content", "done", "completion_tokens",
        "prompt_tokens", "cached", "finish_reason", "error", "ended",
    )  # fmt: skip

    def __init__(self) -> None:
        self.status: int | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.gaps: list[float] = []
        self.n_content = 0
        self.done = False
        self.completion_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.cached: int | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.ended: float | None = None  # response read to its end (ok or a complete error)


async def _read_error_body(resp: httpx.Response) -> str:
    head = b""
    async for part in resp.aiter_bytes():
        head += part
        if len(head) >= _ERROR_BODY_READ_BYTES:
            break
    text = " ".join(head.decode("utf-8", "replace").split())
    return text[:ERROR_BODY_HEAD_CHARS]


async def _consume(body: AsyncIterator[bytes], st: _Stream) -> None:
    decoder = SSEDecoder()
    async for data in body:
        now = time.perf_counter()
        for ev in decoder.feed(data):
            if ev.event == "error":
                st.error = f"stream error: {ev.data[:ERROR_BODY_HEAD_CHARS]}"
                st.ended = now
                return
            if ev.data == DONE:
                st.done = True
                st.ended = now
                return
            chunk = parse_chunk(ev.data)
            if chunk.error is not None:
                st.error = f"stream error: {chunk.error}"
                st.ended = now
                return
            if chunk.text:
                if st.last is None:
                    st.first = now
                else:
                    st.gaps.append(now - st.last)
                st.last = now
                st.n_content += 1
            if chunk.completion_tokens is not None:
                st.completion_tokens = chunk.completion_tokens
            if chunk.prompt_tokens is not None:
                st.prompt_tokens = chunk.prompt_tokens
            if chunk.cached_prompt_tokens is not None:
                st.cached = chunk.cached_prompt_tokens
            if chunk.finish_reason is not None:
                st.finish_reason = chunk.finish_reason
    where = "inside an event" if decoder.pending else "before [DONE]"
    st.error = f"broken stream: ended {where}"


async def _exchange(client: httpx.AsyncClient, url: str, body: dict[str, Any], st: _Stream) -> None:
    async with client.stream("POST", url, json=body) as resp:
        st.status = resp.status_code
        if resp.status_code != 200:
            head = await _read_error_body(resp)
            st.ended = time.perf_counter()
            st.error = f"http {resp.status_code}: {head}" if head else f"http {resp.status_code}"
            return
        await _consume(resp.aiter_bytes(), st)


async def _exchange_fast(pool: Pool, path: str, body: dict[str, Any], st: _Stream) -> None:
    async with pool.request(path, json.dumps(body).encode()) as ex:
        st.status = ex.status
        chunks = ex.body()
        if ex.status != 200:
            head = b""
            async for part in chunks:
                head += part
                if len(head) >= _ERROR_BODY_READ_BYTES:
                    break
            st.ended = time.perf_counter()
            text = " ".join(head.decode("utf-8", "replace").split())[:ERROR_BODY_HEAD_CHARS]
            st.error = f"http {ex.status}: {text}" if text else f"http {ex.status}"
            return
        await _consume(chunks, st)
        if st.done:
            # Read the body's end (usually already buffered) so the connection can be
            # reused; the request's times are already taken.
            with contextlib.suppress(TimeoutError, BrokenResponse):
                async with asyncio.timeout(_DRAIN_S):
                    async for _ in chunks:
                        pass


async def send_request(
    client: httpx.AsyncClient | Pool,
    url: str,
    body: dict[str, Any],
    *,
    index: int,
    warmup: bool,
    scheduled: float,
    origin: float,
    timeout_s: float,
) -> RequestRecord:
    """Send one streaming request now. ``scheduled`` is when it was meant to go and
    ``origin`` the workload's start, both ``time.perf_counter()`` values. With a
    :class:`Pool` (plain http), ``url`` is the path under the pool's base URL."""
    st = _Stream()
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(client, Pool):
                await _exchange_fast(client, url, body, st)
            else:
                await _exchange(client, url, body, st)
    except TimeoutError:
        st.error = "timeout"
    except ConnectFailed as e:
        st.error = f"connect: {e}"
    except BrokenResponse as e:
        st.error = f"broken stream: {e}"
    except httpx.TimeoutException as e:  # httpx's own per-read/connect timeouts
        st.error = "connect: timed out" if isinstance(e, httpx.ConnectTimeout) else "timeout"
    except httpx.ConnectError as e:
        st.error = f"connect: {e}"
    except (httpx.TransportError, SSEError, StreamFormatError) as e:
        st.error = f"broken stream: {e}"
    except httpx.HTTPError as e:
        st.error = f"client: {type(e).__name__}: {e}"
    return RequestRecord(
        index=index,
        warmup=warmup,
        scheduled_s=scheduled - origin,
        sent_s=sent - origin,
        ttft_s=None if st.first is None else st.first - scheduled,
        itl_s=tuple(st.gaps),
        e2e_s=None if st.ended is None else st.ended - scheduled,
        output_tokens=st.completion_tokens,
        output_tokens_client=st.n_content,
        prompt_tokens=st.prompt_tokens,
        http_status=st.status,
        error=st.error,
        cached_prompt_tokens=st.cached,
        finish_reason=st.finish_reason,
        max_tokens=body.get("max_tokens"),
    )
