"""What a workload is: the configuration that produced a run's requests.

A spec is stored with every run (STYLE.md, convention 6), so ``to_dict`` and
``from_dict`` round-trip and unknown keys from newer versions are refused loudly
rather than dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from memgap.errors import UsageError

Api = Literal["completions", "chat"]
Arrival = Literal["constant", "poisson"]

API_PATHS: dict[str, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload: ``requests`` measured requests after ``warmup_requests`` that are not
    counted, at most ``concurrency`` in flight.

    With ``request_rate_per_s`` set, requests are *scheduled* at that rate (evenly spaced
    or Poisson) and every latency is measured from the scheduled time, so time spent
    waiting for a free concurrency slot is counted (no coordinated omission) and also
    reported apart as queue delay. Without a rate the client is closed-loop: a request is
    sent as soon as a slot frees.
    """

    api: Api = "completions"
    requests: int = 32
    concurrency: int = 4
    request_rate_per_s: float | None = None
    arrival: Arrival = "constant"
    prompt_tokens: int = 128
    output_tokens: int = 64
    warmup_requests: int = 2
    # llama.cpp and vLLM accept `ignore_eos`; it keeps every output the same length so
    # runs in different environments do the same amount of decoding.
    ignore_eos: bool = True
    timeout_s: float = 120.0
    model: str | None = None
    seed: int = 0
    # Each request gets its own prompt so that a server's prompt (prefix) cache cannot
    # turn later requests' prefill into a cache hit; llama.cpp caches by default.
    distinct_prompts: bool = True
    # Length distributions (memgap.load.datasets): set, a length is drawn per request,
    # uniform on [prompt_tokens, prompt_tokens_max] / [output_tokens, output_tokens_max].
    prompt_tokens_max: int | None = None
    output_tokens_max: int | None = None
    # A JSONL / ShareGPT file of prompts: replaces the synthetic prompts (and sets output
    # lengths where the file gives them; output_tokens otherwise).
    dataset: str | None = None

    def __post_init__(self) -> None:
        if self.api not in API_PATHS:
            raise UsageError(f"workload api: {self.api!r} is not one of {sorted(API_PATHS)}")
        if self.arrival not in ("constant", "poisson"):
            raise UsageError(f"workload arrival: {self.arrival!r} is not 'constant' or 'poisson'")
        for name in ("requests", "concurrency", "prompt_tokens", "output_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"workload {name}: must be a whole number >= 1, got {value!r}")
        if not isinstance(self.warmup_requests, int) or self.warmup_requests < 0:
            raise UsageError(
                f"workload warmup_requests: must be >= 0, got {self.warmup_requests!r}"
            )
        for name, low in (("prompt_tokens_max", self.prompt_tokens), ("output_tokens_max", self.output_tokens)):
            high = getattr(self, name)
            if high is not None and (not isinstance(high, int) or isinstance(high, bool) or high < low):
                raise UsageError(f"workload {name}: must be a whole number >= {low}, got {high!r}")
        if self.prompt_tokens_max is not None and not self.distinct_prompts:
            raise UsageError("workload prompt_tokens_max: needs distinct_prompts")
        rate = self.request_rate_per_s
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise UsageError(f"workload request_rate_per_s: must be > 0 or unset, got {rate!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise UsageError(f"workload timeout_s: must be > 0, got {self.timeout_s!r}")

    @property
    def path(self) -> str:
        """The endpoint path this workload posts to."""
        return API_PATHS[self.api]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkloadSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"workload spec: unknown keys {unknown} (written by a newer memgap?)")
        return cls(**data)
