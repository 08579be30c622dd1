from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai_stream_double import DoubleState, OpenAIStreamDouble


@pytest.fixture
def stream_double() -> Iterator[OpenAIStreamDouble]:
    """A running TEST DOUBLE of an OpenAI-compatible streaming server (see its module)."""
    with OpenAIStreamDouble(DoubleState()) as double:
        yield double
