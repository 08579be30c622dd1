"""``explain``: two runs, or two groups of runs, side by side, which explanation of their
difference the numbers support, and the answer in plain words first (pure).

Each side is summarised by the median of its runs, per category of the ledger
(:mod:`memgap.analysis.ledger`) and per engine figure (:mod:`memgap.analysis.sides`). Each hypothesis
(:mod:`memgap.analysis.hypotheses`, :mod:`memgap.analysis.rulefit`) says whether its quantity differs and
whether that explains the KV difference through the engine's sizing rule, with the
numbers that decided it; :mod:`memgap.analysis.answer` writes the paragraph."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memgap.analysis.answer import Answer, Carrier, build_answer
from memgap.analysis.hypotheses import hypotheses
from memgap.analysis.rulefit import (
    MEMORY_SOURCE,
    READS_FREE,
    READS_FREE_ON_UNIFIED,
    TrtllmFit,
    fit_trtllm,
)
from memgap.analysis.sides import (
    CONTRADICTED,
    ENGINE_FIGURES,
    GIB,
    MATERIAL_FLOOR_BYTES,
    MATERIAL_FRACTION,
    MIB,
    NOT_MEASURED,
    SUPPORTED,
    Hypothesis,
    Row,
    RunInput,
    Side,
    engine_rows,
    gib,
    ledger_rows,
    make_side,
    median,
)

__all__ = [
    "CONTRADICTED", "ENGINE_FIGURES", "EXPLAIN_VERSION", "GIB", "MATERIAL_FLOOR_BYTES", "MATERIAL_FRACTION",
    "MEMORY_SOURCE", "MIB", "NOT_MEASURED", "READS_FREE", "READS_FREE_ON_UNIFIED", "SUPPORTED", "Answer",
    "Carrier", "Explanation", "Hypothesis", "Row", "RunInput", "Side", "TrtllmFit", "answer_for_records",
    "explain", "fit_trtllm", "gib", "limits", "make_side", "median",
]

# The --json layout's version; bump and list the change here.
#   1 -- a, b, categories, categories_at_peak, hypotheses, notes (2026-11).
#   2 -- answer (text, kv_before/after/delta_bytes, kv_differs, rule, rule_verdict,
#        rule_explains_kv, rule_input, rule_input_delta_bytes, used_before/after/delta_bytes,
#        carriers [{category, title, delta_bytes, share}], engine_own_delta_bytes,
#        explained_by); each hypothesis gains differs, explains_kv and kv_evidence;
#        page_cache weighs Cached - Shmem, other_processes only memory outside the run
#        that is neither page cache nor shmem (the page cache was counted twice before),
#        shmem the host's Shmem at ready as well (2026-12).
#   3 -- answer.capacity: the capacity search both sides are arms of, in one sentence
#        (the KV difference in users at its SLO); the answer's text ends with it (2026-12).
EXPLAIN_VERSION = 3


@dataclass(frozen=True)
class Explanation:
    a: Side
    b: Side
    categories: tuple[Row, ...]  # at engine-ready, then the engine's own figures
    categories_at_peak: tuple[Row, ...]
    hypotheses: tuple[Hypothesis, ...]
    notes: tuple[str, ...]
    answer: Answer

    def hypothesis(self, name: str) -> Hypothesis:
        return next(h for h in self.hypotheses if h.name == name)

    def verdicts(self) -> list[dict[str, Any]]:
        """Both questions of every hypothesis, as a report shows them: does its quantity
        differ, and does that explain the KV difference through the engine's rule."""
        return [{"hypothesis": h.name, "claim": h.claim, "differs": h.differs, "explains_kv": h.explains_kv,
                 "verdict": h.verdict, "why": h.kv_evidence or h.evidence} for h in self.hypotheses]

    def to_dict(self) -> dict[str, Any]:
        return {
            "explain_version": EXPLAIN_VERSION,
            "answer": self.answer.to_dict(),
            "a": self.a.describe(), "b": self.b.describe(),
            "categories": [r.to_dict() for r in self.categories],
            "categories_at_peak": [r.to_dict() for r in self.categories_at_peak],
            "hypotheses": [h.to_dict() for h in self.hypotheses],
            "notes": list(self.notes),
        }


def explain(a_label: str, a_runs: Sequence[RunInput], b_label: str, b_runs: Sequence[RunInput], *,
            capacity: str | None = None) -> Explanation:
    """``capacity``: the sentence a capacity search gives for these two sides
    (``analysis.capacity_outcome.capacity_citation``), which the answer cites."""
    if not a_runs or not b_runs:
        raise ValueError("explain needs at least one run on each side")
    a, b = make_side(a_label, a_runs), make_side(b_label, b_runs)
    rows = tuple(ledger_rows(a, b, "ready") + engine_rows(a, b))
    peak_rows = tuple(ledger_rows(a, b, "peak"))
    hyps = tuple(hypotheses(a, b, rows))
    return Explanation(a, b, rows, peak_rows, hyps, tuple(limits(a, b)),
                       build_answer(a, b, rows, hyps).citing(capacity))


def answer_for_records(a_records: Sequence[Mapping[str, Any]], b_records: Sequence[Mapping[str, Any]],
                       series_a: Sequence[Mapping[str, Any] | None] | None = None,
                       series_b: Sequence[Mapping[str, Any] | None] | None = None, *,
                       a_label: str = "A", b_label: str = "B") -> Answer:
    """The answer for two groups of stored runs: records as the store returns them
    (``StoredRun.record``) and, aligned with them, their raw series (``Store.series``) or
    None. Raises ValueError when a side is empty or a series list is not aligned."""
    return explain(a_label, _inputs(a_records, series_a), b_label, _inputs(b_records, series_b)).answer


def _inputs(records: Sequence[Mapping[str, Any]], series: Sequence[Mapping[str, Any] | None] | None) -> list[RunInput]:
    if series is not None and len(series) != len(records):
        raise ValueError(f"{len(series)} series for {len(records)} records: give one per record (None where absent)")
    return [RunInput(r, None if series is None else series[i]) for i, r in enumerate(records)]


def limits(a: Side, b: Side) -> list[str]:
    """What the data can and cannot establish."""
    out = []
    engine_only = [s.label for s in (a, b) if not any(led.measured for led in s.ledgers["ready"])]
    if engine_only:
        srcs = sorted({str(r.get("source") or "memgap") for s in (a, b) for r in s.records})
        out.append(f"{' and '.join(engine_only)}: engine-level numbers only (source {', '.join(srcs)}); page cache, "
                   "cgroup charges, shmem and other processes were not measured, so the data can show how the "
                   "KV cache follows the engine's reading of used memory, but not what that memory was")
    ta = sorted(str(r.get("created_at")) for r in a.records)
    tb = sorted(str(r.get("created_at")) for r in b.records)
    if ta and tb and (ta[-1] < tb[0] or tb[-1] < ta[0]):
        first, second = (a, b) if ta[-1] < tb[0] else (b, a)
        out.append(f"every run of {first.label} ran before every run of {second.label}: the comparison is "
                   "confounded with time (and with page cache built up by earlier runs); interleave the order")
    tput = [[float(v) for r in s.records if (v := r.get("output_tokens_per_s")) is not None] for s in (a, b)]
    if tput[0] and tput[1]:
        ta_, tb_ = statistics.median(tput[0]), statistics.median(tput[1])
        rel = abs(tb_ - ta_) / max(ta_, tb_, 1e-9)
        out.append(f"output throughput {ta_:.1f} vs {tb_:.1f} tokens/s (medians, {rel:.1%} apart)"
                   + (": the KV difference did not limit this workload" if rel < 0.02 else ""))
    for s in (a, b):
        for key in ("model", "engine"):
            vals = sorted({str(r.get(key)) for r in s.records})
            if len(vals) > 1:
                out.append(f"{s.label} mixes {key}s ({', '.join(vals)}): its medians summarise unlike runs")
        if len(s.runs) == 1:
            out.append(f"{s.label} is a single run: no spread, so no estimate of run-to-run noise")
    return out
