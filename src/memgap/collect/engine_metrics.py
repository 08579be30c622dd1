"""What an engine says about itself on its Prometheus ``/metrics`` endpoint.

Metric names, checked against the engines' sources:
- llama.cpp ``llama-server --metrics``: ``llamacpp:requests_processing``,
  ``llamacpp:requests_deferred``, ``llamacpp:prompt_tokens_total``,
  ``llamacpp:tokens_predicted_total``; ``llamacpp:kv_cache_usage_ratio`` only in
  older builds (removed later), so its absence is None.
- vLLM: ``vllm:kv_cache_usage_perc`` (v1; a ratio despite the name) replacing the
  deprecated ``vllm:gpu_cache_usage_perc`` (both are exported during the transition),
  ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:num_preemptions_total``, ``vllm:prompt_tokens_total``,
  ``vllm:generation_tokens_total``; one label set per model / engine core.
- SGLang: ``sglang:token_usage`` (one label set per dp/tp rank),
  ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``,
  ``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from memgap.collect.errors import CollectorParseError

_SOURCE = "/metrics (Prometheus text)"


@dataclass(frozen=True)
class EngineMetrics:
    kv_usage_ratio: float | None  # 0..1; the fullest KV pool when there are several
    requests_running: float | None
    requests_waiting: float | None
    preemptions_total: float | None
    prompt_tokens_total: float | None
    generation_tokens_total: float | None
    raw: Mapping[str, float] = field(default_factory=dict, repr=False)  # "name{labels}" -> value


def _key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Every sample as ``"name{label="v",...}" -> value`` (labels sorted by name)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[_key(sample.name, sample.labels)] = float(sample.value)
    except Exception as e:
        # The parser raises ValueError, but also IndexError/KeyError/TypeError on some
        # malformed inputs; they all mean the same thing to us: not Prometheus text.
        raise CollectorParseError(
            _SOURCE, None, f"not Prometheus text format: {type(e).__name__}: {e}"
        ) from e
    return out


def _values(raw: Mapping[str, float], name: str) -> list[float]:
    # Exact name match: "vllm:num_requests_running" must not pick up
    # "vllm:num_requests_running_by_lora" or histogram "_bucket" series.
    found = []
    for key, value in raw.items():
        if (key == name or key.startswith(name + "{")) and not math.isnan(value):
            found.append(value)
    return found


def _sum(raw: Mapping[str, float], *names: str) -> float | None:
    """Summed over label sets (several models or engine cores); first name present wins,
    so a deprecated alias exported beside its replacement is not counted twice."""
    for name in names:
        vals = _values(raw, name)
        if vals:
            return sum(vals)
    return None


def _max(raw: Mapping[str, float], *names: str) -> float | None:
    # Usage ratios are not additive: with several pools (engine cores, dp ranks) or
    # duplicates (every tp rank reports the same pool) the fullest one is what
    # triggers preemption.
    for name in names:
        vals = _values(raw, name)
        if vals:
            return max(vals)
    return None


def engine_metrics(text: str) -> EngineMetrics:
    raw = parse_prometheus_text(text)
    return EngineMetrics(
        kv_usage_ratio=_max(
            raw,
            "vllm:kv_cache_usage_perc",
            "vllm:gpu_cache_usage_perc",
            "sglang:token_usage",
            "llamacpp:kv_cache_usage_ratio",
        ),
        requests_running=_sum(
            raw,
            "vllm:num_requests_running",
            "sglang:num_running_reqs",
            "llamacpp:requests_processing",
        ),
        requests_waiting=_sum(
            raw, "vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred"
        ),
        preemptions_total=_sum(raw, "vllm:num_preemptions_total"),
        prompt_tokens_total=_sum(
            raw,
            "vllm:prompt_tokens_total",
            "sglang:prompt_tokens_total",
            "llamacpp:prompt_tokens_total",
        ),
        generation_tokens_total=_sum(
            raw,
            "vllm:generation_tokens_total",
            "sglang:generation_tokens_total",
            "llamacpp:tokens_predicted_total",
        ),
        raw=raw,
    )
