"""Quality checks on a set of runs: each problem is a finding with the advice to fix it.

The checks are pure functions of ``Observation`` rows (one per run, whatever produced
it: a memgap study or an imported one) and of the comparisons made from them. Like
pyperf's stability warnings, a finding names the numbers that triggered it and the next
step to take."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy import stats as sps

from memgap.analysis.stats import runs_for_precision, runs_to_detect, summarize

Severity = Literal["error", "warning", "info"]

HIGH_CV = 0.10  # sd above 10% of the mean hides differences of that order
DRIFT_P = 0.01  # Mann-Kendall (Kendall's tau vs time) significance for a drift finding
DRIFT_MIN_RUNS = 6
CONFOUND_AUC = 0.9  # P(a run of B is later than a run of A) at or beyond this (or 1 - it)


@dataclass(frozen=True)
class Observation:
    run_id: str
    model: str
    environment: str
    time: str  # ISO timestamp; orders runs in time
    status: str
    iteration: int | None = None
    values: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    message: str
    advice: str
    model: str | None = None
    environment: str | None = None
    metric: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = dict(self.data)
        return d


def _groups(obs: Iterable[Observation]) -> dict[tuple[str, str], list[Observation]]:
    g: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for o in sorted(obs, key=lambda o: o.time):
        g[(o.model, o.environment)].append(o)
    return dict(g)


def check_iterations(obs: Sequence[Observation]) -> list[Finding]:
    """The same iteration recorded more than once (a restarted run counted twice), and
    iterations missing from 1..max."""
    out = []
    for (model, env), rows in _groups(obs).items():
        its = [o.iteration for o in rows if o.iteration is not None]
        if not its:
            continue
        counts = Counter(its)
        dups = {i: c for i, c in sorted(counts.items()) if c > 1}
        if dups:
            extra = sum(c - 1 for c in dups.values())
            ids = {i: [o.run_id for o in rows if o.iteration == i] for i in dups}
            desc = ", ".join(f"iteration {i} x{c}" for i, c in dups.items())
            out.append(Finding(
                "duplicate_iterations", "error",
                f"{model}/{env}: {desc}: {extra} extra run(s) counted as separate samples "
                f"({len(rows)} runs for {len(counts)} iterations)",
                "keep one run per iteration (the complete one) and mark restarted attempts as "
                "failed; memgap studies record a cut-off run as interrupted and redo it under the "
                "same plan entry",
                model, env, data={"duplicates": dups, "run_ids": ids},
            ))
        missing = sorted(set(range(1, max(its) + 1)) - set(its))
        if missing:
            out.append(Finding(
                "missing_iterations", "warning",
                f"{model}/{env}: iteration(s) {', '.join(map(str, missing))} missing of 1..{max(its)}",
                "resume the study (`memgap run EXPERIMENT.toml`) so that every planned iteration runs",
                model, env, data={"missing": missing},
            ))
    return out


def check_failed(obs: Sequence[Observation]) -> list[Finding]:
    out = []
    for (model, env), rows in _groups(obs).items():
        failed = [o for o in rows if o.status != "ok"]
        if failed:
            out.append(Finding(
                "failed_runs", "warning",
                f"{model}/{env}: {len(failed)} of {len(rows)} runs failed; they are left out of the statistics",
                "read each failed run's failure and engine log tail; if failures depend on the "
                "environment they are a result in themselves, so do not just rerun until it passes",
                model, env, data={"run_ids": [o.run_id for o in failed]},
            ))
    return out


def check_drift(obs: Sequence[Observation], metrics: Sequence[str]) -> list[Finding]:
    """Mann-Kendall trend test (Kendall's tau of value against time order) per metric
    within one model and environment."""
    out = []
    for (model, env), rows in _groups(obs).items():
        ok = [o for o in rows if o.status == "ok"]
        for m in metrics:
            vals = [(i, o.values.get(m)) for i, o in enumerate(ok)]
            pts = [(i, v) for i, v in vals if v is not None]
            if len(pts) < DRIFT_MIN_RUNS or len({v for _, v in pts}) < 2:
                continue
            res = sps.kendalltau([i for i, _ in pts], [v for _, v in pts])
            tau, p = float(res.statistic), float(res.pvalue)
            if math.isfinite(p) and p < DRIFT_P:
                out.append(Finding(
                    "drift", "warning",
                    f"{model}/{env}: {m} {'rises' if tau > 0 else 'falls'} over the runs "
                    f"(Kendall tau {tau:+.2f}, p={p:.3g}, n={len(pts)})",
                    "the runs are not exchangeable: look for state that builds up between runs "
                    "(page cache, temperature, leftovers of earlier runs); cool down and reset "
                    "that state between runs, and interleave environments so drift hits both alike",
                    model, env, m, data={"tau": tau, "p_value": p, "n": len(pts)},
                ))
    return out


def check_confounding(obs: Sequence[Observation]) -> list[Finding]:
    """Per model, whether one environment's runs come before another's: P(a run of the
    later environment is later than a run of the earlier one) near 1 means the
    environment cannot be told apart from time (and from whatever built up over time)."""
    out = []
    by_model: dict[str, list[Observation]] = defaultdict(list)
    for o in obs:
        by_model[o.model].append(o)
    for model, rows in by_model.items():
        envs = sorted({o.environment for o in rows})
        rows = sorted(rows, key=lambda o: o.time)
        rank = {id(o): i for i, o in enumerate(rows)}
        for i, ea in enumerate(envs):
            for eb in envs[i + 1:]:
                ra = [rank[id(o)] for o in rows if o.environment == ea]
                rb = [rank[id(o)] for o in rows if o.environment == eb]
                if len(ra) < 2 or len(rb) < 2:
                    continue
                later = sum((y > x) for x in ra for y in rb) / (len(ra) * len(rb))
                if later >= CONFOUND_AUC or later <= 1 - CONFOUND_AUC:
                    first, second = (ea, eb) if later >= 0.5 else (eb, ea)
                    strict = later in (0.0, 1.0)
                    how = (f"all {first} runs came before all {second} runs" if strict else
                           f"{first} runs came mostly before {second} runs "
                           f"(P(later) = {max(later, 1 - later):.2f})")
                    out.append(Finding(
                        "confounded_with_time", "error",
                        f"{model}: {how}, so environment is confounded with time order "
                        "(and with anything that built up over time, such as page cache or heat)",
                        "interleave the environments in randomized blocks (every environment once "
                        "per block, shuffled with a recorded seed): `memgap run EXPERIMENT.toml` does "
                        "this by default",
                        model, None, data={"environments": [first, second], "p_later": later},
                    ))
    return out


def check_cv(obs: Sequence[Observation], metrics: Sequence[str], threshold: float = HIGH_CV) -> list[Finding]:
    out = []
    for (model, env), rows in _groups(obs).items():
        for m in metrics:
            s = summarize([o.values.get(m) for o in rows if o.status == "ok"])
            if s.n >= 3 and s.cv is not None and s.cv > threshold and s.sd is not None and s.mean:
                need = runs_for_precision(s.sd, 0.02 * abs(s.mean))
                out.append(Finding(
                    "high_cv", "warning",
                    f"{model}/{env}: {m} varies by {100 * s.cv:.1f}% of its mean (sd/mean, n={s.n})",
                    "find the noise (other load on the machine, frequency scaling, thermal state) "
                    f"before adding runs; at this spread a ±2% interval on the mean needs ~{need} runs",
                    model, env, m, data={"cv": s.cv, "n": s.n, "runs_for_2pct": need},
                ))
    return out


def check_power(comparisons: Sequence[Mapping[str, Any]], *, alpha: float = 0.05) -> list[Finding]:
    """Comparisons (as built by ``memgap.analysis.compare``) whose observed difference is
    not established with the runs there are: too few runs for the claimed difference."""
    out = []
    for c in comparisons:
        a, b, diff = c["a"], c["b"], c["difference"]
        na, nb = a["n"], b["n"]
        if c.get("verdict") == "inconclusive" and diff.get("mean"):
            sds = [s for s in (a.get("sd"), b.get("sd")) if s is not None]
            sd = math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else None
            need = runs_to_detect(diff["mean"], sd, alpha=alpha) if sd is not None else None
            if need is not None and need > min(na, nb):
                out.append(Finding(
                    "too_few_runs", "warning",
                    f"{c.get('model')}: {c['metric']} differs by {diff['mean']:+.4g} "
                    f"({a['environment']} -> {b['environment']}) but {min(na, nb)} runs per "
                    f"environment cannot tell that from noise; ~{need} per environment could",
                    "do not report this difference (nor its absence) as a finding; run more "
                    "iterations (iterations = \"auto\" stops when the verdict is settled) or state "
                    "an equivalence margin",
                    c.get("model"), None, c["metric"], data={"runs_needed": need, "n": min(na, nb)},
                ))
        elif min(na, nb) < 3 and c.get("verdict") == "different":
            out.append(Finding(
                "too_few_runs", "warning",
                f"{c.get('model')}: {c['metric']} called different on {min(na, nb)} run(s) per environment",
                "run at least 3 iterations per environment before claiming a difference",
                c.get("model"), None, c["metric"], data={"n": min(na, nb)},
            ))
    return out


def run_checks(obs: Sequence[Observation], metrics: Sequence[str]) -> list[Finding]:
    """Every check that needs only the runs (``check_power`` needs comparisons)."""
    return [
        *check_confounding(obs),
        *check_iterations(obs),
        *check_failed(obs),
        *check_drift(obs, metrics),
        *check_cv(obs, metrics),
    ]
