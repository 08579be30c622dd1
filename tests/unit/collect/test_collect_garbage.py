"""Every parser, fed garbage, either returns a value or raises CollectorParseError —
never IndexError, ValueError or anything else a caller would not expect."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fixture_text
from memgap.collect.cgroup import (
    parse_flat_keyed,
    parse_memory_stat,
    parse_mountinfo_cgroups,
    parse_proc_cgroup,
)
from memgap.collect.engine_metrics import engine_metrics, parse_prometheus_text
from memgap.collect.errors import CollectorParseError
from memgap.collect.meminfo import parse_meminfo
from memgap.collect.process import parse_smaps_rollup, parse_stat, parse_status

PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "meminfo": (parse_meminfo, "proc/v1host/meminfo"),
    "proc_cgroup": (parse_proc_cgroup, "proc/v1k8s/cgroup"),
    "mountinfo": (parse_mountinfo_cgroups, "proc/v1host/mountinfo"),
    "memory_stat": (partial(parse_memory_stat, source="memory.stat"), "cgroup/v2/memory.stat"),
    "flat_keyed": (partial(parse_flat_keyed, source="memory.events"), "cgroup/v2/memory.events"),
    "stat": (partial(parse_stat, source="stat"), "proc/odd_comm/stat"),
    "status": (partial(parse_status, source="status"), "proc/v1host/status"),
    "smaps_rollup": (
        partial(parse_smaps_rollup, source="smaps_rollup"),
        "proc/v1host/smaps_rollup",
    ),
    "prometheus": (parse_prometheus_text, None),
    "engine_metrics": (engine_metrics, None),
}

# Characters that matter to these formats, so that generated text often gets past the
# first check and into the number and field handling.
KERNELISH = st.text(
    alphabet=st.sampled_from(list('0123456789 \t\n:()-_,/=kB{}"#.xmaxNe+٣')), max_size=300
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _must_parse_or_raise_typed(parser: Callable[[str], Any], text: str) -> None:
    try:
        parser(text)
    except CollectorParseError as e:
        assert str(e)  # has a message naming where


@pytest.mark.parametrize("name", sorted(PARSERS))
@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text(name: str, text: str) -> None:
    _must_parse_or_raise_typed(PARSERS[name][0], text)


@pytest.mark.parametrize("name", sorted(PARSERS))
@SETTINGS
@given(text=KERNELISH)
def test_kernel_alphabet(name: str, text: str) -> None:
    _must_parse_or_raise_typed(PARSERS[name][0], text)


@pytest.mark.parametrize("name", sorted(n for n, (_, f) in PARSERS.items() if f))
@SETTINGS
@given(data=st.data())
def test_mutated_real_file(name: str, data: st.DataObject) -> None:
    parser, fixture = PARSERS[name]
    assert fixture is not None
    real = fixture_text(fixture)
    start = data.draw(st.integers(0, len(real)))
    end = data.draw(st.integers(start, min(len(real), start + 20)))
    insert = data.draw(KERNELISH.map(lambda s: s[:20]))
    _must_parse_or_raise_typed(parser, real[:start] + insert + real[end:])


def test_huge_number_is_a_parse_error_not_a_value_error():
    with pytest.raises(CollectorParseError):
        parse_memory_stat("anon " + "9" * 5000 + "\n", "memory.stat")
