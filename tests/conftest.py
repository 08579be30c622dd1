"""Shared fixtures. Integration tests check that nothing a run created survives it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
MEMGAP = Path(sys.executable).parent / "memgap"


def _memgap_cgroups() -> set[str]:
    from memgap.collect.cgroup import memory_cgroup_of

    ref = memory_cgroup_of("self")
    if ref is None or not ref.path.exists():
        return set()
    return {p.name for p in ref.path.iterdir() if p.is_dir() and p.name.startswith("memgap-")}


def _engine_processes() -> set[tuple[int, float]]:
    out = set()
    for p in psutil.process_iter(["pid", "name", "create_time", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if "llama-server" in cmd or "unshare" in (p.info["name"] or ""):
            out.add((p.info["pid"], p.info["create_time"]))
    return out


def _memgap_tempdirs() -> set[str]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    return {p.name for pattern in ("memgap-run-*", "memgap-scratch-*") for p in tmp.glob(pattern)}


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Fails the test if a cgroup, engine process or temp folder outlives it."""
    before = (_memgap_cgroups(), _engine_processes(), _memgap_tempdirs())
    yield
    after = (_memgap_cgroups(), _engine_processes(), _memgap_tempdirs())
    assert after[0] - before[0] == set(), f"cgroups left behind: {after[0] - before[0]}"
    assert after[1] - before[1] == set(), f"engine processes left behind: {after[1] - before[1]}"
    assert after[2] - before[2] == set(), f"temp folders left behind: {after[2] - before[2]}"
