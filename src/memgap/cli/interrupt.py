"""SIGTERM as Ctrl-C while a command runs engines: a run in progress is recorded and
cleaned up the same way whatever stops memgap (Ctrl-C, ``docker stop``, systemd, a
scheduler's kill)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


def sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block; the previous handler after it."""
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
