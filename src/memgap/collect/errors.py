"""Errors of the collectors."""

from __future__ import annotations

from memgap.errors import MemgapError


class CollectorParseError(MemgapError):
    """Text from the kernel (or an engine) is not in the format we know.

    The message names the file and the line so that a report from a user on an
    unfamiliar kernel says exactly what to look at."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")
