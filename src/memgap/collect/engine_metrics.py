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

vLLM also exports its cache configuration as an info gauge (value 1, the figures in its
labels), ``vllm:cache_config_info{...}`` (vllm/v1/metrics/loggers.py, from
``CacheConfig.metrics_info()``): ``num_gpu_blocks`` (so named on a CPU too),
``block_size``, ``kv_cache_memory_bytes`` (the explicit size, ``"None"`` under the
automatic rule), ``kv_cache_size_tokens``, ``kv_cache_max_concurrency``,
``gpu_memory_utilization``, ``cache_dtype``; every value is ``str()`` of a Python value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from memgap.collect.errors import CollectorParseError

_SOURCE = "/metrics (Prometheus text)"


@dataclass(frozen=True)
class KvCacheConfig:
    """vLLM's ``vllm:cache_config_info`` labels, typed; a label vLLM prints as ``None``
    (or one it does not print) is None. One engine core's, the first in the text."""

    num_blocks: int | None  # num_gpu_blocks: the KV cache's blocks, on a CPU too
    block_size: int | None  # tokens per block
    kv_cache_memory_bytes: int | None  # the explicit size asked for; None under the automatic rule
    kv_cache_size_tokens: int | None  # num_blocks x block_size (newer releases)
    kv_cache_max_concurrency: float | None
    gpu_memory_utilization: float | None
    cache_dtype: str | None
    labels: Mapping[str, str] = field(default_factory=dict, repr=False)  # verbatim

    @property
    def tokens(self) -> int | None:
        """Tokens the KV cache holds: the label, else blocks x block size."""
        if self.kv_cache_size_tokens is not None:
            return self.kv_cache_size_tokens
        if self.num_blocks is None or self.block_size is None:
            return None
        return self.num_blocks * self.block_size

    def allocated_bytes(self, bytes_per_token: int | None) -> int | None:
        """Bytes the cache's blocks take (blocks x block size x bytes per token, all
        layers): what was allocated, which the automatic rule does not print exactly."""
        tokens = self.tokens
        if tokens is None or not bytes_per_token:
            return None
        return tokens * bytes_per_token


@dataclass(frozen=True)
class EngineMetrics:
    kv_usage_ratio: float | None  # 0..1; the fullest KV pool when there are several
    requests_running: float | None
    requests_waiting: float | None
    preemptions_total: float | None
    prompt_tokens_total: float | None
    generation_tokens_total: float | None
    raw: Mapping[str, float] = field(default_factory=dict, repr=False)  # "name{labels}" -> value
    kv_cache_config: KvCacheConfig | None = None  # vLLM's cache_config_info; None elsewhere


def _key(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return [(sample.name, dict(sample.labels), float(sample.value))
                for family in text_string_to_metric_families(text) for sample in family.samples]
    except Exception as e:
        # The parser raises ValueError, but also IndexError/KeyError/TypeError on some
        # malformed inputs; they all mean the same thing to us: not Prometheus text.
        raise CollectorParseError(
            _SOURCE, None, f"not Prometheus text format: {type(e).__name__}: {e}"
        ) from e


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Every sample as ``"name{label="v",...}" -> value`` (labels sorted by name)."""
    return {_key(name, labels): value for name, labels, value in _samples(text)}


def _label_int(labels: Mapping[str, str], name: str) -> int | None:
    v = labels.get(name)
    if v is None or v == "None":
        return None
    try:
        return int(v)
    except ValueError:
        # A label that should be a count but is not: the text is not what vLLM prints.
        raise CollectorParseError(_SOURCE, None, f"vllm:cache_config_info label {name}={v!r} is not an integer") from None


def _label_float(labels: Mapping[str, str], name: str) -> float | None:
    v = labels.get(name)
    if v is None or v == "None":
        return None
    try:
        f = float(v)
    except ValueError:
        raise CollectorParseError(_SOURCE, None, f"vllm:cache_config_info label {name}={v!r} is not a number") from None
    return None if math.isnan(f) else f


def kv_cache_config(labels: Mapping[str, str]) -> KvCacheConfig:
    """The typed figures of one ``vllm:cache_config_info`` label set."""
    dtype = labels.get("cache_dtype")
    return KvCacheConfig(
        num_blocks=_label_int(labels, "num_gpu_blocks"),
        block_size=_label_int(labels, "block_size"),
        kv_cache_memory_bytes=_label_int(labels, "kv_cache_memory_bytes"),
        kv_cache_size_tokens=_label_int(labels, "kv_cache_size_tokens"),
        kv_cache_max_concurrency=_label_float(labels, "kv_cache_max_concurrency"),
        gpu_memory_utilization=_label_float(labels, "gpu_memory_utilization"),
        cache_dtype=None if dtype in (None, "None") else dtype,
        labels=dict(labels),
    )


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
    samples = _samples(text)
    raw = {_key(name, labels): value for name, labels, value in samples}
    cache_labels = next((labels for name, labels, _ in samples if name == "vllm:cache_config_info"), None)
    return EngineMetrics(
        kv_cache_config=None if cache_labels is None else kv_cache_config(cache_labels),
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
