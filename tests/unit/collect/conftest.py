"""Fake /proc and cgroup trees for the collector tests, built in tmp_path from the
real kernel output kept in tests/fixtures (see tests/fixtures/README.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def fixture_text(*parts: str) -> str:
    return FIXTURES.joinpath(*parts).read_text()


def _rebase_mountinfo(text: str, sys_root: Path) -> str:
    """Move every cgroup mount point under ``sys_root`` (field 5; the root, field 4,
    stays as the kernel wrote it)."""
    out = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[4].startswith("/sys/fs/cgroup"):
            fields[4] = str(sys_root) + fields[4]
        out.append(" ".join(fields))
    return "\n".join(out) + "\n"


class FakeHost:
    """A proc root and a sys root under tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = tmp_path / "proc"
        self.sys = tmp_path / "sysroot"
        self.proc.mkdir()
        self.sys.mkdir()

    def add_process(self, proc_fixture: str, pid: int | str = "self") -> Path:
        d = self.proc / str(pid)
        d.mkdir(parents=True)
        src = FIXTURES / "proc" / proc_fixture
        for f in src.iterdir():
            text = f.read_text()
            if f.name == "mountinfo":
                text = _rebase_mountinfo(text, self.sys)
            (d / f.name).write_text(text)
        return d

    def cgroup_dir(self, path: str, fixture: str | None = None) -> Path:
        """A cgroup directory at sys/fs/cgroup/<path>, filled from tests/fixtures/cgroup/<fixture>."""
        d = self.sys / "sys/fs/cgroup" / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        if fixture is not None:
            for f in (FIXTURES / "cgroup" / fixture).iterdir():
                shutil.copy(f, d / f.name)
        return d


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)
