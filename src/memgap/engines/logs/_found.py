"""Accumulates the figures a parser finds, with the lines they came from, and builds
the immutable :class:`EngineReport` at the end."""

from __future__ import annotations

from types import MappingProxyType

from memgap.engines.report import EngineReport


class Found:
    def __init__(self) -> None:
        self.figures: dict[str, int | float] = {}
        self.extra: dict[str, float | int | str] = {}
        self.evidence: list[str] = []

    def _cite(self, line: str) -> None:
        if not self.evidence or self.evidence[-1] != line:
            self.evidence.append(line)

    def fig(self, key: str, value: int | float | None, line: str) -> None:
        """Set a report field; a later line overrides an earlier one."""
        if value is not None:
            self.figures[key] = value
            self._cite(line)

    def fig_once(self, key: str, value: int | float | None, line: str) -> None:
        """Set a report field unless a better source already did."""
        if value is not None and key not in self.figures:
            self.figures[key] = value
            self._cite(line)

    def note(self, key: str, value: float | int | str | None, line: str) -> None:
        if value is not None:
            self.extra[key] = value
            self._cite(line)

    def report(self, engine: str) -> EngineReport:
        frac = self.figures.get("kv_fraction")
        return EngineReport(
            engine=engine,
            model_bytes=self._int("model_bytes"),
            peak_bytes=self._int("peak_bytes"),
            kv_cache_bytes=self._int("kv_cache_bytes"),
            kv_cache_tokens=self._int("kv_cache_tokens"),
            kv_cache_blocks=self._int("kv_cache_blocks"),
            kv_fraction=float(frac) if frac is not None else None,
            device_total_bytes=self._int("device_total_bytes"),
            compute_bytes=self._int("compute_bytes"),
            extra=MappingProxyType(dict(self.extra)),
            evidence=tuple(self.evidence),
        )

    def _int(self, key: str) -> int | None:
        v = self.figures.get(key)
        return int(v) if v is not None else None
