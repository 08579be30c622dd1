"""``memgap watch`` on a real child process and this process's own cgroup, and the
container pid lookup through a test double of the docker/podman CLI."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.cli.watch import cgroup_from_path, container_pid, output_format, resolve_target
from memgap.collect.cgroup import memory_cgroup_of
from memgap.errors import EnvironmentUnavailable, UsageError

FIX = Path(__file__).resolve().parents[2] / "fixtures"
MIB = 1024**2


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    # Holds 32 MiB of written (resident) anon memory, then sleeps.
    code = "import time; b = bytearray(b'\\x01') * (32 << 20); print('ok', flush=True); time.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ok"
    yield p
    p.kill()
    p.wait()


def test_watch_pid_writes_csv(sleeper: subprocess.Popen[bytes], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "w.csv"
    assert main(["watch", "--pid", str(sleeper.pid), "--duration", "0.6", "--rate", "20", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) >= 8  # 20 Hz for 0.6 s, plus the start and end marks
    # RSS on every row; the breakdown at 10 Hz (--full-rate) when the native loop runs
    assert all(32 * MIB <= int(r["process_rss_bytes"]) < 96 * MIB for r in rows)
    anon = [int(r["process_anon_bytes"]) for r in rows if r["process_anon_bytes"]]
    assert len(anon) >= 4 and all(32 * MIB <= a < 64 * MIB for a in anon)
    assert all(r["process_count"] == "1" for r in rows)
    assert float(rows[-1]["t_s"]) >= 0.5
    captured = capsys.readouterr()
    assert "wrote" in captured.err and "processes RssAnon" in captured.out


def test_watch_full_rate_reads_the_breakdown_on_every_row(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    assert main(["watch", "--pid", str(sleeper.pid), "--duration", "0.5", "--rate", "20", "--full-rate", "20",
                 "-o", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) >= 6 and all(r["process_anon_bytes"] is not None for r in rows)
    assert main(["watch", "--pid", str(sleeper.pid), "--full-rate", "0", "-o", str(out)]) == 2


def test_watch_pid_stops_when_the_process_exits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    try:
        out = tmp_path / "w.jsonl"
        assert main(["watch", "--pid", str(p.pid), "--duration", "20", "-o", str(out)]) == 0
    finally:
        p.wait()
    assert f"process {p.pid} exited" in capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and set(lines[0]) >= {"t_s", "process_rss_bytes", "host_free_bytes"}


def test_watch_cgroup_jsonl(tmp_path: Path) -> None:
    own = memory_cgroup_of("self")
    if own is None:
        pytest.skip("no memory cgroup visible")
    out = tmp_path / "w.jsonl"
    assert main(["watch", "--cgroup", own.relpath or "/", "--duration", "0.3", "-o", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows and all(r["cgroup_usage_bytes"] and r["cgroup_usage_bytes"] > 0 for r in rows)
    assert all(r["process_count"] == 0 for r in rows)  # a cgroup watch samples no process tree


def test_cgroup_from_a_folder_or_a_path_through_our_mounts(tmp_path: Path) -> None:
    """``--cgroup`` resolves through this process's mounts (collect.cgroup.memory_cgroup_at):
    a folder below a memory hierarchy, or the path /proc/PID/cgroup prints."""
    v1, v2 = tmp_path / "cg" / "memory", tmp_path / "cg" / "unified"
    docker = v1 / "docker" / "abc"
    scope = v2 / "system.slice" / "x.scope"
    for d, fixture in ((docker, "v1"), (scope, "v2")):
        d.mkdir(parents=True)
        for f in (FIX / "cgroup" / fixture).iterdir():
            (d / f.name).write_text(f.read_text())
    (v2 / "cgroup.controllers").write_text("cpu io memory pids\n")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(f"35 31 0:32 / {v1} rw,relatime - cgroup cgroup rw,memory\n"
                                             f"41 31 0:38 / {v2} rw,relatime - cgroup2 cgroup2 rw\n")
    ref = cgroup_from_path(str(docker), proc)
    assert (ref.version, ref.path, ref.relpath) == (1, docker, "/docker/abc")
    assert cgroup_from_path("/docker/abc", proc) == ref
    ref = cgroup_from_path(str(scope), proc)
    assert (ref.version, ref.path, ref.relpath) == (2, scope, "/system.slice/x.scope")
    with pytest.raises(UsageError, match="not a memory cgroup here"):
        cgroup_from_path(str(FIX / "cgroup" / "v1"), proc)  # memory files, but no hierarchy here holds them
    with pytest.raises(UsageError, match="not a memory cgroup here"):
        cgroup_from_path("/docker/gone", proc)
    with pytest.raises(UsageError, match="not a cgroup directory"):
        cgroup_from_path("relative/nowhere", proc)


def _fake_runtime(tmp_path: Path, name: str, script: str) -> None:
    exe = tmp_path / name
    exe.write_text(f"#!{sys.executable}\nimport sys\n{script}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_container_pid_through_a_docker_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                sleeper: subprocess.Popen[bytes]) -> None:
    # Test double of the docker CLI: checks the argument list, answers the pid.
    _fake_runtime(tmp_path, "docker", f"""
assert sys.argv[1:] == ["inspect", "-f", "{{{{.State.Pid}}}}", "web"], sys.argv
print({sleeper.pid})""")
    _fake_runtime(tmp_path, "podman", "print('no such container', file=sys.stderr); sys.exit(125)")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert container_pid("web") == (sleeper.pid, "docker")
    with pytest.raises(EnvironmentUnavailable, match="podman: no such container"):
        container_pid("web", runtime="podman")
    target = resolve_target(None, None, "web", None)
    assert target.pid == sleeper.pid and "container web (docker)" in target.description


def test_container_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_runtime(tmp_path, "docker", "print(0)")  # docker prints pid 0 for a stopped container
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentUnavailable, match=r"docker: pid 0 \(not running\?\); podman: not installed"):
        container_pid("stopped")


@pytest.mark.parametrize(("argv", "message"), [
    (["watch"], "exactly one of"),
    (["watch", "--pid", "1", "--cgroup", "/"], "exactly one of"),
    (["watch", "--pid", str(2**22 + 7)], "no process"),
    (["watch", "--pid", str(os.getpid()), "-o", "x.txt"], "cannot tell the format"),
    (["watch", "--pid", str(os.getpid()), "--duration", "0"], "--duration must be positive"),
])
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_output_format() -> None:
    assert output_format(Path("a.CSV")) == "csv" and output_format(Path("a.ndjson")) == "jsonl"


def test_a_pids_cgroup_is_our_own_memory_cgroup_of_it() -> None:
    own = memory_cgroup_of("self")
    if own is None:
        pytest.skip("no memory cgroup visible")
    target = resolve_target(os.getpid(), None, None, None)
    assert target.pid == os.getpid() and target.cgroup == own


def test_a_pids_cgroup_is_resolved_through_our_mounts_not_the_targets(tmp_path: Path) -> None:
    """A container's /proc/PID/mountinfo shows its cgroup at its mount's root; the path in
    /proc/PID/cgroup is resolved against this process's mounts instead."""
    own = memory_cgroup_of("self")
    if own is None or own.version != 1:
        pytest.skip("needs a v1 memory cgroup of our own")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "77").mkdir()
    (proc / "self" / "mountinfo").write_text(Path("/proc/self/mountinfo").read_text())
    (proc / "77" / "cgroup").write_text(f"4:memory:{own.relpath}\n1:name=systemd:/x\n")
    # the target's own view would say "/" -- it is not read
    (proc / "77" / "mountinfo").write_text("garbage\n")
    ref = resolve_target(77, None, None, None, proc).cgroup
    assert ref is not None and ref.path == own.path and ref.version == 1
    (proc / "77" / "cgroup").write_text("4:memory:/no/such/cgroup\n")
    target = resolve_target(77, None, None, None, proc)
    assert target.cgroup is None and "no memory cgroup visible" in target.description


def test_series_writer_appends_only_complete_rows(tmp_path: Path) -> None:
    from memgap.cli.watch import SeriesWriter
    from memgap.series import COLUMNS, MemorySeries

    s = MemorySeries(rate_hz=10)
    for i in range(3):
        for c in COLUMNS:
            s.columns[c].append(float(i) if c == "t_s" else None)
    s.columns["t_s"].append(3.0)  # the sampler thread is mid-row
    w = SeriesWriter(tmp_path / "w.jsonl")
    w.flush_from(s)
    assert w.written == 3
    assert [json.loads(x)["t_s"] for x in (tmp_path / "w.jsonl").read_text().splitlines()] == [0.0, 1.0, 2.0]
    for c in COLUMNS[1:]:
        s.columns[c].append(None)
    w.flush_from(s)
    w.close()
    assert [json.loads(x)["t_s"] for x in (tmp_path / "w.jsonl").read_text().splitlines()] == [0.0, 1.0, 2.0, 3.0]
