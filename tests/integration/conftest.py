"""Fixtures of the real-kernel tests (helpers: kernel_child.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kernel_child import own_memory_cgroup

from memgap.collect.cgroup import CgroupRef


@pytest.fixture
def child_cgroup() -> Iterator[CgroupRef]:
    with own_memory_cgroup() as ref:
        yield ref
