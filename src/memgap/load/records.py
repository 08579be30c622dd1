"""Per-request records and the run summary derived from them.

Records are the raw data (stored verbatim, errors included); the summary is derived
from them by a pure function and can always be recomputed (STYLE.md, convention 4).
Unknown is ``None``: an all-failed run has ``None`` percentiles and throughput, never 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from memgap.errors import UsageError


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it. Times are seconds relative to the workload's
    start (warm-up requests: relative to the warm-up's start).

    Latencies run from ``scheduled_s``, the time the request was *meant* to be sent, so
    a request held back by the concurrency limit is charged for the wait; the wait
    itself is ``queue_delay_s``.
    """

    index: int
    warmup: bool
    scheduled_s: float
    sent_s: float
    # First chunk that carries generated text; a role-only or empty chunk is not a token.
    ttft_s: float | None
    itl_s: tuple[float, ...]
    e2e_s: float | None
    output_tokens: int | None  # the server's usage report
    output_tokens_client: int  # content-carrying chunks counted here (cross-check)
    prompt_tokens: int | None  # the server's usage report
    http_status: int | None
    error: str | None
    # llama.cpp reports prompt tokens served from its cache (`timings.cache_n`), vLLM
    # `usage.prompt_tokens_details.cached_tokens`; a nonzero value means prefill was skipped.
    cached_prompt_tokens: int | None = None
    finish_reason: str | None = None
    max_tokens: int | None = None  # what the request asked for

    @property
    def ok(self) -> bool:
        return self.error is None and self.http_status == 200

    @property
    def queue_delay_s(self) -> float:
        return self.sent_s - self.scheduled_s

    @property
    def error_kind(self) -> str | None:
        return None if self.error is None else error_kind(self.error)

    @property
    def token_count_mismatch(self) -> bool:
        return self.output_tokens is not None and self.output_tokens != self.output_tokens_client

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["itl_s"] = list(self.itl_s)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"request record: unknown keys {unknown}")
        d = dict(data)
        d["itl_s"] = tuple(d.get("itl_s", ()))
        return cls(**d)


def error_kind(error: str) -> str:
    """``'http 503: busy'`` -> ``'http 503'``; ``'timeout'`` -> ``'timeout'``."""
    head, sep, _ = error.partition(":")
    return head.strip() if sep else error.strip()


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Percentiles:
        """Percentiles with numpy's default (linear) interpolation; all ``None`` when empty."""
        arr = np.fromiter(values, dtype=float)
        if arr.size == 0:
            return cls(None, None, None, None, 0)
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(arr.mean()), int(arr.size))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WorkloadSummary:
    requests_ok: int
    requests_errored: int
    duration_s: float
    request_throughput_per_s: float | None
    output_tokens: int
    output_tokens_per_s: float | None
    ttft_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles
    queue_delay_s: Percentiles
    token_count_mismatches: int
    errors_by_kind: Mapping[str, int]
    # ok requests whose server sent no usage report: their tokens in `output_tokens`
    # are the client's count.
    usage_missing: int = 0
    # Measured requests whose prompt was partly served from the server's prompt cache
    # (same prompts sent to the same server twice, or a shared chat-template prefix):
    # their TTFT does not include the full prefill.
    prompt_cache_hits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests_ok": self.requests_ok,
            "requests_errored": self.requests_errored,
            "duration_s": self.duration_s,
            "request_throughput_per_s": self.request_throughput_per_s,
            "output_tokens": self.output_tokens,
            "output_tokens_per_s": self.output_tokens_per_s,
            "ttft_s": self.ttft_s.to_dict(),
            "itl_s": self.itl_s.to_dict(),
            "e2e_s": self.e2e_s.to_dict(),
            "queue_delay_s": self.queue_delay_s.to_dict(),
            "token_count_mismatches": self.token_count_mismatches,
            "errors_by_kind": dict(self.errors_by_kind),
            "usage_missing": self.usage_missing,
            "prompt_cache_hits": self.prompt_cache_hits,
        }


def _rate(count: float, duration_s: float) -> float | None:
    return count / duration_s if duration_s > 0 else None


def summarize(records: Sequence[RequestRecord], duration_s: float) -> WorkloadSummary:
    """Summary of the measured (non-warm-up) requests over ``duration_s`` seconds.

    Latency percentiles cover successful requests only (a failed request's TTFT would
    mix two populations); inter-token gaps are pooled across requests; queue delay
    covers every measured request, since a failed request also waited.
    """
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    output_tokens = sum(
        r.output_tokens if r.output_tokens is not None else r.output_tokens_client for r in ok
    )
    errors = Counter(r.error_kind for r in measured if not r.ok)
    return WorkloadSummary(
        requests_ok=len(ok),
        requests_errored=len(measured) - len(ok),
        duration_s=duration_s,
        request_throughput_per_s=_rate(len(ok), duration_s) if ok else None,
        output_tokens=output_tokens,
        output_tokens_per_s=_rate(output_tokens, duration_s) if ok else None,
        ttft_s=Percentiles.of(r.ttft_s for r in ok if r.ttft_s is not None),
        itl_s=Percentiles.of(gap for r in ok for gap in r.itl_s),
        e2e_s=Percentiles.of(r.e2e_s for r in ok if r.e2e_s is not None),
        queue_delay_s=Percentiles.of(r.queue_delay_s for r in measured),
        token_count_mismatches=sum(1 for r in measured if r.token_count_mismatch),
        # an ok request has no error; the key is "unknown" only for a non-200 without text
        errors_by_kind={str(k or "unknown"): v for k, v in sorted(errors.items(), key=_by_key)},
        usage_missing=sum(1 for r in ok if r.output_tokens is None),
        prompt_cache_hits=sum(1 for r in measured if (r.cached_prompt_tokens or 0) > 0),
    )


def _by_key(item: tuple[str | None, int]) -> str:
    return item[0] or ""
