"""TEST DOUBLE of an engine someone else started, for the attach tests: a process that
serves the OpenAI streaming double of tests/unit/load/openai_stream_double.py (not an
engine, no model) until it is killed. It writes its URL to the file named by argv[1] once
it listens. The attach tests run it, measure it through memgap, and then stop it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))

from openai_stream_double import DoubleState, OpenAIStreamDouble  # noqa: E402


def main() -> None:
    held = bytearray(32 << 20)  # some resident memory of its own, for the sampler to see
    for i in range(0, len(held), 4096):
        held[i] = 1
    with OpenAIStreamDouble(DoubleState()) as double:
        tmp = Path(sys.argv[1] + ".tmp")
        tmp.write_text(double.base_url)
        tmp.rename(sys.argv[1])
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()
