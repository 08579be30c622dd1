"""A streaming OpenAI-compatible server that emits tokens as fast as it can: a fixture for
measuring load *clients*, never an engine. Not a test double for correctness.

It answers ``POST /v1/completions`` and ``/v1/chat/completions`` (streamed SSE, a usage
chunk, ``[DONE]``), ``GET /v1/models``, ``GET /health``, ``POST /tokenize`` (one token per
word plus BOS), and two of its own: ``GET /stats`` (tokens sent, requests, and for each
request the true time to first token as the server saw it) and ``POST /stats/reset``.

The first token of each response is held back ``--first-token-delay`` seconds after the
request's body has arrived; the server records when the request arrived and when that
first token was written, so a client's measured TTFT can be compared with the truth.
After it, tokens go out back to back, each its own SSE event and its own socket write
(the event loop yields between them, so many streams interleave as on a real server), or
``--token-interval`` seconds apart, paced like an engine's decode steps.

Plain asyncio over raw sockets, HTTP/1.1 keep-alive with chunked transfer encoding:
a few microseconds of server CPU per token, so the client is what gets measured.

    python benchmarks/fast_stream_server.py --port 8199 --first-token-delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

_TOKEN = "tok"


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens_sent = 0
        self.requests = 0
        self.true_ttft_s: list[float] = []
        self.started = time.perf_counter()

    def to_dict(self) -> dict[str, Any]:
        return {"tokens_sent": self.tokens_sent, "requests": self.requests, "true_ttft_s": self.true_ttft_s,
                "since_reset_s": time.perf_counter() - self.started}  # fmt: skip


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip


class Server:
    def __init__(self, first_token_delay_s: float, token_interval_s: float = 0.0) -> None:
        self.delay = first_token_delay_s
        self.interval = token_interval_s
        self.stats = Stats()
        comp = {"id": "c", "object": "text_completion", "model": "fast", "choices": [
            {"index": 0, "text": _TOKEN, "finish_reason": None}]}  # fmt: skip
        chat = {"id": "c", "object": "chat.completion.chunk", "model": "fast", "choices": [
            {"index": 0, "delta": {"content": _TOKEN}, "finish_reason": None}]}  # fmt: skip
        self.events = {
            "completions": _chunk(b"data: " + json.dumps(comp).encode() + b"\n\n"),
            "chat": _chunk(b"data: " + json.dumps(chat).encode() + b"\n\n"),
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                n = int(headers.get("content-length", "0"))
                body = await reader.readexactly(n) if n else b""
                arrived = time.perf_counter()
                await self.route(method, path.split("?")[0], body, arrived, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, arrived: float, w: asyncio.StreamWriter) -> None:
        if path in ("/v1/completions", "/v1/chat/completions") and method == "POST":
            await self.stream(json.loads(body), "chat" if "chat" in path else "completions", arrived, w)
        elif path == "/v1/models":
            w.write(_response("200 OK", b'{"object":"list","data":[{"id":"fast","object":"model"}]}'))
        elif path == "/health":
            w.write(_response("200 OK", b'{"status":"ok"}'))
        elif path == "/tokenize":
            req = json.loads(body or b"{}")
            text = req.get("content") or req.get("prompt") or ""
            w.write(_response("200 OK", json.dumps({"tokens": list(range(1 + len(text.split())))}).encode()))
        elif path == "/stats":
            w.write(_response("200 OK", json.dumps(self.stats.to_dict()).encode()))
        elif path == "/stats/reset":
            self.stats.reset()
            w.write(_response("200 OK", b"{}"))
        else:
            w.write(_response("404 Not Found", b'{"error":"not found"}'))
        await w.drain()

    async def stream(self, req: dict[str, Any], api: str, arrived: float, w: asyncio.StreamWriter) -> None:
        n = int(req.get("max_tokens") or req.get("max_completion_tokens") or 16)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        await w.drain()
        wait = self.delay - (time.perf_counter() - arrived)
        if wait > 0:
            await asyncio.sleep(wait)
        event = self.events[api]
        w.write(event)
        self.stats.true_ttft_s.append(time.perf_counter() - arrived)
        for _ in range(n - 1):
            await w.drain()
            # 0: let other streams write, one event per socket write; else pace like an engine
            await asyncio.sleep(self.interval)
            w.write(event)
        usage = {"id": "c", "object": "text_completion", "model": "fast", "choices": [],
                 "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}}  # fmt: skip
        if api == "completions":
            usage["choices"] = [{"index": 0, "text": "", "finish_reason": "length"}]
        w.write(_chunk(b"data: " + json.dumps(usage).encode() + b"\n\n") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await w.drain()
        self.stats.tokens_sent += n
        self.stats.requests += 1


async def serve(host: str, port: int, delay: float, interval: float = 0.0, ready: asyncio.Event | None = None) -> None:
    server = Server(delay, interval)
    srv = await asyncio.start_server(server.handle, host, port, backlog=4096, limit=1 << 20)
    if ready is not None:
        ready.set()
    async with srv:
        await srv.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before each first token")
    ap.add_argument("--token-interval", type=float, default=0.0,
                    help="seconds between tokens of one stream (0: as fast as it can)")
    args = ap.parse_args()
    print(f"fast_stream_server on http://{args.host}:{args.port}", flush=True)
    asyncio.run(serve(args.host, args.port, args.first_token_delay, args.token_interval))


if __name__ == "__main__":
    main()
