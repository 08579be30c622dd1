"""`memgap doctor`: findings from facts (pure), and the command's JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from memgap.cli import doctor as doctor_mod
from memgap.cli.main import main


def facts(**over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "cgroup": {"layout": "hybrid", "memory_controller": "v1", "memgap_cgroup": "/a",
                   "memgap_cgroup_path": "/sys/fs/cgroup/memory/a", "memgap_cgroup_writable": True},
        "privileges": {"euid": 0, "root": True, "cap_sys_admin": True, "cap_sys_resource": False,
                       "nofile_hard_limit": "20000"},
        "tools": {"unshare": "/usr/bin/unshare", "chroot": "/usr/sbin/chroot"},
        "containers": {
            "docker": {"installed": True, "client_version": "28.2.2", "server_version": "20.10.24",
                       "daemon_answers": True},
            "podman": {"installed": False},
        },
        "gpus": {"available": False, "reason": "libnvidia-ml.so not found", "devices": []},
        "engines": {"llama-server": {"installed": True, "version": "b1"}, "vllm": {"installed": False}},
        "environments": {"native": {"available": True},
                         "podman": {"available": False, "reason": "podman: not installed"}},
    }
    f.update(over)
    return f


def by_item(found: list[doctor_mod.Finding]) -> dict[str, doctor_mod.Finding]:
    return {f"{x.area}/{x.item}": x for x in found}


def test_missing_pieces_say_what_they_disable() -> None:
    found = by_item(doctor_mod.findings(facts()))
    assert found["containers/docker"].ok and found["containers/docker"].detail == "20.10.24"
    assert not found["containers/podman"].ok and "podman environment" in (found["containers/podman"].disables or "")
    assert not found["gpu/NVIDIA driver"].ok and "GPU memory" in (found["gpu/NVIDIA driver"].disables or "")
    assert not found["privileges/CAP_SYS_RESOURCE"].ok
    assert found["engines/llama-server"].ok and found["engines/llama-server"].detail == "b1"
    assert found["engines/vllm"].disables == "the vllm engine"
    assert found["environments/podman"].disables == "--env podman"
    assert found["environments/native"].ok and found["environments/native"].disables is None


def test_a_daemon_that_does_not_answer_is_not_ok() -> None:
    f = facts(containers={"docker": {"installed": True, "daemon_answers": False, "client_version": "28",
                                     "error": ["Cannot connect to the Docker daemon"]}})
    d = by_item(doctor_mod.findings(f))["containers/docker"]
    assert not d.ok and "Cannot connect" in d.detail and "services.sh" in (d.disables or "")


def test_no_memory_controller_disables_cgroup_readings() -> None:
    f = facts(cgroup={"layout": "v2", "memory_controller": None, "memgap_cgroup_writable": False})
    d = by_item(doctor_mod.findings(f))
    assert not d["cgroup/memory controller"].ok and "sandbox" in (d["cgroup/memory controller"].disables or "")


def test_unified_memory_gpu_is_reported() -> None:
    f = facts(gpus={"available": True, "devices": [{"index": 0, "name": "NVIDIA GB10", "unified_memory": True}]})
    g = by_item(doctor_mod.findings(f))["gpu/GPU 0"]
    assert g.ok and "unified memory: yes" in g.detail


def test_doctor_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(doctor_mod, "gather", lambda proc_root=None: facts())
    assert main(["doctor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["facts"]["containers"]["docker"]["server_version"] == "20.10.24"
    assert any(x["item"] == "podman" and x["ok"] is False for x in out["findings"])


def test_doctor_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(doctor_mod, "gather", lambda proc_root=None: facts())
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "memgap doctor" in out and "podman" in out

