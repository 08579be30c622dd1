"""TEST DOUBLE: a tiny OpenAI-compatible streaming server, for testing memgap's client.

Not an engine and not a model: it streams one word per token with delays the test
chooses, and misbehaves on request (HTTP errors, a stream cut mid-way, a stall, an error
event inside the stream, a usage report that disagrees with the tokens sent). Its chunk
shapes follow llama.cpp's server (``tools/server/server-task.cpp``): a chat stream opens
with a role-only chunk, ends with an empty delta carrying ``finish_reason`` and then, with
``stream_options.include_usage``, a chunk with ``choices: []`` and ``usage``; a completion
stream's last chunk always carries ``usage`` and ``timings``.

Standard library only: ``http.server`` in a thread, HTTP/1.1 with chunked transfer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Behavior:
    """How the double answers one generation request."""

    status: int = 200
    error_body: str = (
        '{"error": {"code": 500, "message": "double says no", "type": "server_error"}}'
    )
    tokens: int | None = None  # None: the request's max_tokens
    first_delay_s: float = 0.0  # before the first content chunk ("prefill")
    token_delay_s: float = 0.0  # between content chunks
    role_chunk: bool = True  # chat: a role-only first chunk, sent at once
    empty_chunk: bool = False  # an extra chunk with empty content before the first token
    usage: bool | None = None  # None: as llama.cpp (completions always, chat if asked)
    usage_tokens: int | None = None  # reported completion_tokens (None: the true count)
    cut_after: int | None = None  # close the connection after this many tokens
    stall_after: int | None = None  # after this many tokens send nothing, hold the connection
    error_event_after: int | None = None  # `data: {"error": ...}` after this many tokens
    done: bool = True  # send `data: [DONE]`
    batch: bool = False  # write all chunks in one write (several events per read)
    cached_tokens: int = 0  # timings.cache_n


@dataclass(frozen=True)
class Received:
    seq: int  # arrival order over all generation requests
    path: str
    body: dict[str, Any]
    arrived: float  # time.perf_counter()


@dataclass
class DoubleState:
    behave: Callable[[int, dict[str, Any]], Behavior] = lambda seq, body: Behavior()
    tokenizer: bool = True
    models: list[str] = field(default_factory=lambda: ["double-model"])
    received: list[Received] = field(default_factory=list)
    tokenize_calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def double_token_count(text: str) -> int:
    """The double's tokenizer: BOS + one token per word, two for words of 7+ letters
    (so a prompt builder's first guess is off and it must adjust)."""
    return 1 + sum(2 if len(w) >= 7 else 1 for w in text.split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":  # llama.cpp's server, once its model is loaded
            self._json(200, {"status": "ok"})
        elif self.path == "/v1/models" and self.server.state.models:
            self._json(
                200, {"object": "list", "data": [{"id": m} for m in self.server.state.models]}
            )
        else:
            self._json(404, {"error": {"code": 404, "message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        state = self.server.state
        if self.path == "/tokenize":
            with state.lock:
                state.tokenize_calls += 1
            if not state.tokenizer:
                self._json(404, {"error": {"code": 404, "message": "File Not Found"}})
                return
            n = double_token_count(body.get("content", ""))
            self._json(200, {"tokens": list(range(n))})
            return
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._json(404, {"error": {"code": 404, "message": "not found"}})
            return
        with state.lock:
            seq = len(state.received)
            state.received.append(Received(seq, self.path, body, time.perf_counter()))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._generate(
                state.behave(seq, body), body, chat=self.path.endswith("chat/completions")
            )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): what a real server sees too
        finally:
            with state.lock:
                state.in_flight -= 1

    def _chunk(self, payload: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def _generate(self, b: Behavior, body: dict[str, Any], *, chat: bool) -> None:
        if b.status != 200:
            data = b.error_body.encode()
            self.send_response(b.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        n = b.tokens if b.tokens is not None else int(body.get("max_tokens", 16))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

        pending: list[bytes] = []

        def event(obj: Any) -> None:
            data = (
                b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
            )
            if b.batch:
                pending.append(data)
            else:
                self._chunk(data)

        def choice(
            text: str | None, finish: str | None = None, role: bool = False
        ) -> dict[str, Any]:
            if not chat:
                return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
            delta: dict[str, Any] = {}
            if role:
                delta = {"role": "assistant", "content": None}
            elif text is not None:
                delta = {"content": text}
            return {"index": 0, "delta": delta, "finish_reason": finish}

        kind = "chat.completion.chunk" if chat else "text_completion"
        if chat and b.role_chunk:
            event({"object": kind, "choices": [choice(None, role=True)]})
        if b.empty_chunk:
            event({"object": kind, "choices": [choice("")]})
        for i in range(n):
            if b.stall_after is not None and i == b.stall_after:
                self.server.state.stopping.wait(30.0)
                return
            if b.cut_after is not None and i == b.cut_after:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if b.error_event_after is not None and i == b.error_event_after:
                event({"error": {"code": 500, "message": "slot failed", "type": "server_error"}})
                self._end(pending)
                return
            time.sleep(b.first_delay_s if i == 0 else b.token_delay_s)
            event({"object": kind, "choices": [choice(f" w{i}")]})
        usage = {
            "completion_tokens": b.usage_tokens if b.usage_tokens is not None else n,
            "prompt_tokens": double_token_count(str(body.get("prompt", ""))),
            "total_tokens": 0,
        }
        timings = {"cache_n": b.cached_tokens, "prompt_n": usage["prompt_tokens"]}
        include = bool(body.get("stream_options", {}).get("include_usage"))
        send_usage = b.usage if b.usage is not None else (include or not chat)
        if chat:
            event({"object": kind, "choices": [choice(None, "length")]})
            if send_usage:
                event({"object": kind, "choices": [], "usage": usage, "timings": timings})
        else:
            last: dict[str, Any] = {
                "object": kind,
                "choices": [choice("", "length")],
                "timings": timings,
            }
            if send_usage:
                last["usage"] = usage
            event(last)
        if b.done:
            event(b"[DONE]")
        self._end(pending)

    def _end(self, pending: list[bytes]) -> None:
        if pending:
            self._chunk(b"".join(pending))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a client opening more connections at
    # once than that has SYNs dropped and retried a second later (real servers use 128+)
    request_queue_size = 128
    state: DoubleState


class OpenAIStreamDouble:
    """``with OpenAIStreamDouble() as d: run_workload(d.base_url, spec)``."""

    def __init__(self, state: DoubleState | None = None) -> None:
        self.state = state or DoubleState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> OpenAIStreamDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
