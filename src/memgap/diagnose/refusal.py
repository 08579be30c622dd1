"""Cases 1 and 2: the engine refused to start because the memory it wanted was not
there, and other processes -- or another engine -- held it.

The figures the engine compared come from its own refusal (memgap.engines.logs):
vLLM on a GPU, ``Free memory on device ({free}/{total} GiB) on startup is less than
desired GPU memory utilization ({util}, {requested} GiB)`` (vllm/v1/worker/utils.py
``request_memory``, 0.32.0; gpu_worker.py in 0.11.0); vLLM on a CPU, ``Available memory
on node {n} ({avail}/{total} GiB) on startup is less than desired CPU memory utilization
({util}, {requested} GiB)`` or ``... on kv cache allocation is less than requested
memory for kv ({kv} GiB)`` (vllm/v1/worker/cpu_worker.py). What held the memory comes
from the processes still running that had started before the engine: their RssAnon +
RssShmem (page cache is left out: vLLM's CPU figure counts file pages as available),
or NVML's per-process figures on a GPU. Each sizes itself by a fraction of the same
total, so a second engine with the default fraction cannot fit beside the first."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from memgap.diagnose.base import HELD_BY_ENGINE, HELD_BY_PROCESSES, Diagnosis, gib
from memgap.diagnose.holders import ENGINE_NAMES, Holder
from memgap.diagnose.maxlen import is_kv_refusal

MAX_NAMED = 4
NAMED_FLOOR_BYTES = 128 << 20  # smaller holders are counted together, not named


def _get(report: Mapping[str, Any], key: str) -> Any:
    v = report.get(key)
    return v if v is not None else (report.get("extra") or {}).get(key)


def _compared(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the engine compared: where, what it had, what it wanted, and why it wanted
    that. None when the report holds no refusal of a kind read here."""
    refusal = report.get("refusal")
    if not refusal or is_kv_refusal(refusal):  # the cache's own size, not memory others held (maxlen)
        return None
    total, util = _get(report, "device_total_bytes"), _get(report, "kv_fraction")
    if refusal.startswith("Free memory on device"):
        where = refusal[len("Free memory on device "):].split(" (")[0].strip() or "the GPU"
        had, wanted = _get(report, "initial_free_bytes"), _get(report, "requested_bytes")
        return {"device": "gpu", "where": where if where.startswith(("cuda", "xpu", "rocm")) else "the GPU",
                "had": had, "had_word": "free", "total": total, "wanted": wanted, "util": util,
                "what": "to start", "wanted_what": "it wanted"}
    if refusal.startswith("Available memory on node"):
        node = _get(report, "numa_node")
        had = _get(report, "node_available_bytes")
        kv = _get(report, "requested_kv_bytes")
        at_kv = "kv cache allocation" in refusal
        return {"device": "cpu", "where": f"node {node}" if node is not None else "the NUMA node",
                "had": had, "had_word": "available", "total": total,
                "wanted": kv if at_kv else _get(report, "requested_bytes"), "util": None if at_kv else util,
                "what": "to allocate its KV cache" if at_kv else "to start",
                "wanted_what": "of KV cache it asked for" if at_kv else "it wanted"}
    return {"device": None, "where": None, "had": None, "had_word": "", "total": None, "wanted": None,
            "util": None, "what": "to start", "wanted_what": ""}


def _listing(holders: Sequence[Holder], *, gpu: bool) -> tuple[str, int]:
    amount = [(h.gpu_bytes if gpu else h.held_bytes) or 0 for h in holders]
    total = sum(amount)
    named = [h for h, a in zip(holders, amount, strict=True) if a >= NAMED_FLOOR_BYTES][:MAX_NAMED]
    rest = [a for h, a in zip(holders, amount, strict=True) if a > 0 and h not in named]
    text = ", ".join(h.describe(gpu=gpu) for h in named)
    if rest:
        text += f" and {len(rest)} smaller ({gib(sum(rest))} together)"
    return text, total


def refusal_cause(report: Mapping[str, Any], holders: Sequence[Holder], *, engine: str = "vllm",
                  gpu_holders: Sequence[Holder] = ()) -> Diagnosis | None:
    """The cause of a refused start, naming what held the memory; None when the engine
    did not refuse for want of memory. ``holders``: host processes running before the
    engine was refused (largest first); ``gpu_holders``: NVML's per-process view (on a GPU)."""
    c = _compared(report)
    if c is None:
        return None
    name = ENGINE_NAMES.get(engine, engine)
    had, total, wanted, util = c["had"], c["total"], c["wanted"], c["util"]
    numbers: dict[str, Any] = {"where": c["where"], "had_bytes": had, "total_bytes": total, "wanted_bytes": wanted,
                               "utilization": util}
    if had is not None and wanted is not None and total is not None:
        why = f" (gpu_memory_utilization {util:g} x {gib(total)})" if util is not None else ""
        short = wanted - had
        numbers["short_bytes"] = short
        head = (f"{name} refused {c['what']}: {c['where']} had {gib(had)} {c['had_word']} of {gib(total)}, less than "
                f"the {gib(wanted)} {c['wanted_what']}{why}, {gib(short)} short.")
    else:
        head = f"{name} refused {c['what']}: {report.get('refusal')}"
    gpu = c["device"] == "gpu" and any(h.gpu_bytes for h in gpu_holders)
    listed = gpu_holders if gpu else holders
    text, held = _listing(listed, gpu=gpu)
    numbers["held_bytes"] = held
    numbers["holders"] = [h.to_dict() for h in listed[:MAX_NAMED]]
    engines = [h for h in listed[:MAX_NAMED]
               if h.engine is not None and ((h.gpu_bytes if gpu else h.held_bytes) or 0) >= NAMED_FLOOR_BYTES]
    if not text:
        tail = " No other process held memory worth naming when memgap looked."
    elif gpu:
        tail = f" By NVML's per-process figures, other processes held {gib(held)} of the GPU: {text}."
    else:
        tail = f" Other processes running when it was refused held {gib(held)} (RssAnon + RssShmem): {text}."
    sentence = head + tail
    # The largest holder decides which case this is; any engine among the named ones is
    # still called out (a shared machine often runs small ones beside the culprit).
    mechanism = HELD_BY_ENGINE if engines and listed and listed[0].engine is not None else HELD_BY_PROCESSES
    if engines:
        sentence += (f" {engines[0].label()[0].upper()}{engines[0].label()[1:]} was running: each engine sizes "
                     "itself by a fraction of the same total, so two engines' fractions and their own memory must "
                     "fit in it together.")
    numbers["engines"] = [h.to_dict() for h in engines]
    return Diagnosis(1 if mechanism == HELD_BY_PROCESSES else 2, mechanism, sentence, numbers,
                     _remedy(had, total, c, bool(engines), wanted))


def _remedy(had: int | None, total: int | None, c: Mapping[str, Any], engines: bool, wanted: int | None) -> str:
    stop = "Stop the other engine" if engines else "Stop or shrink those processes"
    if c["util"] is not None and had is not None and total:
        fits = math.floor(had / total * 100) / 100
        return (f"{stop}, or start with --gpu-memory-utilization at most {fits:g} (what was {c['had_word']}), "
                "or give an explicit --kv-cache-memory.")
    if wanted is not None and had is not None:
        return f"{stop}, or ask for a KV cache below {gib(had)} (--kv-cache-memory)."
    return f"{stop}."
