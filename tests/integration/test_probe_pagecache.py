"""The seed's mechanism on this machine: reading a file fills the page cache, which
lowers MemFree (what cudaMemGetInfo reports on unified memory) but hardly MemAvailable.
TensorRT-LLM's rule, which reads free memory, loses about that much KV budget;
vLLM's, which sizes from the total and only checks MemAvailable, does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kernel_child import drop_from_page_cache

from memgap.collect.meminfo import read_meminfo
from memgap.probe import Assumptions, evaluate, gather

pytestmark = pytest.mark.integration

GiB = 1 << 30
SIZE = 1 * GiB


def _budget(rule: str, fraction: float) -> tuple[int, int]:
    result = evaluate(gather(use_nvml=False, use_torch=False),
                      Assumptions(weights_bytes=0, weights_source="test", fractions=(fraction,)))
    uni = next(s for s in result.scenarios if s.name == "unified")
    b = next(b for b in uni.budgets if b.rule == rule and b.fraction == fraction)
    assert b.kv_budget_bytes is not None, b.note
    return b.kv_budget_bytes, int(b.inputs.get("startup_free_bytes", 0))


def test_page_cache_lowers_trtllm_budget_not_vllm(tmp_path: Path) -> None:
    mi = read_meminfo()
    if (mi.available_bytes or 0) < 4 * SIZE:
        pytest.skip("not enough memory for a 1 GiB page-cache experiment")
    path = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(SIZE >> 20):
            f.write(chunk)
    try:
        drop_from_page_cache(path)
        # vLLM at 0.5 so its start-up check (MemAvailable >= total * fraction) passes here.
        cached_cold = read_meminfo().cached_bytes or 0
        trt_cold, _ = _budget("trtllm-pytorch", 0.9)
        vllm_cold, avail_cold = _budget("vllm", 0.5)
        with path.open("rb") as f:
            while f.read(8 << 20):
                pass
        trt_warm, _ = _budget("trtllm-pytorch", 0.9)
        vllm_warm, avail_warm = _budget("vllm", 0.5)
        cached_warm = read_meminfo().cached_bytes or 0
    finally:
        drop_from_page_cache(path)
        path.unlink()
    drop = (trt_cold - trt_warm) / 0.9
    print(f"TRT-LLM budget drop / 0.9 = {drop / GiB:.3f} GiB; MemAvailable moved {(avail_cold - avail_warm) / GiB:.3f} GiB")
    added = cached_warm - cached_cold
    # The read added about the file's size as page cache, and the budget dropped by about
    # the page cache added (other processes on a busy machine move MemFree a little too).
    assert added > 0.8 * SIZE, added / GiB
    assert abs(drop - added) < 0.25 * SIZE, (drop / GiB, added / GiB)
    assert vllm_cold == vllm_warm
    assert abs(avail_cold - avail_warm) < 0.4 * SIZE
