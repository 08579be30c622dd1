"""``memgap doctor``: what this machine offers memgap, and what each missing piece disables.

``gather`` collects facts (it never prints); ``findings`` turns them into checks with
consequences (pure, tested over made-up facts); the command renders them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from memgap.errors import MemgapError

CAP_SYS_CHROOT = 18
CAP_SYS_ADMIN = 21
CAP_SYS_RESOURCE = 24
PYTHON_ENGINES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}


@dataclass(frozen=True)
class Finding:
    area: str
    item: str
    ok: bool
    detail: str
    disables: str | None = None  # what does not work while this is missing


# ------------------------------------------------------------------- facts


def _cgroup_facts(proc_root: Path) -> dict[str, Any]:
    from memgap.collect.cgroup import memory_cgroup_of, parse_mountinfo_cgroups

    try:
        mounts = parse_mountinfo_cgroups((proc_root / "self" / "mountinfo").read_text())
    except (OSError, MemgapError) as e:
        return {"error": str(e)}
    v1_memory = any(m.version == 1 and "memory" in m.controllers for m in mounts)
    has_v1 = any(m.version == 1 for m in mounts)
    has_v2 = any(m.version == 2 for m in mounts)
    layout = "hybrid" if has_v1 and has_v2 else "v1" if has_v1 else "v2" if has_v2 else "none"
    try:
        ref = memory_cgroup_of("self", proc_root)
    except MemgapError:
        ref = None
    return {
        "layout": layout,
        "memory_controller": "v1" if v1_memory else ("v2" if ref is not None and ref.version == 2 else None),
        "memgap_cgroup": ref.relpath if ref else None,
        "memgap_cgroup_path": str(ref.path) if ref else None,
        "memgap_cgroup_writable": bool(ref and os.access(ref.path, os.W_OK)),
        "mounts": [{"version": m.version, "mount_point": str(m.mount_point), "controllers": list(m.controllers)}
                   for m in mounts],
    }


def _capabilities(proc_root: Path) -> dict[str, Any]:
    cap_eff = None
    nofile_hard = None
    try:
        for line in (proc_root / "self" / "status").read_text().splitlines():
            if line.startswith("CapEff:"):
                cap_eff = int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    try:
        for line in (proc_root / "self" / "limits").read_text().splitlines():
            if line.startswith("Max open files"):
                nofile_hard = line.split()[4]
    except (OSError, IndexError):
        pass

    def has(bit: int) -> bool | None:
        return None if cap_eff is None else bool(cap_eff >> bit & 1)

    return {
        "euid": os.geteuid(),
        "root": os.geteuid() == 0,
        "cap_sys_admin": has(CAP_SYS_ADMIN),
        "cap_sys_chroot": has(CAP_SYS_CHROOT),
        "cap_sys_resource": has(CAP_SYS_RESOURCE),
        "nofile_hard_limit": nofile_hard,
    }


def _container_engine(tool: str) -> dict[str, Any]:
    from memgap.envs.container import ContainerCli

    cli = ContainerCli(tool)
    info: dict[str, Any] = {"installed": cli.binary is not None, "path": str(cli.binary) if cli.binary else None}
    if cli.binary is None:
        return info
    if tool == "docker":
        info["docker_host"] = os.environ.get("DOCKER_HOST")
        proc = cli.call(["version", "--format", "{{.Client.Version}}|{{.Server.Version}}"], action="version",
                        check=False, timeout_s=15)
        client, _, server = proc.stdout.decode().strip().partition("|")
        info.update(client_version=client or None, server_version=server or None,
                    daemon_answers=proc.returncode == 0 and bool(server))
        if not info["daemon_answers"]:
            info["error"] = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or None
    else:
        info["containers_conf"] = os.environ.get("CONTAINERS_CONF")
        proc = cli.call(["info", "--format", "{{.Version.Version}}|{{.Host.OCIRuntime.Name}}|{{.Host.CgroupManager}}"],
                        action="info", check=False, timeout_s=30)
        parts = proc.stdout.decode().strip().split("|")
        info.update(client_version=parts[0] or None if parts else None, answers=proc.returncode == 0,
                    runtime=parts[1] if len(parts) > 1 else None, cgroup_manager=parts[2] if len(parts) > 2 else None)
        if proc.returncode != 0:
            info["error"] = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or None
    return info


def _gpus() -> dict[str, Any]:
    from memgap.collect.nvml import NvmlUnavailable, read_gpus

    r = read_gpus()
    if isinstance(r, NvmlUnavailable):
        return {"available": False, "reason": r.reason, "devices": []}
    return {"available": True, "devices": [
        {"index": g.index, "name": g.name, "total_bytes": g.total_bytes, "unified_memory": g.unified_memory,
         "addressing_mode": g.addressing_mode} for g in r]}


def _engines() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        from memgap.engines.llamacpp import embedded_model_path, find_server, server_version

        server = find_server()
        out["llama-server"] = {"installed": True, "path": str(server), "version": server_version(server)}
    except MemgapError as e:
        out["llama-server"] = {"installed": False, "reason": str(e)}
    try:
        out["embedded_model"] = {"installed": True, "path": str(embedded_model_path())}
    except MemgapError as e:
        out["embedded_model"] = {"installed": False, "reason": str(e)}
    for name, module in PYTHON_ENGINES.items():
        # find_spec only: importing vllm or tensorrt_llm takes tens of seconds.
        out[name] = {"installed": importlib.util.find_spec(module) is not None, "module": module}
    return out


def _environments() -> dict[str, Any]:
    from memgap.envs import ENVIRONMENTS, make_environment

    out: dict[str, Any] = {}
    for name in ENVIRONMENTS:
        try:
            make_environment(name).check()
            out[name] = {"available": True}
        except MemgapError as e:
            out[name] = {"available": False, "reason": str(e)}
    return out


def gather(proc_root: Path = Path("/proc")) -> dict[str, Any]:
    return {
        "cgroup": _cgroup_facts(proc_root),
        "privileges": _capabilities(proc_root),
        "tools": {t: shutil.which(t) for t in ("unshare", "chroot", "nvidia-smi")},
        "containers": {t: _container_engine(t) for t in ("docker", "podman")},
        "gpus": _gpus(),
        "engines": _engines(),
        "environments": _environments(),
        "python": sys.version.split()[0],
        "memory": _memory(proc_root),
    }


def _memory(proc_root: Path) -> dict[str, Any]:
    """Who holds memory now, the kernel's reserve and /dev/shm (memgap.diagnose)."""
    from memgap.diagnose.machine import machine_facts
    from memgap.engines.registry import REGISTRY

    facts = machine_facts(proc_root).to_dict()
    facts["engine_shm_needs"] = {name: info.container.shm_size for name, info in REGISTRY.items()}
    return facts


# ------------------------------------------------------------------- findings (pure)


def findings(f: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    cg = f.get("cgroup", {})
    ctl = cg.get("memory_controller")
    out.append(Finding("cgroup", "memory controller", ctl is not None,
                       f"{ctl or 'none'} ({cg.get('layout', '?')} layout); memgap's cgroup {cg.get('memgap_cgroup')}",
                       None if ctl else "every cgroup reading; the sandbox environment"))
    out.append(Finding("cgroup", "own cgroup writable", bool(cg.get("memgap_cgroup_writable")),
                       str(cg.get("memgap_cgroup_path")),
                       None if cg.get("memgap_cgroup_writable") else "the sandbox environment (it makes a child cgroup)"))
    pv = f.get("privileges", {})
    out.append(Finding("privileges", "root", bool(pv.get("root")), f"euid {pv.get('euid')}",
                       None if pv.get("root") else "sandbox and chroot (namespaces, mounts, chroot)"))
    out.append(Finding("privileges", "CAP_SYS_ADMIN", bool(pv.get("cap_sys_admin")), str(pv.get("cap_sys_admin")),
                       None if pv.get("cap_sys_admin") else "sandbox and chroot (mount namespaces)"))
    out.append(Finding("privileges", "CAP_SYS_RESOURCE", bool(pv.get("cap_sys_resource")),
                       f"nofile hard limit {pv.get('nofile_hard_limit')}",
                       None if pv.get("cap_sys_resource") else
                       "raising rlimits above the hard limit (podman's default ulimits: use services.sh's containers.conf)"))
    for tool in ("unshare", "chroot"):
        path = f.get("tools", {}).get(tool)
        out.append(Finding("tools", tool, path is not None, path or "not found",
                           None if path else ("the sandbox environment" if tool == "unshare" else "the chroot environment")))
    for tool, c in f.get("containers", {}).items():
        if not c.get("installed"):
            out.append(Finding("containers", tool, False, "not installed", f"the {tool} environment (scripts/services.sh installs it)"))
            continue
        answers = c.get("daemon_answers") if tool == "docker" else c.get("answers")
        ver = c.get("server_version") or c.get("client_version")
        extra = f", runtime {c.get('runtime')}" if c.get("runtime") else ""
        detail = f"{ver}{extra}" if answers else f"does not answer: {' '.join(c.get('error') or [])}"
        out.append(Finding("containers", tool, bool(answers), detail,
                           None if answers else f"the {tool} environment (start it: eval \"$(scripts/services.sh start)\")"))
    g = f.get("gpus", {})
    if g.get("available"):
        for d in g.get("devices", []):
            um = d.get("unified_memory")
            out.append(Finding("gpu", f"GPU {d.get('index')}", True,
                               f"{d.get('name')}; unified memory: {'yes' if um else 'no' if um is False else 'unknown'}"))
    else:
        out.append(Finding("gpu", "NVIDIA driver", False, str(g.get("reason")),
                           "GPU memory readings and --gpus; engines run on the CPU (llama.cpp) only"))
    for name, e in f.get("engines", {}).items():
        ok = bool(e.get("installed"))
        detail = e.get("version") or e.get("path") or e.get("module") or "" if ok else e.get("reason") or "not installed"
        disables = None if ok else ("runs of the embedded default (scripts/setup.sh installs it)"
                                    if name in ("llama-server", "embedded_model") else f"the {name} engine")
        out.append(Finding("engines", name, ok, str(detail), disables))
    from memgap.diagnose.machine import doctor_findings

    mem = f.get("memory") or {}
    out.extend(Finding(*x) for x in doctor_findings(mem, mem.get("engine_shm_needs")))
    for name, e in f.get("environments", {}).items():
        out.append(Finding("environments", name, bool(e.get("available")), "available" if e.get("available")
                           else str(e.get("reason")), None if e.get("available") else f"--env {name}"))
    return out


# ------------------------------------------------------------------- command


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts and findings as JSON.")] = False,
) -> None:
    """What this machine offers memgap: cgroups, privileges, container engines, GPUs, engines."""
    facts = gather()
    found = findings(facts)
    if as_json:
        sys.stdout.write(json.dumps({"facts": facts, "findings": [asdict(x) for x in found]}, indent=2) + "\n")
        return
    table = Table(title="memgap doctor")
    for col in ("area", "item", "", "detail", "missing disables"):
        table.add_column(col)
    for x in found:
        table.add_row(x.area, x.item, "[green]ok[/green]" if x.ok else "[red]no[/red]", x.detail, x.disables or "")
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
