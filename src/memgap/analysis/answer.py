"""The answer, first (pure): what a comparison found, as one short paragraph in plain words
and the structured fields it was written from.

The paragraph says how the KV cache differs (or that it does not), whether the engine's
sizing rule explains that from the memory it read, which ledger categories carry the
difference in used memory (``MemTotal - MemFree``) with their shares of it, and how much
the engine's own memory differs. It is built from an explain result (sides, rows and
hypotheses) so that ``memgap explain``, ``memgap run`` and the reports print the same words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from memgap.analysis.rulefit import MEMAVAILABLE, MEMFREE, engine_name, kv_link
from memgap.analysis.sides import (
    GIB,
    MATERIAL_FLOOR_BYTES,
    MATERIAL_FRACTION,
    MIB,
    SUPPORTED,
    Hypothesis,
    Row,
    Side,
    at,
    delta,
    engines,
    material,
    median,
    row,
    scale,
)

# The engine's own memory: its anon memory and buffers, kernel memory charged to it, and
# on unified memory its GPU allocations (which hold the buffers of GPU engines).
ENGINE_OWN = ("model_weights_anon", "kv_cache", "compute_buffers", "engine_anon_other", "kernel",
              "gpu_outside_cgroup")
SUBJECTS = {"page_cache": "page cache", "shmem": "shmem", "other_processes": "memory outside the run",
            "gpu_outside_cgroup": "the engine's GPU memory besides its KV cache",
            "memory_limit": "memory limit", "page_cache_as_non_torch": "page cache booked as non-torch memory"}
MAX_NAMED = 3  # carriers the paragraph names; all are in the fields


@dataclass(frozen=True)
class Carrier:
    """A ledger category whose change carries part of the difference in used memory."""

    category: str
    title: str
    delta_bytes: int
    share: float | None  # of the change in used memory; None when that did not change materially

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "title": self.title, "delta_bytes": self.delta_bytes, "share": self.share}


@dataclass(frozen=True)
class Answer:
    text: str
    kv_before_bytes: int | None  # side A's KV cache (median)
    kv_after_bytes: int | None
    kv_delta_bytes: int | None
    kv_differs: bool | None
    rule: str | None  # the engine whose sizing rule was weighed; None: the sides ran different engines
    rule_verdict: str
    rule_explains_kv: bool | None
    rule_input: str | None  # what the rule read
    rule_input_delta_bytes: int | None  # B - A of that reading (negative: B read less)
    used_before_bytes: int | None  # MemTotal - MemFree at engine ready
    used_after_bytes: int | None
    used_delta_bytes: int | None
    carriers: tuple[Carrier, ...]
    engine_own_delta_bytes: int | None
    explained_by: tuple[tuple[str, int], ...]  # (hypothesis, the KV delta the rule implies from it)
    # What a capacity search both sides belong to measured: the KV difference in users at
    # an SLO (analysis.capacity_outcome.capacity_citation); the text ends with it.
    capacity: str | None = None

    def citing(self, capacity: str | None) -> Answer:
        """This answer with the capacity sentence at its end (itself when there is none)."""
        if not capacity:
            return self
        return replace(self, text=f"{self.text} {capacity}", capacity=capacity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kv_before_bytes": self.kv_before_bytes, "kv_after_bytes": self.kv_after_bytes,
            "kv_delta_bytes": self.kv_delta_bytes, "kv_differs": self.kv_differs,
            "rule": self.rule, "rule_verdict": self.rule_verdict, "rule_explains_kv": self.rule_explains_kv,
            "rule_input": self.rule_input, "rule_input_delta_bytes": self.rule_input_delta_bytes,
            "used_before_bytes": self.used_before_bytes, "used_after_bytes": self.used_after_bytes,
            "used_delta_bytes": self.used_delta_bytes,
            "carriers": [c.to_dict() for c in self.carriers],
            "engine_own_delta_bytes": self.engine_own_delta_bytes,
            "explained_by": [{"hypothesis": h, "kv_implied_delta_bytes": n} for h, n in self.explained_by],
            "capacity": self.capacity,
        }


# -- words -----------------------------------------------------------------------------------

_UNITS = (("TiB", 1024**4), ("GiB", GIB), ("MiB", MIB), ("KiB", 1024))


def _unit(n: float) -> tuple[str, int]:
    return next(((u, f) for u, f in _UNITS if abs(n) >= f), ("B", 1))


def _num(n: float, f: int) -> str:
    return f"{abs(n) / f:.0f}" if f == 1 else f"{abs(n) / f:.1f}"


def size(n: int) -> str:
    """``4.0 GiB``; a negative size gets a minus sign (U+2212)."""
    unit, f = _unit(n)
    return ("\u2212" if n < 0 else "") + f"{_num(n, f)} {unit}"


def signed(n: int) -> str:
    return ("+" if n > 0 else "") + size(n)


def pair(a: int, b: int, *, change: bool = True) -> str:
    """``37.3 → 13.3 GiB (−24.0)``: both in the unit of the larger, then the change."""
    unit, f = _unit(max(abs(a), abs(b)))
    d = b - a
    sign = "+" if d > 0 else "\u2212" if d < 0 else "\u00b1"
    text = f"{'-' if a < 0 else ''}{_num(a, f)} \u2192 {'-' if b < 0 else ''}{_num(b, f)} {unit}"
    return text + (f" ({sign}{_num(d, f)})" if change else "")


# -- the answer --------------------------------------------------------------------------------


def build_answer(a: Side, b: Side, rows: Sequence[Row], hyps: Sequence[Hypothesis]) -> Answer:
    kv = row(rows, "engine.kv_cache_bytes")
    rule = next(h for h in hyps if h.name == "kv_sizing_rule")
    link = kv_link(a, b, rows, rule)
    names = engines(a, b)
    engine = next(iter(names)) if len(names) == 1 else None
    used = row(rows, "total")
    d_used = used.delta_bytes
    carriers = _carriers(rows, d_used, scale(rows))
    own = _engine_own(rows)
    rule_input, d_input, when = _rule_input(a, b, engine, link.reading)
    if rule.numbers.get("rule_input"):  # a rule whose input is not a free-memory reading (vLLM on a CPU)
        rule_input, d_input, when = rule.numbers["rule_input"], rule.numbers.get("rule_input_delta_bytes"), ""
    explained = tuple((h.name, int(h.numbers["kv_implied_delta_bytes"])) for h in hyps
                      if h.name != rule.name and h.explains_kv and h.numbers.get("kv_implied_delta_bytes") is not None)

    parts = [_kv_sentence(kv, link.kv_differs, engine, rule)]
    if link.kv_differs:
        parts.append(_rule_sentence(engine, rule, d_input, when, link.slope))
    if d_used is not None and used.a_bytes is not None and used.b_bytes is not None:
        parts.append(_used_sentence(used.a_bytes, used.b_bytes, carriers, material(d_used, scale(rows))))
        for name, implied in explained:
            kvd = kv.delta_bytes or 0
            share = f" ({implied / kvd:.0%} of it)" if kvd else ""
            parts.append(f"By {engine_name(engine)}'s rule the {SUBJECTS.get(name, name)} difference accounts for "
                         f"{signed(implied)} of the KV difference{share}.")
        if own is not None:
            parts.append("The engine's own memory is the same on both sides." if own == 0 else
                         f"The engine's own memory differs by {size(abs(own))}.")
    else:
        parts.append(_unmeasured_sentence(a, b))
    return Answer(" ".join(p for p in parts if p), kv.a_bytes, kv.b_bytes, kv.delta_bytes, link.kv_differs, engine,
                  rule.verdict, rule.explains_kv, rule_input, d_input, used.a_bytes, used.b_bytes, d_used, carriers,
                  own, explained)


def _kv_sentence(kv: Row, differs: bool | None, engine: str | None, rule: Hypothesis) -> str:
    if kv.a_bytes is None or kv.b_bytes is None:
        which = "either side" if kv.a_bytes is None and kv.b_bytes is None else "A" if kv.a_bytes is None else "B"
        return f"The engine did not report its KV cache on {which}."
    if kv.a_bytes == kv.b_bytes:
        text = f"KV cache {size(kv.a_bytes)} in both (no difference)"
    elif not differs:
        text = f"KV cache {pair(kv.a_bytes, kv.b_bytes)}, not a material difference"
    else:
        return f"KV cache {pair(kv.a_bytes, kv.b_bytes)}."
    if engine == "llamacpp" and rule.verdict == SUPPORTED:
        text += ": llama.cpp sizes it from n_ctx, not from memory"
    return text + "."


def _rule_input(a: Side, b: Side, engine: str | None, reading: str | None) -> tuple[str | None, int | None, str]:
    """(what the rule read, its change B - A, when it read it)."""
    if engine == "trtllm":
        peaks = [median_peak(s) for s in (a, b)]
        if peaks[0] is not None and peaks[1] is not None:
            return ("free memory at profiling (device total - the used memory the engine logged as its peak)",
                    peaks[0] - peaks[1], "when it sized the cache")
    if engine == "llamacpp":
        return "n_ctx", None, ""
    column = {MEMFREE: "host_free_bytes", MEMAVAILABLE: "host_available_bytes"}.get(reading or "")
    if column is None:
        return None, None, ""
    return f"{reading} at engine start", delta((at(a, "start", column), at(b, "start", column))), "at start"


def median_peak(side: Side) -> int | None:
    return median([(r.get("engine_report") or {}).get("peak_bytes") for r in side.records])


def _rule_sentence(engine: str | None, rule: Hypothesis, d_input: int | None, when: str, slope: float | None) -> str:
    name = engine_name(engine)
    if engine is None:
        return "The two sides ran different engines, so no one sizing rule can explain it."
    read = ""
    if rule.verdict == SUPPORTED and rule.numbers.get("explanation"):
        return f"{name}'s rule explains it: {rule.numbers['explanation']}."
    if d_input is not None:
        read = f"it read {size(abs(d_input))} {'less' if d_input < 0 else 'more'} free memory {when}"
        n = rule.numbers
        if engine == "trtllm" and n.get("peak_a_bytes") is not None and n.get("peak_b_bytes") is not None:
            read += (f" (used memory at profiling {pair(int(n['peak_a_bytes']), int(n['peak_b_bytes']), change=False)}"
                     ", as the engine logged it)")
        if slope:
            read += f", and {slope:.2f} \u00d7 that is {signed(int(slope * d_input))} of KV cache"
    if rule.verdict == SUPPORTED:
        if engine == "llamacpp":
            n = rule.numbers
            return (f"llama.cpp's rule explains it: n_ctx \u00d7 bytes per token predicts "
                    f"{pair(int(n['kv_a_predicted_bytes']), int(n['kv_b_predicted_bytes']))}.")
        return f"{name}'s rule explains it" + (f": {read}." if read else ".")
    if rule.explains_kv is False:
        return f"{name}'s rule does not explain it: {rule.evidence}."
    return f"Why was not established: {rule.evidence}" + (f"; {read}." if read else ".")


def _carriers(rows: Sequence[Row], d_used: int | None, sc: int | None) -> tuple[Carrier, ...]:
    floor = max(MATERIAL_FLOOR_BYTES, int(MATERIAL_FRACTION * abs(d_used or 0)))
    shares = d_used is not None and material(d_used, sc)
    out = [Carrier(r.key, r.title, r.delta_bytes, r.delta_bytes / d_used if shares and d_used else None)
           for r in rows if r.kind == "ledger" and r.key not in ("total", "run_total")
           and r.delta_bytes is not None and abs(r.delta_bytes) >= floor]
    return tuple(sorted(out, key=lambda c: -abs(c.delta_bytes)))


def _engine_own(rows: Sequence[Row]) -> int | None:
    ds = [row(rows, k).delta_bytes for k in ENGINE_OWN]
    known = [d for d in ds if d is not None]
    return sum(known) if known else None


def _used_sentence(a: int, b: int, carriers: Sequence[Carrier], changed: bool) -> str:
    named = carriers[:MAX_NAMED]
    listed = ", ".join(f"{c.title} {signed(c.delta_bytes)}" + (f" ({c.share:.0%})" if c.share is not None else "")
                       for c in named)
    more = f" and {len(carriers) - len(named)} smaller" if len(carriers) > len(named) else ""
    if changed:
        text = (f"Used memory (MemTotal \u2212 MemFree) {'grew' if b > a else 'shrank'} by {size(abs(b - a))} "
                f"({pair(a, b, change=False)})")
        return text + (f": {listed}{more}." if listed else ", spread over no one category.")
    text = f"Used memory (MemTotal \u2212 MemFree) is about the same ({pair(a, b, change=False)}, {signed(b - a)})"
    return text + (f"; it moved between categories: {listed}{more}." if listed else ".")


def _unmeasured_sentence(a: Side, b: Side) -> str:
    bare = [s.label for s in (a, b) if not any(led.measured for led in s.ledgers["ready"])]
    if not bare:
        return ""
    who = "both sides carry" if len(bare) == 2 else f"{bare[0]} carries"
    return f"What that memory was is not in this data: {who} the engine's own figures only, no memory readings."
