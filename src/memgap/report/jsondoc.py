"""The report as one JSON document: the aggregated dict itself (``REPORT_SCHEMA``), so the
answer, the verdicts and the margins they applied are structured fields, and any other
format can be rendered again from the file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO


class JsonReporter:
    """The report (``memgap.analysis.report_data.build_report``) as JSON."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.report = report

    def render(self, stream: TextIO) -> None:
        json.dump(self.report, stream, indent=2, default=str, ensure_ascii=False)
        stream.write("\n")
