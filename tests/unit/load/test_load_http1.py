"""memgap's minimal HTTP/1.1 client against scripted raw-socket servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from memgap.load.http1 import BrokenResponse, ConnectFailed, Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    return head + await r.readexactly(length)


async def with_server(handler: Handler, body: Callable[[str], Awaitable[None]]) -> int:
    conns = 0

    async def counted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        try:
            await handler(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        await body(f"http://127.0.0.1:{port}/base")
    return conns


async def collect(pool: Pool, path: str = "/x") -> tuple[int | None, bytes]:
    async with pool.request(path, b'{"a": 1}') as ex:
        data = b"".join([part async for part in ex.body()])
        return ex.status, data


def test_chunked_keep_alive_reuses_one_connection() -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(r))
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
            await w.drain()

    async def body(url: str) -> None:
        pool = Pool(url)
        assert await collect(pool) == (200, b"abcde")
        assert await collect(pool) == (200, b"abcde")
        pool.close()

    assert asyncio.run(with_server(handler, body)) == 1
    assert seen[0].startswith(b"POST /base/x HTTP/1.1\r\nHost: 127.0.0.1:") and seen[0].endswith(b'{"a": 1}')


def test_sized_and_until_close_bodies() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
        await read_request(r)
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        await w.drain()

    async def body(url: str) -> None:
        pool = Pool(url)
        assert await collect(pool) == (503, b"busy")
        assert await collect(pool) == (200, b"until close")
        assert not pool._idle  # an until-close connection is not kept
        pool.close()

    assert asyncio.run(with_server(handler, body)) == 1


def test_stale_idle_connection_is_retried_once_on_a_fresh_one() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        # and close: the client's idle connection is now dead

    async def body(url: str) -> None:
        pool = Pool(url)
        assert await collect(pool) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await collect(pool) == (200, b"ok")
        pool.close()

    assert asyncio.run(with_server(handler, body)) == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SMTP ready\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", "inside a chunk"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "7 body bytes to come"),
        (b"", "closed before the response"),
    ],
)
def test_broken_responses(reply: bytes, message: str) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(reply)
        await w.drain()

    async def body(url: str) -> None:
        pool = Pool(url)
        with pytest.raises(BrokenResponse, match=message):
            await collect(pool)
        assert not pool._idle

    asyncio.run(with_server(handler, body))


def test_connect_refused_and_bad_urls() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = Pool(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectFailed):
        asyncio.run(collect(pool))
    for bad in ("https://x", "ftp://x", "http://"):
        with pytest.raises(ValueError):
            Pool(bad)
