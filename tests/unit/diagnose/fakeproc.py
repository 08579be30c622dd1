"""Fake /proc entries for the diagnose tests, made from the real kernel output kept in
tests/fixtures/proc/v1host (a ``sleep``'s ``stat`` and ``status``): only the identity,
the command line and the memory lines are rewritten. Also loads the pynvml double."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
LOGS = FIXTURES / "logs"
BOOT_TIME_S = 1_764_650_000  # btime of the fake /proc/stat
TICKS = 100


def add_process(proc: Path, pid: int, ppid: int, name: str, argv: list[str], *, anon_kb: int,
                shmem_kb: int = 0, start_ticks: int = 313270) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    fields = (FIXTURES / "proc/v1host/stat").read_text().split(") ", 1)[1].split()
    fields[1] = str(ppid)  # field 4
    fields[19] = str(start_ticks)  # field 22
    (d / "stat").write_text(f"{pid} ({name[:15]}) " + " ".join(fields) + "\n")
    status = (FIXTURES / "proc/v1host/status").read_text()
    for key, value in (("Name", name[:15]), ("Pid", str(pid)), ("Tgid", str(pid)), ("PPid", str(ppid)),
                       ("RssAnon", f"{anon_kb:>8} kB"), ("RssShmem", f"{shmem_kb:>8} kB"),
                       ("VmRSS", f"{anon_kb + shmem_kb + 1556:>8} kB")):
        status = re.sub(rf"^{key}:\t.*$", f"{key}:\t{value}", status, flags=re.M)
    (d / "status").write_text(status)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def write_boot_time(proc: Path) -> None:
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "stat").write_text(f"cpu  1 2 3 4\nbtime {BOOT_TIME_S}\nprocesses 100\n")


def start_s(start_ticks: int) -> float:
    return BOOT_TIME_S + start_ticks / TICKS


def pynvml_double() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "collect" / "pynvml_double.py"
    spec = importlib.util.spec_from_file_location("pynvml_double_for_diagnose", path)
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


GIB_KB = 1 << 20
VLLM = ["/opt/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-7B-Instruct",
        "--port", "8000"]


def vllm_tree(proc: Path, root: int, ppid: int, *, api_kb: int, core_kb: int, worker_kb: int,
              start_ticks: int = 313270) -> None:
    """vLLM's three processes as its titles name them (setproctitle: VLLM::EngineCore,
    VLLM::Worker_TP0)."""
    add_process(proc, root, ppid, "python", VLLM, anon_kb=api_kb, start_ticks=start_ticks)
    add_process(proc, root + 1, root, "VLLM::EngineCor", ["VLLM::EngineCore"], anon_kb=core_kb,
                start_ticks=start_ticks + 900)
    add_process(proc, root + 2, root + 1, "VLLM::Worker_TP", ["VLLM::Worker_TP0"], anon_kb=worker_kb,
                shmem_kb=160 * 1024, start_ticks=start_ticks + 1500)
