"""explain with issue 14's engine-specific mechanisms: vLLM's CPU rule read from its own
sizing line and the memory limit named as the input that moved the KV size (a recorded
native start against a rebuilt container start), and page cache vLLM booked as
non-torch memory on unified memory (rebuilt 0.11.0 GB10 logs, cold against warm)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "diagnose"))

from records import GIB, docker_auto, native_auto, record  # noqa: E402

from memgap.analysis.explain import RunInput, explain  # noqa: E402

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


def test_the_limit_is_the_input_that_moved_vllms_cpu_kv_size() -> None:
    ex = explain("native", [RunInput(native_auto())], "docker", [RunInput(docker_auto())])
    rule, limit, cg = ex.hypothesis("kv_sizing_rule"), ex.hypothesis("memory_limit"), ex.hypothesis("cgroup_accounting")
    assert rule.verdict == "supported" and rule.explains_kv is True
    assert limit.explains_kv is True and limit.differs is True
    assert "the limit is the input that moved the KV size" in limit.kv_evidence
    assert "not the charge but the limit reached the engine" in cg.kv_evidence
    text = ex.answer.text
    assert text.startswith("KV cache 2.3 \u2192 0.3 GiB (\u22122.0).")
    assert ("vLLM's rule explains it: native sized from 9.84 GiB, node MemTotal: ceil(9.84 GiB x 0.3) - 0.62 GiB "
            "non-KV = 2.33 GiB; docker sized from 3.00 GiB, its memory limit (its cgroup's limit)") in text
    assert ex.answer.rule_input is not None and ex.answer.rule_input.startswith("the memory total vLLM's CPU worker")
    assert ex.answer.rule_input_delta_bytes == 3 * GIB - round(9.84 * GIB)
    assert ("memory_limit", int((3 * GIB - round(9.84 * GIB)) * 0.3)) in ex.answer.explained_by


def _uma(run_id: str, start_cache: float, ready_cache: float, kv_extra: float = 0) -> dict[str, Any]:
    r = record((LOGS / "vllm-0.11.0-gb10-uma-rebuilt.log").read_text(), run_id=run_id,
               host={"gpus": [{"index": 0, "name": "NVIDIA GB10", "unified_memory": True,
                               "not_supported": ["memory_info"]}]})
    r["engine_report"]["kv_cache_bytes"] += int(kv_extra * GIB)
    r["memory"] = {"at": {m: {"host_cached_bytes": int(c * GIB), "host_shmem_bytes": 0}
                          for m, c in (("start", start_cache), ("ready", ready_cache))}}
    return r


def test_page_cache_booked_as_non_torch_explains_a_cold_start_smaller_cache() -> None:
    cold, warm = _uma("cold", 3.1, 18.08), _uma("warm", 18.0, 18.0, kv_extra=14.98)
    ex = explain("cold", [RunInput(cold)], "warm", [RunInput(warm)])
    h = ex.hypothesis("page_cache_as_non_torch")
    assert h.differs is True and h.explains_kv is True
    assert h.evidence.startswith("vLLM booked 15.38 GiB vs 15.38 GiB as non-torch memory while page cache grew "
                                 "14.98 GiB vs 0.00 GiB")
    assert dict(ex.answer.explained_by)["page_cache_as_non_torch"] == pytest.approx(14.98 * GIB, abs=2)
