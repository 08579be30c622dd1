"""Incremental server-sent-events decoder (the WHATWG "event stream" format).

Fed raw bytes as they arrive, in chunks of any size, it returns the events each chunk
completes. Lines end in CRLF, LF or a lone CR, and a CRLF split across two chunks is one
line ending. The only exception it raises is :class:`SSEError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from memgap.errors import MemgapError

_EOL = re.compile(rb"\r\n|\r|\n")
# A line longer than this is not an LLM token chunk; stop before buffering without bound.
MAX_LINE_BYTES = 8 * 1024 * 1024


class SSEError(MemgapError):
    """The bytes are not a readable event stream (bad UTF-8, a line without end)."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"


class SSEDecoder:
    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max_line_bytes = max_line_bytes
        self._partial = b""
        self._skip_lf = False  # the last chunk ended in CR: a leading LF is its pair
        self._first_line = True
        self._data: list[str] = []
        self._event = ""

    @property
    def pending(self) -> bool:
        """True if bytes or fields of an unfinished event are held (seen at end of stream:
        the stream was cut inside an event)."""
        return bool(self._partial or self._data)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        if not chunk:
            return []
        buf = self._partial + chunk if self._partial else chunk
        events: list[SSEEvent] = []
        start = 0
        for m in _EOL.finditer(buf):
            self._line(buf[start : m.start()], events)
            start = m.end()
            if start == len(buf) and m.group() == b"\r":
                self._skip_lf = True
        self._partial = buf[start:]
        if len(self._partial) > self._max_line_bytes:
            raise SSEError(f"event stream line longer than {self._max_line_bytes} bytes")
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SSEError(f"event stream is not UTF-8: {raw[:60]!r}") from e
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            if self._data:
                events.append(SSEEvent("\n".join(self._data), self._event or "message"))
            self._data = []
            self._event = ""
            return
        if line[0] == ":":  # comment / keep-alive
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "error":
            # llama.cpp servers before the OpenAI-style `data: {"error": ...}` wrote an
            # `error: {...}` line for a failure inside a stream; keep it as an error event.
            self._event = "error"
            self._data.append(value)
        # id, retry and unknown fields carry nothing a load client needs
