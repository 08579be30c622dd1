"""``memgap.probe``'s pure core on fixed readings."""

from __future__ import annotations

from memgap.collect.cgroup import CgroupMemory
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.nvml import GpuReading
from memgap.probe import Assumptions, Measured, droppable_page_cache, evaluate

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
