"""Before a run: what ``memgap probe`` and ``memgap doctor`` add from this package --
the processes and engines holding memory now, the kernel's reserve and what it takes
from each rule, and /dev/shm as the engine will find it in a container.

``machine_facts`` reads (``proc_root`` injected); ``probe_notes`` and
``doctor_findings`` are pure over what it read."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memgap import sizing
from memgap.collect.errors import CollectorParseError
from memgap.collect.meminfo import MemInfo, read_meminfo
from memgap.diagnose.base import gib, size
from memgap.diagnose.holders import (
    ENGINE_NAMES,
    Holder,
    group_holders,
    read_processes,
    running_engines,
)
from memgap.diagnose.reserve import (
    KernelReserve,
    read_kernel_reserve,
    reserve_diagnosis,
    reserve_effect,
)
from memgap.diagnose.shm import CONTAINER_DEFAULT_SHM_BYTES
from memgap.probe import ProbeResult

HOLDERS_LISTED = 5
HOLDER_FLOOR_BYTES = 128 << 20  # smaller holders are summed, not named


@dataclass(frozen=True)
class MachineFacts:
    holders: tuple[Holder, ...] = ()
    meminfo: MemInfo | None = None
    reserve: KernelReserve | None = None
    dev_shm_bytes: int | None = None
    dev_shm_free_bytes: int | None = None
    unreadable: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        e = reserve_effect(self.meminfo, self.reserve) if self.meminfo and self.reserve else None
        return {"holders": [h.to_dict() for h in self.holders[:HOLDERS_LISTED]],
                "engines_running": [h.to_dict() for h in running_engines(self.holders)],
                "kernel_reserve": None if e is None else {**e.to_dict(),
                                                          "min_free_kbytes": self.reserve.min_free_kbytes
                                                          if self.reserve else None},
                "dev_shm_bytes": self.dev_shm_bytes, "dev_shm_free_bytes": self.dev_shm_free_bytes,
                "container_default_shm_bytes": CONTAINER_DEFAULT_SHM_BYTES, "unreadable": list(self.unreadable)}


def machine_facts(proc_root: Path = Path("/proc"), dev_shm: Path = Path("/dev/shm")) -> MachineFacts:
    why: list[str] = []
    holders = tuple(group_holders(read_processes(proc_root), exclude=[os.getpid()]))
    mi = reserve = None
    try:
        mi = read_meminfo(proc_root)
        reserve = read_kernel_reserve(proc_root)
    except (OSError, CollectorParseError) as e:
        why.append(f"kernel reserve: {e}")
    shm = shm_free = None
    try:
        st = os.statvfs(dev_shm)
        shm, shm_free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    except OSError as e:
        why.append(f"{dev_shm}: {e.strerror or e}")
    return MachineFacts(holders, mi, reserve, shm, shm_free, tuple(why))


def _named(holders: Sequence[Holder]) -> str:
    big = [h for h in holders if h.held_bytes >= HOLDER_FLOOR_BYTES][:HOLDERS_LISTED]
    rest = [h for h in holders if h not in big]
    text = ", ".join(h.describe() for h in big)
    if rest:
        text += f"; {len(rest)} other processes {gib(sum(h.held_bytes for h in rest))} together"
    return text


# ------------------------------------------------------------------ probe


def reserve_rule_effects(mi: MemInfo, r: KernelReserve, weights_bytes: int, fractions: Sequence[float],
                         n_ctx: int | None, bytes_per_token: int | None) -> list[str]:
    """What the reserve takes from each rule that reads MemAvailable, on unified memory:
    the rule applied to MemAvailable as read and to MemAvailable plus the reserve."""
    e = reserve_effect(mi, r)
    if e is None or mi.total_bytes is None:
        return []
    costs = sizing.EngineCosts(weights_bytes=weights_bytes)
    now = sizing.MemoryReadings(mi.total_bytes, mi.free_bytes or 0, mi.available_bytes, unified=True)
    without = sizing.MemoryReadings(mi.total_bytes, mi.free_bytes or 0, (mi.available_bytes or 0) + e.taken_bytes,
                                    unified=True)
    out = []
    for f in dict.fromkeys((sizing.DEFAULT_FRACTIONS["vllm"], *fractions)):
        a, b = sizing.vllm(now, costs, fraction=f), sizing.vllm(without, costs, fraction=f)
        req = int(a.inputs["requested_bytes"])
        if a.kv_budget_bytes is None and b.kv_budget_bytes is not None:
            out.append(f"vllm at {f:g}: its start-up check fails only because of the reserve (MemAvailable "
                       f"{gib(mi.available_bytes)} < {gib(req)} requested; without the reserve it would read "
                       f"{gib((mi.available_bytes or 0) + e.taken_bytes)}).")
        else:
            room = (mi.available_bytes or 0) - req
            out.append(f"vllm at {f:g}: the reserve takes {gib(e.taken_bytes)} from its start-up check's margin "
                       f"(MemAvailable {gib(mi.available_bytes)} vs {gib(req)} requested: "
                       + ("refused either way)." if b.kv_budget_bytes is None else f"{gib(room)} to spare)."))
    if n_ctx and bytes_per_token:
        a = sizing.llamacpp(now, costs, n_ctx=n_ctx, bytes_per_token=bytes_per_token, fit=True)
        b = sizing.llamacpp(without, costs, n_ctx=n_ctx, bytes_per_token=bytes_per_token, fit=True)
        out.append(f"llamacpp-fit: {a.kv_tokens:,} tokens with the reserve, {b.kv_tokens:,} without.")
    out.append("trtllm-pytorch, trtllm-cpp, sglang and vllm-cpu: nothing (they read MemFree, or the node's free and "
               "file pages), and they count the reserve as free.")
    return out


def probe_notes(facts: MachineFacts, *, weights_bytes: int = 0, fractions: Sequence[float] = (),
                n_ctx: int | None = None, bytes_per_token: int | None = None,
                refusals: Sequence[str] = ()) -> list[str]:
    """Notes probe adds: the reserve per rule, what holds memory now, and for each
    predicted refusal, what it is up against."""
    out: list[str] = []
    if facts.meminfo is not None and facts.reserve is not None:
        effects = reserve_rule_effects(facts.meminfo, facts.reserve, weights_bytes, fractions, n_ctx, bytes_per_token)
        d = reserve_diagnosis(facts.meminfo, facts.reserve, effects)
        if d is not None:
            out.append(d.text())
    engines = running_engines(facts.holders)
    if engines:
        out.append(f"Engines running: {'; '.join(h.describe() for h in engines)}. An engine sized by a fraction of "
                   "the same memory starts beside them only if all fractions and every engine's own memory fit.")
    if facts.holders:
        out.append(f"Memory held now (RssAnon + RssShmem): {_named(facts.holders)}.")
    for r in refusals:
        out.append(f"Predicted refusal, {r}. Memory held now: {_named(facts.holders) or 'nothing worth naming'}.")
    for why in facts.unreadable:
        out.append(f"not read: {why}")
    return out


# ------------------------------------------------------------------ doctor


def doctor_findings(facts: Mapping[str, Any], shm_needs: Mapping[str, str | None] | None = None,
                    ) -> list[tuple[str, str, bool, str, str | None]]:
    """(area, item, ok, detail, what it disables) for doctor, from ``MachineFacts.to_dict``;
    ``shm_needs``: engine -> the /dev/shm it declares (memgap.engines.registry)."""
    out: list[tuple[str, str, bool, str, str | None]] = []
    if not facts:
        return out
    engines = facts.get("engines_running") or []
    if engines:
        names = "; ".join(_holder_text(h) for h in engines)
        out.append(("memory", "engines running", False, f"{names} already running: a second engine sized by a "
                    "fraction of the same memory (vLLM's gpu_memory_utilization, SGLang's mem_fraction_static) "
                    "will be refused or get a small KV cache",
                    "an engine at its default memory fraction beside it (lower the fraction, or stop it)"))
    else:
        out.append(("memory", "engines running", True, "none", None))
    held = [h for h in facts.get("holders") or [] if not h.get("engine")]
    if held:
        out.append(("memory", "largest holders", True, ", ".join(_holder_text(h) for h in held[:3]), None))
    kr = facts.get("kernel_reserve")
    if kr:
        out.append(("memory", "kernel reserve", True,
                    f"vm.min_free_kbytes {size((kr.get('min_free_kbytes') or 0) * 1024)}: MemAvailable is "
                    f"{gib(kr['taken_bytes'])} below what MemFree + reclaimable memory would give (rules reading "
                    "MemAvailable lose it; `memgap probe` shows it per rule)", None))
    shm, default = facts.get("dev_shm_bytes"), facts.get("container_default_shm_bytes")
    needs = ", ".join(f"{e} {n}" for e, n in (shm_needs or {}).items() if n)
    out.append(("memory", "/dev/shm", shm is not None,
                f"here {size(shm)} ({size(facts.get('dev_shm_free_bytes'))} free); in a docker or podman container "
                f"{size(default)} unless --shm-size or --ipc=host" + (f"; engines declare {needs} (memgap gives it "
                                                                      "when the run chooses no IPC set-up)"
                                                                      if needs else ""),
                None if shm is not None else "reading the engine's shared memory"))
    return out


def _holder_text(h: Mapping[str, Any]) -> str:
    if h.get("engine"):
        extra = [f"pid {h['pid']}"] + ([f"port {h['port']}"] if h.get("port") else [])
        return f"{ENGINE_NAMES.get(h['engine'], h['engine'])} ({', '.join(extra)}) {gib(h.get('held_bytes'))}"
    return f"{h.get('name')} (pid {h.get('pid')}) {gib(h.get('held_bytes'))}"


def add_probe_notes(result: ProbeResult, proc_root: Path = Path("/proc")) -> ProbeResult:
    """``memgap probe``'s result with this package's notes added (the CLI's one call)."""
    facts = machine_facts(proc_root)
    refusals = [(f"{b.rule} at utilization {b.fraction:g}" if b.fraction is not None else b.rule) + f": {b.note}"
                for s in result.scenarios for b in s.budgets
                if s.name == "vllm-cpu" and (b.note or "").startswith("would refuse")]
    a = result.assumptions
    notes = probe_notes(facts, weights_bytes=a.weights_bytes, fractions=a.fractions, n_ctx=a.n_ctx,
                        bytes_per_token=a.bytes_per_token, refusals=refusals)
    return replace(result, notes=(*result.notes, *notes))
