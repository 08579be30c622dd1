"""A capacity search read back from the store: per arm (environment at a KV budget) the
boundary with its interval, the points tried and the engine's queue at each, ``plan``'s
predicted concurrency from the runs' own KV budget beside it (and why they differ, when
they do), and the ratios between arms both ways. ``memgap.capacity_run`` runs the
points; this module only reads what they stored, so a report can rebuild it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memgap.analysis.sweep_curves import SweepPoint, point_row, request_from_row
from memgap.capacity import (
    STOP_REASONS,
    Arm,
    CapacitySettings,
    Estimate,
    RungSummary,
    Step,
    Trial,
    arm_of_label,
    decide,
)
from memgap.errors import UsageError
from memgap.kv import VLLM_RESERVED_BLOCKS, sequences_in_kv
from memgap.load.slo import SLO, parse_slo
from memgap.load.spec import WorkloadSpec
from memgap.store import Store

# A measured boundary agrees with plan's prediction when the prediction lies within its
# interval widened by this share of the prediction (and by one rung at least): the
# engine's own scheduling (a slot freed a step late, a prompt batch split) moves the
# boundary by a request or so, not by a tenth.
AGREE_REL = 0.10

# The engine's signals kept for each point (sweep_curves.point_row's keys).
SIGNALS = ("engine_waiting_peak", "engine_waiting_mean", "engine_running_peak", "kv_usage_peak",
           "preemptions", "parallel", "kv_cache_tokens", "status", "failure")  # fmt: skip


def interrupted(record: Mapping[str, Any]) -> bool:
    """A run cut short by Ctrl-C or SIGTERM: not a finished point (it is run again)."""
    return record.get("status") == "failed" and str(record.get("failure") or "").startswith("interrupted")


def tokens_per_request(settings: CapacitySettings) -> int:
    w = WorkloadSpec.from_dict(dict(settings.base.get("workload") or {}))
    return (w.prompt_tokens_max or w.prompt_tokens) + (w.output_tokens_max or w.output_tokens)


def _load_of(record: Mapping[str, Any], kind: str) -> float | None:
    w = record.get("workload") or {}
    v = w.get("request_rate_per_s") if kind == "rate" else w.get("concurrency")
    return float(v) if isinstance(v, int | float) else None


def preemptions(series: Mapping[str, Any] | None) -> float | None:
    """How many requests the engine preempted during the workload: the rise of its
    counter between the ready and end marks (None: it exports no such counter)."""
    if not series:
        return None
    cols, marks = series.get("columns", {}), series.get("marks", {})
    lo, hi = marks.get("ready", float("-inf")), marks.get("end", float("inf"))
    vals = [float(v) for t, v in zip(cols.get("t_s", []), cols.get("preemptions_total", []), strict=False)
            if v is not None and lo <= t <= hi]  # fmt: skip
    return vals[-1] - vals[0] if vals else None


def trials_in_store(store: Store, settings: CapacitySettings) -> tuple[dict[str, list[Trial]], dict[str, list[dict[str, Any]]]]:
    """Each arm's finished points (interrupted runs left out) and their records."""
    ladder = settings.search.ladder
    slo = parse_slo(settings.slo)
    trials: dict[str, list[Trial]] = {a.name: [] for a in settings.arms}
    records: dict[str, list[dict[str, Any]]] = {a.name: [] for a in settings.arms}
    for r in store.runs(where={"study_id": settings.capacity_id}):
        arm = arm_of_label(r.label, settings.capacity_id)
        load = _load_of(r.record, ladder.kind)
        rung = ladder.rung_of(load) if load is not None else None
        if arm not in trials or rung is None or interrupted(r.record):
            continue
        requests = [request_from_row(x) for x in store.requests(r.run_id)]
        measured = tuple(q for q in requests if not q.warmup)
        w = r.record.get("workload") or {}
        point = SweepPoint(int(w.get("concurrency") or 1), w.get("request_rate_per_s"))
        series = store.series(r.run_id)
        row = {**point_row(point, r.record, requests, series, slo), "preemptions": preemptions(series)}
        signals = {k: row.get(k) for k in SIGNALS}
        trials[arm].append(Trial(rung, r.run_id, measured, r.record.get("failure"), signals))
        records[arm].append(r.record)
    return trials, records


# -- prediction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """``plan``'s concurrency for a run's own KV budget at the search's request shape."""

    kv_cache_tokens: int | None  # what the engine reported (engine_report.kv_cache_tokens)
    tokens_per_request: int
    block_size: int  # 1: cells (llama.cpp); vLLM's block
    kv_sequences: int | None  # requests whose KV fits at once
    slots: int | None  # the engine's own cap: llama.cpp --parallel, vLLM --max-num-seqs
    predicted: int | None  # the smaller
    binds: str | None  # 'kv' or 'slots'

    def to_dict(self) -> dict[str, Any]:
        return {"kv_cache_tokens": self.kv_cache_tokens, "tokens_per_request": self.tokens_per_request,
                "block_size": self.block_size, "kv_sequences": self.kv_sequences, "slots": self.slots,
                "predicted": self.predicted, "binds": self.binds}  # fmt: skip


def predict(record: Mapping[str, Any], tokens_per_request: int) -> Prediction:
    """From the record alone: its engine's reported KV tokens, its block size (the spec's,
    or tokens / blocks), its slots (llama.cpp's parallel, vLLM's max_num_seqs)."""
    report = record.get("engine_report") or {}
    engine = (record.get("spec") or {}).get("engine") or {}
    options = record.get("engine_options") or {}
    tokens = report.get("kv_cache_tokens")
    tokens = tokens if isinstance(tokens, int) and tokens > 0 else None
    blocks = report.get("kv_cache_blocks")
    block = engine.get("block_size")
    if not isinstance(block, int) and tokens and isinstance(blocks, int) and blocks > 0:
        block = tokens // blocks
    block = block if isinstance(block, int) and block > 0 else 1
    # vLLM v1 keeps one block of its pool back (its null block): a request never gets it
    reserved = VLLM_RESERVED_BLOCKS if engine.get("kind") == "vllm" else 0
    kv_seq = sequences_in_kv(tokens, tokens_per_request, block_size=block, reserved_blocks=reserved) if tokens else None
    slots = options.get("parallel") if engine.get("kind", "llamacpp") == "llamacpp" else engine.get("max_num_seqs")
    slots = slots if isinstance(slots, int) and slots > 0 else None
    known = [v for v in (kv_seq, slots) if v is not None]
    predicted = min(known) if known else None
    binds = None if predicted is None else ("kv" if kv_seq == predicted else "slots")
    return Prediction(tokens, tokens_per_request, block, kv_seq, slots, predicted, binds)


def arm_prediction(records: Sequence[Mapping[str, Any]], per_request: int) -> Prediction | None:
    """The prediction from the arm's runs: the median of their KV budgets (an engine that
    sizes its cache from free memory may get a little more or less each start)."""
    preds = [predict(r, per_request) for r in records if r.get("status") == "ok"]
    preds = [p for p in preds if p.predicted is not None]
    if not preds:
        return None
    tokens = sorted(p.kv_cache_tokens or 0 for p in preds)
    mid = tokens[(len(tokens) - 1) // 2]
    return next(p for p in preds if (p.kv_cache_tokens or 0) == mid)


# -- one arm --------------------------------------------------------------------------------


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _misses(est: Estimate, rung: int | None, slo: SLO) -> str:
    r = next((x for x in est.rungs if x.rung == rung), None)
    if r is None:
        return ""
    bounds = {b.key: b.bound_s for b in slo.percentiles}
    if slo.errors_max is not None:
        bounds["errors"] = slo.errors_max
    parts = [f"{k} {_fmt(v)} > {_fmt(bounds[k])}" for k, v in r.observed.items()
             if k in bounds and (v is None or v > bounds[k])]  # fmt: skip
    return ", ".join(parts)


def engine_said(r: RungSummary | None) -> str:
    """The engine's own signals at a point: ``queue peak 2, KV usage 100%, 4 preempted``
    (only what it exported)."""
    if r is None:
        return "nothing measured"
    sig = r.signals
    parts = [f"queue peak {_fmt(sig.get('engine_waiting_peak'))}"]
    if sig.get("kv_usage_peak") is not None:
        parts.append(f"KV usage {100 * sig['kv_usage_peak']:.0f}%")
    if sig.get("preemptions") is not None:
        parts.append(f"{_fmt(sig['preemptions'])} preempted")
    return ", ".join(parts)


def diagnose(est: Estimate, pred: Prediction | None, slo: SLO, agree_rel: float = AGREE_REL) -> dict[str, Any]:
    """Whether the measured boundary agrees with the prediction, the tolerance applied,
    and why not (compute or KV), with the numbers that say so."""
    out: dict[str, Any] = {"agree_rel": agree_rel, "agrees": None, "why": None}
    if pred is None or pred.predicted is None:
        out["why"] = "no prediction: the engine reported no KV cache size in tokens"
        return out
    p = float(pred.predicted)
    step = est.ladder.step if est.ladder.kind == "concurrency" else p * est.ladder.step
    tol = max(step, agree_rel * p)
    out["tolerance"] = tol
    if not est.rungs:
        return out
    lo, hi = est.load(est.low_rung), est.load(est.high_rung)
    if hi is None:  # even the lowest load missed it
        out["agrees"] = False
        bottom = est.rungs[0]
        failure = next((s for s in (bottom.signals.get("failure"),) if s), None)
        out["why"] = (f"the SLO failed at the lowest load ({_fmt(bottom.load)}): "
                      + (f"the run failed: {failure}" if failure else _misses(est, bottom.rung, slo) or "it missed"))
        return out
    out["agrees"] = (lo is None or lo - tol <= p) and (est.open_above or p <= hi + tol)
    miss = next((x for x in est.rungs if x.rung == est.first_miss_rung), None)
    waiting = None if miss is None else miss.signals.get("engine_waiting_peak")
    if est.open_above:
        out["why"] = (f"the SLO held up to the top of the ladder ({_fmt(hi)}); the boundary is above it "
                      f"(predicted {pred.predicted}): raise the highest load")  # fmt: skip
    elif miss is not None and hi is not None and hi + tol < p:
        if not waiting:
            out["why"] = (f"compute-bound: at load {_fmt(miss.load)}, below the predicted {pred.predicted}, no request "
                          f"waited in the engine ({engine_said(miss)}) yet {_misses(est, miss.rung, slo)}")
        else:
            out["why"] = (f"requests waited in the engine at load {_fmt(miss.load)} ({engine_said(miss)}), below "
                          f"the predicted {pred.predicted}: it held fewer at once than its KV budget predicts")
    elif lo is not None and lo - tol > p:
        held = next((x for x in reversed(est.rungs) if x.rung == est.boundary_rung), None)
        out["why"] = (f"the SLO held beyond the predicted {pred.predicted} up to load {_fmt(held.load if held else None)} "
                      f"({engine_said(held)}): the engine admitted more than its KV holds whole (vLLM preempts and "
                      "recomputes) or one wait for KV fits within the bounds")  # fmt: skip
    elif miss is not None:
        held = next((x for x in est.rungs if x.rung == est.boundary_rung), None)
        out["evidence"] = (f"at load {_fmt(held.load if held else None)} ({engine_said(held)}) the SLO held; at "
                           f"{_fmt(miss.load)} ({engine_said(miss)}) {_misses(est, miss.rung, slo) or 'it missed'}")
    return out


@dataclass(frozen=True)
class ArmOutcome:
    arm: Arm
    step: Step
    estimate: Estimate
    prediction: Prediction | None
    diagnosis: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm.name, **self.arm.to_dict(), "done": self.step.done, "next": self.step.rung,
                "reason": self.step.reason, "stopped_because": STOP_REASONS.get(self.step.reason),
                "estimate": self.estimate.to_dict(),
                "prediction": self.prediction.to_dict() if self.prediction else None,
                "diagnosis": dict(self.diagnosis)}  # fmt: skip


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def compare_arms(a: ArmOutcome, b: ArmOutcome) -> dict[str, Any]:
    """The ratio between two arms both ways, predicted and measured (with the measured
    ratio's range from the two intervals)."""
    pa = a.prediction.predicted if a.prediction else None
    pb = b.prediction.predicted if b.prediction else None
    ka = a.prediction.kv_cache_tokens if a.prediction else None
    kb = b.prediction.kv_cache_tokens if b.prediction else None
    ea, eb = a.estimate, b.estimate
    ma, mb = ea.load(ea.boundary_rung), eb.load(eb.boundary_rung)
    la, ha, lb, hb = ea.load(ea.low_rung), ea.load(ea.high_rung), eb.load(eb.low_rung), eb.load(eb.high_rung)
    return {
        "a": a.arm.name, "b": b.arm.name,
        "kv_tokens_a_over_b": _ratio(ka, kb), "kv_tokens_b_over_a": _ratio(kb, ka),
        "predicted_a_over_b": _ratio(pa, pb), "predicted_b_over_a": _ratio(pb, pa),
        "measured_a_over_b": _ratio(ma, mb), "measured_b_over_a": _ratio(mb, ma),
        "measured_a_over_b_range": [_ratio(la, hb), _ratio(ha, lb)],
        "intervals_overlap": None if None in (la, ha, lb, hb) else not (ha < lb or hb < la),  # type: ignore[operator]
    }  # fmt: skip


def ratio_sentence(c: Mapping[str, Any], slo_text: str) -> str | None:
    """``a has 0.33x the KV tokens of b: plan predicts 0.33x the concurrent requests,
    measured 0.33x (0.33-0.33) at ttft_p99_s<=2``: what explain's answer can cite."""
    k, p, m = c["kv_tokens_a_over_b"], c["predicted_a_over_b"], c["measured_a_over_b"]
    if k is None or m is None:
        return None
    lo, hi = c["measured_a_over_b_range"]
    rng = "" if lo is None or hi is None else f" ({lo:.2f}-{hi:.2f})"
    pred = "-" if p is None else f"{p:.2f}x"
    return (f"{c['a']} has {k:.2f}x the KV tokens of {c['b']}: plan predicts {pred} the concurrent requests, "
            f"measured {m:.2f}x{rng} at {slo_text} (the other way: {c['kv_tokens_b_over_a']:.2f}x KV, "
            f"{'-' if c['predicted_b_over_a'] is None else format(c['predicted_b_over_a'], '.2f') + 'x'} predicted, "
            f"{'-' if c['measured_b_over_a'] is None else format(c['measured_b_over_a'], '.2f') + 'x'} measured)")


def _times(r: float) -> str:
    return f"{r:.2f}\u00d7"


def cost_sentence(a: ArmOutcome, b: ArmOutcome, slo_text: str, capacity_id: str) -> str | None:
    """What explain's answer cites for sides A and B of a capacity search: ``In capacity
    search X, B's 3.00× smaller KV cache cost 3.00× in concurrent requests at ttft_p99_s<=2
    (boundary 4 [4-4] against 12 [12-12] for A; plan predicted 0.33×).`` None when an
    arm has no KV size or no measured boundary."""
    c = compare_arms(a, b)
    k, m, p = c["kv_tokens_b_over_a"], c["measured_b_over_a"], c["predicted_b_over_a"]
    if k is None or m is None:
        return None
    what = "concurrent requests" if a.estimate.ladder.kind == "concurrency" else "request rate"
    served = f"it served {_times(m)} the {what}"
    if k < 1:
        effect = f"'s {_times(1 / k)} smaller KV cache cost " + (f"{_times(1 / m)} in {what}" if m < 1 else
                                                                   f"nothing: {served}")
    elif k > 1:
        effect = f"'s {_times(k)} larger KV cache " + (f"gave {_times(m)} the {what}" if m > 1 else
                                                        f"gave nothing more: {served}")
    else:
        effect = f" has the same KV cache and {served[3:]}"

    def bound(e: Estimate) -> str:
        lo, hi = e.load(e.low_rung), e.load(e.high_rung)
        return _fmt(e.load(e.boundary_rung)) + ("" if lo is None or hi is None else f" [{_fmt(lo)}-{_fmt(hi)}]")

    pred = "" if p is None else f"; plan predicted {_times(p)}"
    return (f"In capacity search {capacity_id}, {b.arm.name}{effect} at {slo_text} "
            f"(boundary {bound(b.estimate)} against {bound(a.estimate)} for {a.arm.name}{pred}).")


def _arms_of(runs: Sequence[Any]) -> tuple[str | None, set[str | None]]:
    """The one capacity search the runs (``StoredRun``) belong to (None: none or several) and their arms."""
    ids = {r.study_id for r in runs}
    cid = next(iter(ids)) if len(ids) == 1 and isinstance(next(iter(ids)), str) else None
    return cid, {arm_of_label(r.label, cid) for r in runs} if cid else set()


def capacity_citation(store: Store, a_runs: Sequence[Any], b_runs: Sequence[Any]) -> str | None:
    """The capacity sentence for explain's answer when side A's runs are one arm of a
    capacity search and side B's another arm of the same search; else None."""
    (ca, arms_a), (cb, arms_b) = _arms_of(a_runs), _arms_of(b_runs)
    if ca is None or ca != cb or len(arms_a) != 1 or len(arms_b) != 1 or arms_a == arms_b or None in arms_a | arms_b:
        return None
    if store.capacity_search(ca) is None:
        return None
    outcome = capacity_outcome(store, ca)
    by_name = {x.arm.name: x for x in outcome.arms}
    a, b = by_name.get(next(iter(arms_a)) or ""), by_name.get(next(iter(arms_b)) or "")
    if a is None or b is None:
        return None
    return cost_sentence(a, b, outcome.settings.slo, ca)


# -- the whole search -----------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityOutcome:
    settings: CapacitySettings
    arms: tuple[ArmOutcome, ...]

    @property
    def done(self) -> bool:
        return all(a.step.done for a in self.arms)

    @property
    def runs(self) -> int:
        return sum(a.estimate.runs for a in self.arms)

    def grid_runs(self) -> dict[str, int]:
        """What a fixed grid of the same resolution needs: every rung once per arm, and
        every rung ``repeats`` times (a grid cannot know which rungs are near the boundary)."""
        size = self.settings.search.ladder.size
        n = len(self.arms)
        return {"rungs_per_arm": size, "once": size * n, "with_repeats": size * n * self.settings.search.repeats}

    def to_dict(self) -> dict[str, Any]:
        slo = self.settings.slo
        pairs = [compare_arms(self.arms[0], b) for b in self.arms[1:]]
        return {
            "capacity_id": self.settings.capacity_id, "settings": self.settings.to_dict(), "slo": slo,
            "tokens_per_request": tokens_per_request(self.settings), "done": self.done, "runs": self.runs,
            "grid": self.grid_runs(), "arms": [a.to_dict() for a in self.arms], "comparisons": pairs,
            "sentences": [s for c in pairs if (s := ratio_sentence(c, slo))],
        }  # fmt: skip


def capacity_outcome(store: Store, capacity_id: str) -> CapacityOutcome:
    stored = store.capacity_search(capacity_id)
    if stored is None:
        raise UsageError(f"no capacity search {capacity_id!r} in {store.path}")
    settings = CapacitySettings.from_dict(stored["settings"])
    return outcome_of(store, settings)


def outcome_of(store: Store, settings: CapacitySettings) -> CapacityOutcome:
    slo = parse_slo(settings.slo)
    trials, records = trials_in_store(store, settings)
    per_request = tokens_per_request(settings)
    arms = []
    for arm in settings.arms:
        step, est = decide(trials[arm.name], slo, settings.search)
        pred = arm_prediction(records[arm.name], per_request)
        arms.append(ArmOutcome(arm, step, est, pred, diagnose(est, pred, slo)))
    return CapacityOutcome(settings, tuple(arms))


def capacities_in_store(store: Store, runs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``{capacity_id: outcome}`` for the capacity searches the runs (``StoredRun``) belong to."""
    ids = sorted({r.study_id for r in runs if isinstance(r.study_id, str) and store.capacity_search(r.study_id)})
    return {cid: capacity_outcome(store, cid).to_dict() for cid in ids}


def capacity_results(store: Store, runs: Sequence[Any]) -> list[dict[str, Any]]:
    """Each capacity search among the runs as a report shows it (by id)."""
    return list(capacities_in_store(store, runs).values())

