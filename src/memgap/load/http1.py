"""A minimal HTTP/1.1 client over asyncio streams, for the timed streaming requests only.

Why not httpx here: measured against benchmarks/fast_stream_server.py on two cores, 64
streams starting together waited a median 220 ms for their response headers through one
httpx pool (55 ms with a client per stream) against 3 ms over plain asyncio streams:
httpx+httpcore+h11 spend about a millisecond of CPU per request, and a burst of 64 requests
queues behind itself, which shows up as TTFT error. Per streamed chunk they cost about
twice what the SSE and JSON parsing do. This client does only what a load generator
needs: POST a JSON body, keep-alive, read a chunked, sized or until-close body.

Plain ``http://`` only; the caller uses httpx for anything else (TLS, proxies).
Errors: :class:`ConnectFailed` (could not connect), :class:`BrokenResponse` (the peer
broke the protocol or closed mid-response); timeouts are the caller's (asyncio.timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

_MAX_HEAD_BYTES = 64 * 1024
_READ_BYTES = 64 * 1024


class ConnectFailed(Exception):
    pass


class BrokenResponse(Exception):
    pass


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Pool:
    """Idle keep-alive connections to one ``host:port``; callers bound concurrency."""

    def __init__(self, base_url: str, *, connect_timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http:// URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.encode("idna") if parts.netloc.isascii() else parts.netloc.encode()
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=_MAX_HEAD_BYTES)
        except TimeoutError:
            raise ConnectFailed("timed out") from None
        except OSError as e:
            raise ConnectFailed(str(e) or type(e).__name__) from None
        return _Conn(reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def request(self, path: str, body: bytes) -> Exchange:
        return Exchange(self, self.prefix + path, body)


class Exchange:
    """``async with pool.request(path, body) as ex:`` then ``ex.status`` and ``ex.body()``.
    The connection goes back to the pool only when the body was read to its end."""

    def __init__(self, pool: Pool, path: str, body: bytes) -> None:
        self.pool, self.path, self.payload = pool, path, body
        self.status: int | None = None
        self._conn: _Conn | None = None
        self._reusable = False
        self._chunked = False
        self._length: int | None = None
        self._close = False

    async def __aenter__(self) -> Exchange:
        head = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
                b"Content-Length: %d\r\n\r\n") % (self.path.encode(), self.pool.host_header, len(self.payload))  # fmt: skip
        # A kept-alive connection may have been closed by the server meanwhile: that shows
        # as an immediate EOF, and the request is retried once on a fresh connection.
        while True:
            reused = bool(self.pool._idle)
            conn = self.pool._idle.pop() if reused else await self.pool._connect()
            self._conn = conn
            try:
                conn.writer.write(head + self.payload)
                await self._read_head(conn)
                return self
            except (ConnectionError, asyncio.IncompleteReadError, BrokenResponse) as e:
                conn.close()
                self._conn = None
                if not reused or isinstance(e, BrokenResponse):
                    raise BrokenResponse(_describe(e)) from None

    async def _read_head(self, conn: _Conn) -> None:
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise BrokenResponse("response head too long") from None
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise BrokenResponse(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        self._close = parts[0] == "HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == "transfer-encoding":
                self._chunked = "chunked" in value.lower()
            elif name == "content-length" and value.isdigit():
                self._length = int(value)
            elif name == "connection":
                lowered = value.lower()
                self._close = "close" in lowered or (self._close and "keep-alive" not in lowered)

    async def body(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive. Raises BrokenResponse when the connection ends
        inside a chunked or sized body; an until-close body simply ends."""
        conn = self._conn
        assert conn is not None
        r = conn.reader
        try:
            if self._chunked:
                while True:
                    size_line = await r.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
                    if size == 0:
                        while (await r.readuntil(b"\r\n")) != b"\r\n":  # trailers
                            pass
                        break
                    data = await r.readexactly(size + 2)
                    yield data[:-2]
            elif self._length is not None:
                left = self._length
                while left > 0:
                    data = await r.read(min(left, _READ_BYTES))
                    if not data:
                        raise BrokenResponse(f"connection closed with {left} body bytes to come")
                    left -= len(data)
                    yield data
            else:
                self._close = True
                while data := await r.read(_READ_BYTES):
                    yield data
                return
        except asyncio.IncompleteReadError:
            raise BrokenResponse("connection closed inside a chunk") from None
        except ValueError:
            raise BrokenResponse("bad chunk size") from None
        except ConnectionError as e:
            raise BrokenResponse(_describe(e)) from None
        self._reusable = not self._close

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._reusable and exc[0] is None:
            self.pool._idle.append(conn)
        else:
            conn.close()


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed before the response"
    return str(e) or type(e).__name__
