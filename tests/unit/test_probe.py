"""``memgap.probe``'s pure core on fixed readings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from memgap.collect.cgroup import CgroupMemory
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.numa import VisibleLimit, parse_node_meminfo
from memgap.collect.nvml import GpuReading
from memgap.probe import Assumptions, Measured, VllmCpuAssumptions, droppable_page_cache, evaluate
from memgap.sizing import CpuEngineCosts, KvBudget

GiB, MiB = 1 << 30, 1 << 20

MEMINFO = """MemTotal:       24684092 kB
MemFree:        17709676 kB
MemAvailable:   22551928 kB
Buffers:           39536 kB
Cached:          4783772 kB
Shmem:              8940 kB
Mapped:           310268 kB
"""


def measured(*, gpus: tuple[GpuReading, ...] = (), cgroup: CgroupMemory | None = None,
             meminfo: str = MEMINFO) -> Measured:
    return Measured(read_at=0.0, meminfo=parse_meminfo(meminfo), cgroup_path="/sys/fs/cgroup/x" if cgroup else None,
                    cgroup=cgroup, gpus=gpus, gpus_unavailable=None if gpus else "no NVIDIA driver",
                    torch=None, torch_unavailable="torch is not installed")


def gpu(index: int, total: int | None, free: int | None, unified: bool) -> GpuReading:
    return GpuReading(index=index, name="NVIDIA H100" if not unified else "NVIDIA GB10", uuid=None,
                      total_bytes=total, used_bytes=None if total is None or free is None else total - free,
                      free_bytes=free, unified_memory=unified,
                      not_supported=("memory_info",) if total is None else ())


def cgroup(limit: int | None, usage: int = 100 * MiB) -> CgroupMemory:
    return CgroupMemory(version=2, usage_bytes=usage, peak_bytes=None, limit_bytes=limit, high_bytes=None,
                        swap_bytes=None, failcnt=None, oom_events=None, oom_kill_count=None, under_oom=None,
                        anon_bytes=None, file_bytes=None, shmem_bytes=None, file_mapped_bytes=None,
                        kernel_bytes=None, active_file_bytes=None, inactive_file_bytes=None)


def by_rule(result, scenario: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    s = next(s for s in result.scenarios if s.name == scenario)
    return {(b.rule, b.fraction): b for b in s.budgets}


def test_unified_scenario_uses_meminfo_and_page_cache_what_if() -> None:
    r = evaluate(measured(), Assumptions(weights_bytes=1 * GiB, weights_source="--weights-bytes",
                                         bytes_per_token=57344))
    uni = by_rule(r, "unified")
    free = 17709676 * 1024
    assert uni[("trtllm-pytorch", 0.9)].kv_budget_bytes == int((free - GiB) * 0.9)
    assert uni[("trtllm-pytorch", 0.9)].kv_tokens == int((free - GiB) * 0.9) // 57344
    total = 24684092 * 1024
    assert uni[("vllm", 0.9)].kv_budget_bytes == int(total * 0.9) - GiB
    drop = droppable_page_cache(r.measured.meminfo)
    assert drop == (4783772 - 8940 - 310268 + 39536) * 1024
    dropped = by_rule(r, "unified-page-cache-dropped")
    assert dropped[("trtllm-pytorch", 0.9)].kv_budget_bytes == int((free + drop - GiB) * 0.9)  # type: ignore[operator]
    assert dropped[("vllm", 0.9)].kv_budget_bytes == uni[("vllm", 0.9)].kv_budget_bytes
    assert r.scenarios[0].measured and not r.scenarios[1].measured
    assert any("no GPU reading" in n for n in r.notes)


def test_what_if_fractions_and_llamacpp_fit() -> None:
    r = evaluate(measured(), Assumptions(weights_bytes=0, weights_source="assumed", bytes_per_token=23040,
                                         n_ctx=8192, fractions=(0.5,)))
    uni = by_rule(r, "unified")
    assert {f for (_, f) in uni} == {0.9, 0.88, 0.5, None}
    assert uni[("llamacpp-fit", None)].kv_budget_bytes == 180 * MiB
    assert any("weights assumed 0" in n for n in r.notes)


def test_discrete_gpu_scenario_and_unified_gpu_note() -> None:
    gpus = (gpu(0, 80 * GiB, 79 * GiB, unified=False), gpu(1, None, None, unified=True))
    r = evaluate(measured(gpus=gpus), Assumptions(weights_bytes=15 * GiB, weights_source="x"))
    g0 = by_rule(r, "gpu0")
    assert g0[("sglang", 0.88)].kv_budget_bytes == int(64 * GiB - 80 * GiB * (1 - 0.88))
    assert "cudaMemGetInfo free" == g0[("trtllm-pytorch", 0.9)].memory_source
    assert "gpu1" not in {s.name for s in r.scenarios}
    assert any("GPU 1" in n and "unified" in n for n in r.notes)
    assert "this GPU shares host memory" in r.scenarios[0].description


def test_cgroup_limit_is_reported_but_not_used() -> None:
    tight = evaluate(measured(cgroup=cgroup(limit=4 * GiB)), Assumptions(weights_bytes=0, weights_source="x"))
    notes = tight.scenarios[0].notes
    assert any("no engine reads it" in n for n in notes)
    assert any("OOM killer" in n for n in notes)
    free = evaluate(measured(cgroup=cgroup(limit=None)), Assumptions(weights_bytes=0, weights_source="x"))
    assert any("no limit" in n for n in free.scenarios[0].notes)
    unified = by_rule(tight, "unified")
    assert unified[("trtllm-pytorch", 0.9)].kv_budget_bytes == by_rule(free, "unified")[
        ("trtllm-pytorch", 0.9)].kv_budget_bytes


def test_to_dict_is_json_ready() -> None:
    import json

    r = evaluate(measured(gpus=(gpu(0, 80 * GiB, 79 * GiB, unified=False),), cgroup=cgroup(8 * GiB)),
                 Assumptions(weights_bytes=1, weights_source="x"))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["measured"]["meminfo"]["free_bytes"] == 17709676 * 1024
    assert d["measured"]["cgroup"]["limit_bytes"] == 8 * GiB
    assert [s["name"] for s in d["scenarios"]] == ["unified", "unified-page-cache-dropped", "gpu0"]


# --- vLLM on a CPU ----------------------------------------------------------------------

NODE0 = (Path(__file__).resolve().parents[1] / "fixtures" / "sys" / "node0-meminfo.txt").read_text()
COSTS = CpuEngineCosts(worker_rss_bytes=round(0.63 * GiB), engine_bytes=1_330_000_000, source="test")


HOST_ROOT = VisibleLimit(None, None, "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # no limit on a host


def cpu_measured(visible: VisibleLimit = HOST_ROOT, own: CgroupMemory | None = None) -> Measured:
    return replace(measured(cgroup=own), cpu_node=parse_node_meminfo(NODE0), visible_limit=visible,
                   cpu_unavailable=None)


def cpu_budgets(m: Measured, **kw: object) -> dict[tuple[str, float | None], KvBudget]:
    a = Assumptions(weights_bytes=0, weights_source="x", bytes_per_token=1024,
                    vllm_cpu=VllmCpuAssumptions(costs=COSTS, **kw))
    return by_rule(evaluate(m, a), "vllm-cpu")


def test_vllm_cpu_native_reads_the_node_and_predicts_both_defaults() -> None:
    node = parse_node_meminfo(NODE0)
    b = cpu_budgets(cpu_measured())
    half = b[("vllm-cpu", 0.5)]
    assert half.kv_budget_bytes == -(-node.total_bytes // 2) - COSTS.worker_rss_bytes
    assert half.kv_tokens == half.kv_budget_bytes // (1024 * 128) * 128
    # vLLM's own default asks for 92% of the node, more than it has available: refused.
    assert b[("vllm-cpu", 0.92)].kv_budget_bytes is None and "refuse" in (b[("vllm-cpu", 0.92)].note or "")


def test_vllm_cpu_in_docker_sees_its_limit_in_the_sandbox_not() -> None:
    m = cpu_measured()
    docker = cpu_budgets(m, env="docker", memory_limit_bytes=3 * GiB)[("vllm-cpu", 0.5)]
    assert docker.kv_budget_bytes == 3 * GiB // 2 - COSTS.worker_rss_bytes
    sandbox = cpu_budgets(m, env="sandbox", memory_limit_bytes=3 * GiB)
    native = cpu_budgets(m)
    assert sandbox[("vllm-cpu", 0.5)].kv_budget_bytes == native[("vllm-cpu", 0.5)].kv_budget_bytes
    assert "expect an OOM kill" in (sandbox[("vllm-cpu", 0.5)].note or "")
    r = evaluate(m, Assumptions(weights_bytes=0, weights_source="x",
                                vllm_cpu=VllmCpuAssumptions(env="sandbox", memory_limit_bytes=3 * GiB)))
    s = next(s for s in r.scenarios if s.name == "vllm-cpu")
    assert any("no cgroup namespace" in n for n in s.notes)


def test_vllm_cpu_explicit_size_and_this_processs_own_limit() -> None:
    b = cpu_budgets(cpu_measured(), kv_cache_memory_bytes=256 * MiB, utilizations=(0.3,))
    assert b[("vllm-cpu-explicit", None)].kv_budget_bytes == 256 * MiB
    assert b[("vllm-cpu-explicit", None)].kv_tokens == 262_144
    assert set(b) == {("vllm-cpu-explicit", None), ("vllm-cpu", 0.3)}
    # Natively the engine runs in memgap's own cgroup: its limit binds, unseen on a host.
    own = cpu_budgets(cpu_measured(own=cgroup(limit=2 * GiB)), utilizations=(0.3,))
    assert "expect an OOM kill" in (own[("vllm-cpu", 0.3)].note or "")
    # A visible limit (memgap itself in a container) clamps instead.
    inside = cpu_budgets(cpu_measured(visible=VisibleLimit(4 * GiB, 1 * GiB, "x")), utilizations=(0.5,))
    assert inside[("vllm-cpu", 0.5)].kv_budget_bytes == 2 * GiB - COSTS.worker_rss_bytes


def test_no_node_reading_is_a_note_not_a_scenario() -> None:
    r = evaluate(replace(measured(), cpu_unavailable="node memory or cgroup limit unreadable: x"),
                 Assumptions(weights_bytes=0, weights_source="x"))
    assert "vllm-cpu" not in {s.name for s in r.scenarios}
    assert any("no vLLM CPU prediction" in n for n in r.notes)
