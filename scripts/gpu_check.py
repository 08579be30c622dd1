#!/usr/bin/env python3
"""The GPU control case: on a discrete NVIDIA GPU, memory the GPU holds is not charged
to the holder's memory cgroup, so a container's limit cannot have taken it -- the case
the seed study argued but never measured.

Three phases, each with memgap's own collectors and CLI:

1. ``memgap probe --json`` natively and inside the sandbox environment, the GPU idle.
2. The same two probes while a native process holds ``--hold-gib`` of GPU memory: the
   GPU's free memory (NVML, torch.cuda.mem_get_info) falls by about that much, host
   memory and the cgroup do not move.
3. A process inside the sandbox (own memory cgroup) grows its GPU memory step by step;
   at each step the cgroup's charge is read from outside, with NVML's figure for the
   cgroup's processes. Then it allocates ``--host-gib`` of ordinary host memory: the
   positive control, which the cgroup must see.

Pass (exit 0): phase 3's charge grew by less than ``--flat-mib`` while the GPU memory of
the cgroup's processes grew by at least 90% of what was allocated, and the host control
grew the charge by at least 90% of ``--host-gib``. Exit 1 when it did not, 2 when it
could not run (no NVIDIA GPU, no torch, no sandbox). Everything measured goes to
``--out`` as JSON and a summary to stdout.

Usage (as root, on the GPU machine, from the repository root):
    PYTHONPATH=src python3 scripts/gpu_check.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from memgap.envs.base import wait_until  # noqa: E402 - after the path it is found on

GIB = 1 << 30
MIB = 1 << 20
WAIT_S = 120.0


# ------------------------------------------------------------------ the holder process

def holder(args: argparse.Namespace) -> int:
    """Allocate GPU memory in steps (each target is the total held), then host memory;
    after each step write ``step-N.json`` into --sync and wait for ``go-N``."""
    import torch

    sync = Path(args.sync)
    held: list[Any] = []

    def step(i: int, name: str, gpu_bytes: int, host_bytes: int) -> None:
        torch.cuda.synchronize()
        (sync / f"step-{i}.json.tmp").write_text(json.dumps(
            {"name": name, "pid": os.getpid(), "gpu_allocated_bytes": gpu_bytes,
             "host_allocated_bytes": host_bytes,
             "torch_mem_get_info": list(torch.cuda.mem_get_info())}))
        os.replace(sync / f"step-{i}.json.tmp", sync / f"step-{i}.json")
        if not wait_until((sync / f"go-{i}").exists, WAIT_S, 0.02):
            raise SystemExit(f"holder: no go-{i} within {WAIT_S:.0f} s")

    torch.cuda.init()
    held.append(torch.zeros(1, device="cuda"))  # the CUDA context, and nothing more
    i = 0
    step(i, "cuda-context", 0, 0)
    total = 0
    for target in (int(float(x) * GIB) for x in args.steps_gib.split(",")):
        t = torch.empty(target - total, dtype=torch.uint8, device="cuda")
        t.fill_(1)  # touched: backed by device memory, not just reserved
        held.append(t)
        total = target
        i += 1
        step(i, f"gpu-{target / GIB:g}GiB", total, 0)
    if args.host_gib:
        h = torch.ones(int(args.host_gib * GIB), dtype=torch.uint8)  # ordinary, touched host memory
        held.append(h)
        i += 1
        step(i, f"host-{args.host_gib:g}GiB", total, int(args.host_gib * GIB))
    (sync / "done").write_text("")
    return 0


# ------------------------------------------------------------------ the driver

def _probe_argv(weights: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "memgap", "probe", "--json", "--weights-bytes", weights)


def _pyenv() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}


def _json_of(text: str) -> dict[str, Any]:
    return json.loads(text[text.index("{"):])


def _probe_summary(out: dict[str, Any]) -> dict[str, Any]:
    m = out["measured"]
    gpus = [{k: g.get(k) for k in ("index", "name", "total_bytes", "used_bytes", "free_bytes", "unified_memory")}
            for g in m["gpus"]]
    scen = {s["name"]: {"free_bytes": s["readings"]["free_bytes"],
                        "budgets": {b["rule"]: b["kv_budget_bytes"] for b in s["budgets"]}}
            for s in out["scenarios"]}
    return {"meminfo_free_bytes": m["meminfo"]["free_bytes"],
            "meminfo_available_bytes": m["meminfo"]["available_bytes"],
            "cgroup_path": (m["cgroup"] or {}).get("path"),
            "cgroup_usage_bytes": (m["cgroup"] or {}).get("usage_bytes"),
            "gpus": gpus, "torch_mem_get_info": m["torch_mem_get_info"], "scenarios": scen}


def probe_native(weights: str) -> dict[str, Any]:
    r = subprocess.run(_probe_argv(weights), capture_output=True, text=True, timeout=300,  # noqa: S603
                       env={**os.environ, **_pyenv()}, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"native probe exited {r.returncode}: {r.stderr[-1000:]}")
    return _probe_summary(_json_of(r.stdout))


def probe_sandbox(weights: str, work: Path, tag: str) -> dict[str, Any]:
    from memgap.engines.base import EngineCommand
    from memgap.envs.base import LaunchSpec, wait_until
    from memgap.envs.sandbox import SandboxEnvironment

    log = work / f"probe-{tag}.log"
    with SandboxEnvironment().launch(LaunchSpec(command=EngineCommand(argv=_probe_argv(weights), env=_pyenv()),
                                                log_path=log, run_id=f"gpuprobe{tag}")) as running:
        if not wait_until(lambda: running.poll() is not None, 300):
            raise RuntimeError("sandbox probe did not finish in 300 s")
        rc = running.poll()
        cgroup = str(running.cgroup.path) if running.cgroup else None
    if rc != 0:
        raise RuntimeError(f"sandbox probe exited {rc}: {log.read_text()[-1000:]}")
    out = _probe_summary(_json_of(log.read_text()))
    out["sandbox_cgroup"] = cgroup
    return out


def _gpu_reading(pids: set[int]) -> dict[str, Any]:
    from memgap.collect.nvml import NvmlUnavailable, read_gpus

    found = read_gpus()
    if isinstance(found, NvmlUnavailable) or not found:
        return {"error": getattr(found, "reason", "no GPU")}
    g = found[0]
    mine = [v for p, v in g.process_used_bytes.items() if p in pids]
    return {"device_used_bytes": g.used_bytes, "device_free_bytes": g.free_bytes,
            "processes": {str(p): v for p, v in g.process_used_bytes.items()},
            "cgroup_processes_used_bytes": sum(v for v in mine if v is not None) if mine else None}


def _read_step(sync: Path, i: int, running: Callable[[], bool], log: Path) -> dict[str, Any]:
    """The holder's report of step i, once written (raises if it stopped or timed out)."""
    path = sync / f"step-{i}.json"
    wait_until(lambda: path.exists() or not running(), WAIT_S, 0.02)
    if not path.exists():
        raise RuntimeError(f"holder stopped before step {i}: {log.read_text(errors='replace')[-1500:]}")
    return json.loads(path.read_text())


def sandbox_steps(steps_gib: str, host_gib: float, work: Path) -> list[dict[str, Any]]:
    from memgap.collect.cgroup import cgroup_pids, read_cgroup_memory
    from memgap.collect.meminfo import read_meminfo
    from memgap.engines.base import EngineCommand
    from memgap.envs.base import LaunchSpec
    from memgap.envs.sandbox import SandboxEnvironment

    sync = work / "sync-sandbox"
    sync.mkdir()
    argv = (sys.executable, str(Path(__file__).resolve()), "holder", "--sync", str(sync),
            "--steps-gib", steps_gib, "--host-gib", str(host_gib))
    rows: list[dict[str, Any]] = []
    log = work / "holder-sandbox.log"
    with SandboxEnvironment().launch(LaunchSpec(command=EngineCommand(argv=argv, env=_pyenv()),
                                                log_path=log, run_id="gpuhold")) as running:
        assert running.cgroup is not None
        n_steps = 1 + len(steps_gib.split(",")) + (1 if host_gib else 0)
        for i in range(n_steps):
            step = _read_step(sync, i, lambda: running.poll() is None, log)
            time.sleep(0.5)  # let the driver's bookkeeping settle
            cg = read_cgroup_memory(running.cgroup)
            pids = set(cgroup_pids(running.cgroup))
            rows.append({**step, "cgroup_path": str(running.cgroup.path), "cgroup_version": cg.version,
                         "cgroup_usage_bytes": cg.usage_bytes, "cgroup_peak_bytes": cg.peak_bytes,
                         "cgroup_anon_bytes": cg.anon_bytes, "cgroup_file_bytes": cg.file_bytes,
                         "cgroup_kernel_bytes": cg.kernel_bytes, "cgroup_pids": sorted(pids),
                         "meminfo_free_bytes": read_meminfo().free_bytes, **_gpu_reading(pids)})
            (sync / f"go-{i}").write_text("")
        wait_until(lambda: running.poll() is not None, WAIT_S)
    return rows


class NativeHolder:
    """The holder as a plain child process, stopped at its last GPU step."""

    def __init__(self, hold_gib: float, work: Path) -> None:
        self.sync = work / "sync-native"
        self.sync.mkdir()
        self.log_path = work / "holder-native.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, str(Path(__file__).resolve()), "holder", "--sync", str(self.sync),
             "--steps-gib", f"{hold_gib:g}", "--host-gib", "0"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **_pyenv()})
        self.step = 0

    def advance_to(self, i: int) -> dict[str, Any]:
        while self.step < i:
            (self.sync / f"go-{self.step}").write_text("")
            self.step += 1
        return _read_step(self.sync, i, lambda: self.proc.poll() is None, self.log_path)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def _diff(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else b - a


def verdict(result: dict[str, Any], steps_gib: str, host_gib: float, flat_mib: float) -> dict[str, Any]:
    rows = result.get("sandbox_steps") or []
    gpu_rows = [r for r in rows if r["host_allocated_bytes"] == 0]
    if len(gpu_rows) < 2:
        return {"pass": False, "why": "phase 3 did not produce its steps"}
    first, last = gpu_rows[0], gpu_rows[-1]
    allocated = last["gpu_allocated_bytes"]
    charge = _diff(first["cgroup_usage_bytes"], last["cgroup_usage_bytes"])
    gpu = _diff(first.get("cgroup_processes_used_bytes"), last.get("cgroup_processes_used_bytes"))
    if gpu is None:  # NVML gave no per-process figure here: the device-wide one
        gpu = _diff(first.get("device_used_bytes"), last.get("device_used_bytes"))
    out: dict[str, Any] = {"gpu_allocated_bytes": allocated, "gpu_growth_bytes": gpu,
                           "cgroup_charge_growth_bytes": charge}
    ok = charge is not None and gpu is not None and abs(charge) < flat_mib * MIB and gpu >= 0.9 * allocated
    host_rows = [r for r in rows if r["host_allocated_bytes"] > 0]
    if host_gib:
        hc = _diff(last["cgroup_usage_bytes"], host_rows[-1]["cgroup_usage_bytes"]) if host_rows else None
        out["host_control_charge_growth_bytes"] = hc
        ok = ok and hc is not None and hc >= 0.9 * host_gib * GIB
    out["pass"] = ok
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    h = sub.add_parser("holder")
    h.add_argument("--sync", required=True)
    h.add_argument("--steps-gib", required=True)
    h.add_argument("--host-gib", type=float, default=0)
    ap.add_argument("--steps-gib", default="2,4,8,16", help="GPU memory held at each step of phase 3 (totals)")
    ap.add_argument("--hold-gib", type=float, default=8, help="GPU memory held during phase 2")
    ap.add_argument("--host-gib", type=float, default=1, help="host memory of phase 3's positive control")
    ap.add_argument("--weights", default="15.2GiB", help="model size the probes assume")
    ap.add_argument("--flat-mib", type=float, default=64, help="largest charge growth still called flat")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args(argv)
    if args.cmd == "holder":
        return holder(args)

    import importlib.util

    from memgap.collect.nvml import NvmlUnavailable, read_gpus
    from memgap.envs.sandbox import SandboxEnvironment

    gpus = read_gpus()
    if isinstance(gpus, NvmlUnavailable) or not gpus:
        print(f"gpu_check: no NVIDIA GPU here ({getattr(gpus, 'reason', 'NVML found none')})", file=sys.stderr)
        return 2
    if importlib.util.find_spec("torch") is None:
        print("gpu_check: torch is not installed (the holder allocates through it)", file=sys.stderr)
        return 2
    SandboxEnvironment().check()
    result: dict[str, Any] = {
        "machine": {"uname": list(os.uname()), "gpu": gpus[0].name, "gpu_total_bytes": gpus[0].total_bytes,
                    "unified_memory": gpus[0].unified_memory,
                    "self_cgroup": Path("/proc/self/cgroup").read_text(),
                    "sandbox": SandboxEnvironment().describe()},
    }
    with tempfile.TemporaryDirectory(prefix="memgap-gpucheck-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        result["idle"] = {"native": probe_native(args.weights), "sandbox": probe_sandbox(args.weights, work, "idle")}
        print(f"phase 1 (idle probes) {time.monotonic() - t0:.0f} s", flush=True)
        nh = NativeHolder(args.hold_gib, work)
        try:
            result["holding_step"] = nh.advance_to(1)
            result["holding"] = {"held_gib": args.hold_gib, "native": probe_native(args.weights),
                                 "sandbox": probe_sandbox(args.weights, work, "hold")}
        finally:
            nh.close()
        print(f"phase 2 (probes while {args.hold_gib:g} GiB held) {time.monotonic() - t0:.0f} s", flush=True)
        result["sandbox_steps"] = sandbox_steps(args.steps_gib, args.host_gib, work)
        print(f"phase 3 (sandbox steps) {time.monotonic() - t0:.0f} s", flush=True)
    result["verdict"] = verdict(result, args.steps_gib, args.host_gib, args.flat_mib)
    args.out.write_text(json.dumps(result, indent=2))
    print_summary(result)
    return 0 if result["verdict"]["pass"] else 1


def _g(v: int | None) -> str:
    return "None" if v is None else f"{v / GIB:8.3f} GiB"


def print_summary(r: dict[str, Any]) -> None:
    print(f"GPU: {r['machine']['gpu']}, {_g(r['machine']['gpu_total_bytes'])}, unified={r['machine']['unified_memory']}")
    for phase in ("idle", "holding"):
        for where in ("native", "sandbox"):
            p = r[phase][where]
            g = p["gpus"][0] if p["gpus"] else {}
            tm = p["torch_mem_get_info"][0] if p["torch_mem_get_info"] else {}
            print(f"{phase:8} {where:8} NVML free {_g(g.get('free_bytes'))}  torch free {_g(tm.get('free_bytes'))}  "
                  f"MemFree {_g(p['meminfo_free_bytes'])}  cgroup {_g(p['cgroup_usage_bytes'])} ({p['cgroup_path']})")
            for name, s in p["scenarios"].items():
                print(f"{'':17} {name:28} " + "  ".join(f"{k}={_g(v)}" for k, v in s["budgets"].items()))
    print("phase 3: sandbox holder, cgroup charge vs GPU memory")
    for row in r["sandbox_steps"]:
        print(f"  {row['name']:14} cgroup {_g(row['cgroup_usage_bytes'])} (anon {_g(row['cgroup_anon_bytes'])}, "
              f"file {_g(row['cgroup_file_bytes'])})  GPU of cgroup's processes "
              f"{_g(row.get('cgroup_processes_used_bytes'))}  device used {_g(row.get('device_used_bytes'))}")
    print("verdict:", json.dumps(r["verdict"]))


if __name__ == "__main__":
    sys.exit(main())
