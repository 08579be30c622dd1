"""Service-level objectives and goodput (pure).

An SLO bounds a request's TTFT, its inter-token latency and its end-to-end latency, all
measured from the request's *scheduled* send time (see :mod:`memgap.load.records`), so
a request that waited in the client for a free slot is charged for the wait.

Two kinds of objective share one grammar (``parse_slo``):

- *per request* (``ttft_s=0.5``, also written ``ttft_s<=0.5``): each request is judged
  on its own, and goodput counts those that meet every bound (below);
- *over a load point's requests* (``ttft_p99_s<=2``, ``itl_p90_s<=0.1``,
  ``e2e_p50_s<=5``, ``errors<=1%``): a percentile of the successful measured requests'
  TTFT, mean inter-token gap or end-to-end latency (numpy's linear percentile, as the
  run summary computes them), and the share of measured requests that failed. These
  judge a whole point (:meth:`SLO.check`), which is what ``memgap capacity`` searches on.
  An errored request has no latency to rank, so only ``errors`` counts it.

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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memgap.errors import UsageError
from memgap.load.records import RequestRecord

SLO_KEYS = ("ttft_s", "itl_s", "e2e_s")
PERCENTILE_METRICS = ("ttft", "itl", "e2e")
ERRORS_KEY = "errors"
_PERCENTILE_KEY = re.compile(r"^(ttft|itl|e2e)_p(\d+(?:\.\d+)?)_s$")


def _number(v: float) -> str:
    """Shortest text that reads back as exactly ``v`` (``%g`` when it does)."""
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


@dataclass(frozen=True, order=True)
class PercentileBound:
    """``{metric}_p{percentile}_s <= bound_s`` over a point's successful requests."""

    metric: str  # ttft | itl (each request's mean gap) | e2e
    percentile: float  # (0, 100]
    bound_s: float

    def __post_init__(self) -> None:
        if self.metric not in PERCENTILE_METRICS:
            raise UsageError(f"SLO percentile of {self.metric!r}: one of {', '.join(PERCENTILE_METRICS)}")
        if not (isinstance(self.percentile, int | float) and 0 < self.percentile <= 100):
            raise UsageError(f"SLO {self.metric} percentile must be in (0, 100], got {self.percentile!r}")
        if not (isinstance(self.bound_s, int | float) and math.isfinite(self.bound_s) and self.bound_s > 0):
            raise UsageError(f"SLO {self.key}: must be a positive number of seconds, got {self.bound_s!r}")

    @property
    def key(self) -> str:
        return f"{self.metric}_p{_number(self.percentile)}_s"


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None = None
    itl_s: float | None = None
    e2e_s: float | None = None
    percentiles: tuple[PercentileBound, ...] = ()  # over a point's requests, in key order
    errors_max: float | None = None  # largest share (0..1) of measured requests that may fail

    def __post_init__(self) -> None:
        for key in SLO_KEYS:
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise UsageError(f"SLO {key}: must be a positive number of seconds, got {v!r}")
        # One order (metric, then percentile), so equal objectives compare equal.
        object.__setattr__(self, "percentiles", tuple(sorted(self.percentiles, key=_order)))
        keys = [b.key for b in self.percentiles]
        if len(set(keys)) != len(keys):
            raise UsageError(f"SLO: a percentile bound is given twice ({', '.join(keys)})")
        e = self.errors_max
        if e is not None and not (isinstance(e, int | float) and 0 <= e <= 1):
            raise UsageError(f"SLO errors: must be a share in [0, 1] (or 0%..100%), got {e!r}")

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) is None for k in SLO_KEYS) and not self.percentiles and self.errors_max is None

    @property
    def per_request(self) -> bool:
        """Some objective judges requests one by one (goodput's kind)."""
        return any(getattr(self, k) is not None for k in SLO_KEYS)

    def to_dict(self) -> dict[str, Any]:
        """The per-request bounds always (as before there were others); percentile and
        error bounds only when set, by their keys."""
        d: dict[str, Any] = {k: getattr(self, k) for k in SLO_KEYS}
        d.update({b.key: b.bound_s for b in self.percentiles})
        if self.errors_max is not None:
            d[ERRORS_KEY] = self.errors_max
        return d

    def describe(self) -> str:
        """``ttft_s=0.5,ttft_p99_s<=2,errors<=1%``: the form :func:`parse_slo` reads back
        (per-request bounds keep their ``=`` so text stored before the others existed
        reads the same)."""
        parts = [f"{k}={_number(getattr(self, k))}" for k in SLO_KEYS if getattr(self, k) is not None]
        parts += [f"{b.key}<={_number(b.bound_s)}" for b in self.percentiles]
        if self.errors_max is not None:
            pct = self.errors_max * 100
            parts.append(f"errors<={_number(pct)}%" if float(_number(pct)) / 100 == self.errors_max
                         else f"errors<={_number(self.errors_max)}")
        return ",".join(parts)

    def check(self, records: Iterable[RequestRecord]) -> PointCheck:
        """Whether the measured (non-warm-up) ``records`` of one load point meet the
        percentile and error bounds; per-request bounds are goodput's (not judged here)."""
        measured = [r for r in records if not r.warmup]
        ok = [r for r in measured if r.ok]
        observed: dict[str, float | None] = {}
        missed: list[str] = []
        for b in self.percentiles:
            values = [v for v in (metric_value(r, b.metric) for r in ok) if v is not None]
            obs = float(np.percentile(values, b.percentile)) if values else None
            observed[b.key] = obs
            if obs is None or obs > b.bound_s:
                missed.append(b.key)
        if self.errors_max is not None:
            share = (len(measured) - len(ok)) / len(measured) if measured else None
            observed[ERRORS_KEY] = share
            if share is None or share > self.errors_max:
                missed.append(ERRORS_KEY)
        return PointCheck(requests=len(measured), requests_ok=len(ok), observed=observed, missed=tuple(missed))

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


def metric_value(record: RequestRecord, metric: str) -> float | None:
    """The request's figure a percentile bound ranks: TTFT, mean inter-token gap (None
    for a one-chunk reply: it has no gaps), end-to-end latency."""
    if metric == "ttft":
        return record.ttft_s
    if metric == "itl":
        return mean_itl_s(record) if record.itl_s else None
    if metric == "e2e":
        return record.e2e_s
    raise UsageError(f"unknown SLO metric {metric!r}")


@dataclass(frozen=True)
class PointCheck:
    """A point's percentile and error bounds against what was measured."""

    requests: int  # measured, errored ones included
    requests_ok: int
    observed: Mapping[str, float | None]  # key -> the percentile or error share seen (None: nothing to rank)
    missed: tuple[str, ...]  # keys whose bound failed (a bound with nothing to rank fails)

    @property
    def met(self) -> bool:
        return not self.missed

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "requests_ok": self.requests_ok, "observed": dict(self.observed),
                "missed": list(self.missed), "met": self.met}


_GRAMMAR = ("KEY=SECONDS or KEY<=SECONDS with KEY one of ttft_s, itl_s, e2e_s (per request) or "
            "ttft_pN_s, itl_pN_s, e2e_pN_s (the N-th percentile over a point's requests), or errors<=SHARE "
            "(1%, 0.01)")


def _seconds(part: str, raw: str) -> float:
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
    return value


def _share(part: str, raw: str) -> float:
    pct = raw.endswith("%")
    try:
        value = float(raw[:-1] if pct else raw)
    except ValueError:
        raise UsageError(f"--slo: {part!r}: {raw!r} is not a share (1%, 0.01)") from None
    value = value / 100 if pct else value
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise UsageError(f"--slo: {part!r}: a share of requests is within 0%..100% (0..1)")
    return value


def parse_slo(text: str) -> SLO:
    """``"ttft_s=0.5,ttft_p99_s<=2,errors<=1%"`` -> :class:`SLO`. Per-request keys
    (ttft_s, itl_s, e2e_s) as before, with ``=`` or ``<=``; percentile keys
    ``{ttft,itl,e2e}_p{N}_s`` (N in (0, 100]); ``errors`` as a percentage or a share.
    Seconds may carry ``ms`` or ``s`` (``ttft_s=500ms``). Empty: no SLO."""
    values: dict[str, float] = {}
    bounds: list[PercentileBound] = []
    errors: float | None = None
    seen: set[str] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, raw = part.partition("<=")
        if not sep:
            key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip().lower()
        if not sep:
            raise UsageError(f"--slo: {part!r} is not {_GRAMMAR}")
        pct = _PERCENTILE_KEY.match(key)
        if key not in SLO_KEYS and key != ERRORS_KEY and pct is None:
            raise UsageError(f"--slo: {part!r} is not {_GRAMMAR}")
        if pct is not None:
            bound = PercentileBound(pct.group(1), float(pct.group(2)), _seconds(part, raw))
            key = bound.key  # ttft_p99.0_s and ttft_p99_s are one key
        if key in seen:
            raise UsageError(f"--slo: {key} given twice")
        seen.add(key)
        if pct is not None:
            bounds.append(bound)
        elif key == ERRORS_KEY:
            errors = _share(part, raw)
        else:
            values[key] = _seconds(part, raw)
    return SLO(**values, percentiles=tuple(bounds), errors_max=errors)


def _order(b: PercentileBound) -> tuple[int, float]:
    return PERCENTILE_METRICS.index(b.metric), b.percentile


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
