"""SIGTERM is Ctrl-C inside the block, and the previous handler comes back after it."""

from __future__ import annotations

import os
import signal

import pytest

from memgap.cli.interrupt import interrupt_on_sigterm, sigterm_as_interrupt


def test_sigterm_raises_keyboard_interrupt_inside_and_the_old_handler_returns() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupt_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) is sigterm_as_interrupt
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before
