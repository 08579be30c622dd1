"""The one interface every report format implements (bloomberg/memray's ``BaseReporter``):
a reporter is built from what ``memgap.analysis.report_data`` aggregated -- the store is
never read here -- and writes its format to a stream. HTML, Markdown and JSON render the
same dict, so ``memgap report`` writes any of them from one aggregation."""

from __future__ import annotations

import io
from typing import Protocol, TextIO


class Reporter(Protocol):
    def render(self, stream: TextIO) -> None:
        """Write the whole report to ``stream`` (I/O only: everything was computed before)."""
        ...


def render_text(reporter: Reporter) -> str:
    """What ``reporter`` writes, as one string."""
    buf = io.StringIO()
    reporter.render(buf)
    return buf.getvalue()
