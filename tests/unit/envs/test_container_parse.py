"""Parsing `inspect` and `stats` output recorded on the project's machine
(tests/fixtures/containers/README.md says how)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memgap.envs.container import STATS_MEANING, classify_cli_error, parse_inspect, parse_stats
from memgap.errors import EnvironmentUnavailable, PrivilegeError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "containers"


def load(name: str) -> str:
    return (FIX / name).read_text()


def test_docker_running_container() -> None:
    (s,) = parse_inspect(load("docker-inspect-running.json"))
    assert s.running and s.status == "running"
    assert s.pid is not None and s.pid > 1
    assert s.exit_code is None  # not exited yet: ExitCode 0 means nothing
    assert s.oom_killed is False
    assert s.name == "mgtest"  # docker prefixes the name with "/"
    assert s.image_id is not None and s.image_id.startswith("sha256:")
    assert s.labels == {"memgap.run": "x"}
    assert s.finished_at is None  # "0001-01-01T00:00:00Z"
    assert s.cgroup_path is None


def test_docker_stopped_by_sigterm() -> None:
    (s,) = parse_inspect(load("docker-inspect-stopped.json"))
    assert not s.running and s.status == "exited"
    assert s.pid is None and s.exit_code == 0 and s.oom_killed is False
    assert s.finished_at is not None and s.finished_at.startswith("2026-")


def test_docker_oom_killed() -> None:
    (s,) = parse_inspect(load("docker-inspect-oom.json"))
    assert s.exit_code == 137 and s.oom_killed is True and not s.running


def test_podman_running_reports_its_cgroup() -> None:
    (s,) = parse_inspect(load("podman-inspect-running.json"))
    assert s.running and s.pid is not None
    assert s.cgroup_path is not None and s.cgroup_path.startswith("/libpod_parent/libpod-")
    assert s.cgroup_path.endswith(s.id)


def test_podman_killed_after_stop_timeout() -> None:
    (s,) = parse_inspect(load("podman-inspect-stopped.json"))
    assert s.exit_code == 137 and s.oom_killed is False  # SIGKILL after `stop -t 10`, not OOM
    assert s.status == "exited"


def test_inspect_round_trips_through_to_dict() -> None:
    (s,) = parse_inspect(load("docker-inspect-oom.json"))
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d and d["oom_killed"] is True


def test_inspect_garbage_is_an_error_not_a_state() -> None:
    with pytest.raises(ValueError):
        parse_inspect("Error: no such object")
    with pytest.raises(ValueError):
        parse_inspect('{"Id": "x"}')
    assert parse_inspect("[]") == []


def test_docker_stats_are_binary_units() -> None:
    r = parse_stats("docker", load("docker-stats.jsonl"))
    assert r is not None
    assert r.raw == "68.54MiB / 23.54GiB"
    assert abs(r.usage_bytes - 68.54 * 2**20) <= 1  # type: ignore[operator]
    assert abs(r.limit_bytes - 23.54 * 2**30) <= 1  # type: ignore[operator]


def test_podman_stats_are_decimal_units() -> None:
    r = parse_stats("podman", load("podman-stats.json"))
    assert r is not None
    assert r.usage_bytes == 71_440_000 and r.limit_bytes == 25_280_000_000


def test_stats_meanings_say_which_figure_it_is() -> None:
    assert "inactive_file" in STATS_MEANING["docker"]
    assert "including page cache" in STATS_MEANING["podman"]


@pytest.mark.parametrize("text", ["", "not json", "[]", '[{"name": "x"}]', '{"MemUsage": 5}', "[1, 2]"])
def test_stats_without_a_usage_field_read_as_none(text: str) -> None:
    assert parse_stats("docker", text) is None


def test_stats_with_unreadable_sizes_keep_the_raw_text() -> None:
    r = parse_stats("docker", '{"MemUsage": "-- / --"}')
    assert r is not None and r.usage_bytes is None and r.limit_bytes is None and r.raw == "-- / --"


@given(st.text(max_size=200))
def test_stats_parser_never_raises(text: str) -> None:
    parse_stats("docker", text)
    parse_stats("podman", text)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.sampled_from(["B", "KiB", "MiB", "GiB", "kB", "MB", "GB"]))
def test_stats_usage_matches_the_unit(value: float, unit: str) -> None:
    factor = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 10**3, "MB": 10**6, "GB": 10**9}[unit]
    r = parse_stats("docker", json.dumps({"MemUsage": f"{value:.2f}{unit} / 1GiB"}))
    assert r is not None and r.usage_bytes is not None
    assert abs(r.usage_bytes - float(f"{value:.2f}") * factor) <= 1


@pytest.mark.parametrize(
    ("stderr", "kind", "words"),
    [
        ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
         EnvironmentUnavailable, "daemon is not running"),
        ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
         PrivilegeError, "permission denied"),
        ("Error: No such image: memgap-x:1", EnvironmentUnavailable, "image missing"),
        ("Error: nope:latest: image not known", EnvironmentUnavailable, "image missing"),
        ("Error response from daemon: something else", EnvironmentUnavailable, "run failed"),
    ],
)
def test_cli_errors_name_what_is_missing(stderr: str, kind: type, words: str) -> None:
    e = classify_cli_error("docker", "run", stderr)
    assert isinstance(e, kind) and words in str(e)
