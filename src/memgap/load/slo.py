"""Service-level objectives and goodput (pure).

An SLO bounds a request's TTFT, its inter-token latency and its end-to-end latency, all
measured from the request's *scheduled* send time (see :mod:`memgap.load.records`), so
a request that waited in the client for a free slot is charged for the wait.

A request *meets* the SLOs when it succeeded and every bound set holds:

- ``ttft_s``: its time to first content-carrying chunk;
- ``itl_s``: the mean of its inter-token gaps (time per output token after the first,
  what vLLM's goodput calls TPOT); a request with one chunk has no gaps and passes;
- ``e2e_s``: its end-to-end latency.

Goodput is the rate of requests meeting all of them over the workload's duration,
reported beside raw throughput (all successful requests) so the two can be compared.
An errored request never meets an SLO; it counts against ``error``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memgap.errors import UsageError
from memgap.load.records import RequestRecord

SLO_KEYS = ("ttft_s", "itl_s", "e2e_s")


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for key in SLO_KEYS:
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise UsageError(f"SLO {key}: must be a positive number of seconds, got {v!r}")

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) is None for k in SLO_KEYS)

    def to_dict(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in SLO_KEYS}

    def describe(self) -> str:
        """``ttft_s=0.5,itl_s=0.05``: the form :func:`parse_slo` reads back."""
        return ",".join(f"{k}={getattr(self, k):g}" for k in SLO_KEYS if getattr(self, k) is not None)

    def misses(self, record: RequestRecord) -> tuple[str, ...]:
        """The objectives ``record`` misses (``error`` for a failed request); empty: met."""
        if not record.ok:
            return ("error",)
        missed: list[str] = []
        if self.ttft_s is not None and (record.ttft_s is None or record.ttft_s > self.ttft_s):
            missed.append("ttft_s")
        if self.itl_s is not None and record.itl_s and mean_itl_s(record) > self.itl_s:
            missed.append("itl_s")
        if self.e2e_s is not None and (record.e2e_s is None or record.e2e_s > self.e2e_s):
            missed.append("e2e_s")
        return tuple(missed)


def mean_itl_s(record: RequestRecord) -> float:
    return sum(record.itl_s) / len(record.itl_s) if record.itl_s else 0.0


def parse_slo(text: str) -> SLO:
    """``"ttft_s=0.5,itl_s=0.05"`` -> :class:`SLO`. Keys: ttft_s, itl_s, e2e_s; values in
    seconds, optionally with an ``ms`` or ``s`` suffix (``ttft_s=500ms``). Empty: no SLO."""
    values: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip().lower()
        if not sep or key not in SLO_KEYS:
            raise UsageError(f"--slo: {part!r} is not KEY=SECONDS with KEY one of {', '.join(SLO_KEYS)}")
        if key in values:
            raise UsageError(f"--slo: {key} given twice")
        scale = 1.0
        if raw.endswith("ms"):
            raw, scale = raw[:-2], 1e-3
        elif raw.endswith("s"):
            raw = raw[:-1]
        try:
            value = float(raw) * scale
        except ValueError:
            raise UsageError(f"--slo: {part!r}: {raw!r} is not a number of seconds") from None
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--slo: {part!r}: must be a positive number of seconds")
        values[key] = value
    return SLO(**values)


@dataclass(frozen=True)
class Goodput:
    """How many measured requests met the SLOs, and at what rate."""

    slo: SLO
    requests: int  # measured requests (warm-up excluded), errored ones included
    requests_ok: int
    requests_met: int
    duration_s: float
    goodput_per_s: float | None  # requests meeting every SLO per second
    throughput_per_s: float | None  # successful requests per second
    goodput_tokens_per_s: float | None  # output tokens of the requests that met them
    met_fraction: float | None  # of measured requests
    missed_by: Mapping[str, int] = field(default_factory=dict)  # objective -> requests missing it

    def meets(self, attainment: float) -> bool:
        """At least ``attainment`` (0..1] of the measured requests met every SLO."""
        return self.met_fraction is not None and self.met_fraction >= attainment

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo.to_dict(),
            "requests": self.requests,
            "requests_ok": self.requests_ok,
            "requests_met": self.requests_met,
            "duration_s": self.duration_s,
            "goodput_per_s": self.goodput_per_s,
            "throughput_per_s": self.throughput_per_s,
            "goodput_tokens_per_s": self.goodput_tokens_per_s,
            "met_fraction": self.met_fraction,
            "missed_by": dict(self.missed_by),
        }


def _tokens(r: RequestRecord) -> int:
    return r.output_tokens if r.output_tokens is not None else r.output_tokens_client


def goodput(records: Iterable[RequestRecord], slo: SLO, duration_s: float) -> Goodput:
    """Goodput of the measured (non-warm-up) ``records`` over ``duration_s`` seconds.
    Rates are None when the duration is not positive or nothing was measured."""
    measured = [r for r in records if not r.warmup]
    missed_by: dict[str, int] = {}
    met: list[RequestRecord] = []
    for r in measured:
        misses = slo.misses(r)
        for m in misses:
            missed_by[m] = missed_by.get(m, 0) + 1
        if not misses:
            met.append(r)
    ok = sum(1 for r in measured if r.ok)
    timed = duration_s > 0 and bool(measured)
    return Goodput(
        slo=slo,
        requests=len(measured),
        requests_ok=ok,
        requests_met=len(met),
        duration_s=duration_s,
        goodput_per_s=len(met) / duration_s if timed else None,
        throughput_per_s=ok / duration_s if timed else None,
        goodput_tokens_per_s=sum(_tokens(r) for r in met) / duration_s if timed else None,
        met_fraction=len(met) / len(measured) if measured else None,
        missed_by=dict(sorted(missed_by.items())),
    )


def goodput_of_dicts(requests: Iterable[Mapping[str, Any]], slo: SLO, duration_s: float) -> Goodput:
    """Goodput of stored request rows (``RequestRecord.to_dict()`` form)."""
    return goodput((RequestRecord.from_dict(d) for d in requests), slo, duration_s)
