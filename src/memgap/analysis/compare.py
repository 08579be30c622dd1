"""Environments compared per model: the numbers behind ``memgap compare`` and reports.

Pure: takes stored runs, returns a JSON-ready dict (``COMPARE_SCHEMA``). Differences are
``b - a`` where ``a`` is the baseline environment (``native`` when present). A metric a
study declared is judged against the study's margin (:mod:`memgap.analysis.margins`),
every other one against ``--margin``; each row says which (``margin_rule``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from memgap.analysis.margins import Margin, as_margin, margins_for, study_margins
from memgap.analysis.metrics import METRICS, Metric
from memgap.analysis.quality import Observation, check_power, run_checks
from memgap.analysis.selectors import parse_selector, select_runs
from memgap.analysis.stats import (
    bootstrap_diff_ci,
    hedges_g,
    holm,
    mann_whitney_p,
    runs_to_detect,
    summarize,
    welch_p,
)
from memgap.errors import UsageError
from memgap.store import Store, StoredRun

COMPARE_SCHEMA = "memgap.compare/1"
DEFAULT_MARGIN = 0.05  # equivalence margin: 5% of the baseline mean
BASELINE_ENVIRONMENTS = ("native",)


def iteration_of(run: StoredRun, iterations: Mapping[str, int] | None = None) -> int | None:
    if iterations and run.run_id in iterations:
        return iterations[run.run_id]
    for src in (run.record, run.record.get("source_info") or {}, run.record.get("study") or {}):
        it = src.get("iteration") if isinstance(src, Mapping) else None
        if isinstance(it, int) and not isinstance(it, bool):
            return it
    return None


def group_name(run: StoredRun, variants: Mapping[str, str] | None = None) -> str:
    """The model, the study variant when there is one, and the host of a run made on a
    cluster: runs of different variants differ in their engine or environment options,
    runs of different hosts in the machine, and are never pooled."""
    v = (variants or {}).get(run.run_id)
    name = f"{run.model or '-'} [{v}]" if v and v != "base" else (run.model or "-")
    # A run made on a cluster (memgap.fleet) names its host: hosts are compared apart,
    # never pooled (another machine is another population).
    host = (run.record.get("host") or {}).get("name")
    return f"{name} @ {host}" if host else name


def study_annotations(st: Store) -> tuple[dict[str, int], list[str], dict[str, str]]:
    """From the store's study tables: iteration and variant of each finished study run,
    and the runs a study recorded as interrupted (and redid)."""
    iterations: dict[str, int] = {}
    variants: dict[str, str] = {}
    excluded: list[str] = []
    for row in st.study_runs():
        if row["run_id"] is None:
            continue
        if row["status"] == "finished":
            iterations[row["run_id"]] = row["iteration"]
            variants[row["run_id"]] = row["cell"].get("variant", "base")
        elif row["status"] == "interrupted":
            excluded.append(row["run_id"])
    return iterations, excluded, variants


def observations(
    runs: Sequence[StoredRun], metrics: Sequence[Metric] = METRICS, iterations: Mapping[str, int] | None = None,
    variants: Mapping[str, str] | None = None,
) -> list[Observation]:
    return [
        Observation(
            run_id=r.run_id,
            model=group_name(r, variants),
            environment=r.environment,
            time=r.created_at,
            status=r.status,
            iteration=iteration_of(r, iterations),
            values={m.name: m.read(r.record) for m in metrics},
        )
        for r in runs
    ]


def baseline_first(environments: Sequence[str]) -> list[str]:
    envs = sorted(set(environments))
    return sorted(envs, key=lambda e: (e not in BASELINE_ENVIRONMENTS, envs.index(e)))


def compare_metric(
    metric: Metric, a: Sequence[float | None], b: Sequence[float | None], *,
    margin: float | Margin = DEFAULT_MARGIN, alpha: float = 0.05, seed: int = 0,
) -> dict[str, Any] | None:
    """One metric, two groups; None when either group has no value for it. ``margin``: a
    fraction of the baseline mean, or a :class:`Margin` (a study's)."""
    rule = as_margin(margin)
    sa, sb = summarize(a), summarize(b)
    if sa.n == 0 or sb.n == 0 or sa.mean is None or sb.mean is None:
        return None
    xa = [float(v) for v in a if v is not None]
    xb = [float(v) for v in b if v is not None]
    diff = sb.mean - sa.mean
    ci = bootstrap_diff_ci(xa, xb, seed=seed)
    sds = [s for s in (sa.sd, sb.sd) if s is not None]
    pooled = (sum(s * s for s in sds) / len(sds)) ** 0.5 if sds else None
    return {
        "metric": metric.name,
        "unit": metric.unit,
        "description": metric.description,
        "a": sa.to_dict(),
        "b": sb.to_dict(),
        "difference": {
            "mean": diff,
            "relative": diff / abs(sa.mean) if sa.mean else None,
            "ci95": list(ci) if ci is not None else None,
        },
        "p_value": welch_p(xa, xb),
        "p_mann_whitney": mann_whitney_p(xa, xb),
        "p_holm": None,  # filled in across the metrics of one comparison
        "effect_size": hedges_g(xa, xb),
        "effect_size_kind": "hedges_g",
        "margin": rule.bound(sa.mean),
        "margin_rule": rule.to_dict(),
        "runs_needed": runs_to_detect(diff, pooled, alpha=alpha) if pooled is not None and diff else None,
        "verdict": None,
    }


def _verdict(m: dict[str, Any], alpha: float) -> str:
    """equivalent: the whole 95% interval lies within the margin; different: Holm-adjusted
    Welch p below alpha; otherwise inconclusive."""
    ci = m["difference"]["ci95"]
    if ci is not None and -m["margin"] <= ci[0] and ci[1] <= m["margin"]:
        return "equivalent"
    if m["p_holm"] is not None and m["p_holm"] < alpha:
        return "different"
    return "inconclusive"


def compare_sets(
    a_runs: Sequence[StoredRun], b_runs: Sequence[StoredRun], *,
    metrics: Sequence[Metric] = METRICS, margin: float = DEFAULT_MARGIN, alpha: float = 0.05, seed: int = 0,
    margins: Mapping[str, Margin] | None = None,
) -> list[dict[str, Any]]:
    """Every metric with values on both sides; ``margins`` (by metric name) replace
    ``margin`` where given."""
    ok_a = [r for r in a_runs if r.status == "ok"]
    ok_b = [r for r in b_runs if r.status == "ok"]
    rows = []
    for m in metrics:
        c = compare_metric(m, [m.read(r.record) for r in ok_a], [m.read(r.record) for r in ok_b],
                           margin=(margins or {}).get(m.name, margin), alpha=alpha, seed=seed)
        if c is not None:
            rows.append(c)
    for row, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        row["p_holm"] = p
        row["verdict"] = _verdict(row, alpha)
    return rows


def compare_runs(
    runs: Sequence[StoredRun], *,
    metrics: Sequence[Metric] = METRICS, margin: float = DEFAULT_MARGIN, alpha: float = 0.05, seed: int = 0,
    iterations: Mapping[str, int] | None = None, excluded: Sequence[str] = (),
    variants: Mapping[str, str] | None = None, declared: Mapping[str, Mapping[str, Margin]] | None = None,
) -> dict[str, Any]:
    """Per model, every environment against the baseline; plus the quality findings.
    ``excluded`` run ids (e.g. runs a study recorded as interrupted and redid) are left
    out of the statistics and of the checks. ``declared``: the margins studies declared
    (``{study_id: {metric: Margin}}``), used for the runs of those studies."""
    skip = set(excluded)
    runs = [r for r in runs if r.run_id not in skip]
    by_model: dict[str, list[StoredRun]] = defaultdict(list)
    for r in runs:
        by_model[group_name(r, variants)].append(r)
    groups: list[dict[str, Any]] = []
    flat: list[dict[str, Any]] = []
    for model in sorted(by_model):
        rs = by_model[model]
        envs = baseline_first([r.environment for r in rs])
        for eb in envs[1:]:
            ea = envs[0]
            ra, rb = [r for r in rs if r.environment == ea], [r for r in rs if r.environment == eb]
            rows = compare_sets(ra, rb, metrics=metrics, margin=margin, alpha=alpha, seed=seed,
                                margins=margins_for([*ra, *rb], declared))
            for row in rows:
                row["a"]["environment"], row["b"]["environment"] = ea, eb
                flat.append({**row, "model": model})
            groups.append({
                "model": model, "a": ea, "b": eb,
                "runs": {ea: sum(r.environment == ea for r in rs), eb: sum(r.environment == eb for r in rs)},
                "metrics": rows,
            })
        if len(envs) == 1:
            groups.append({"model": model, "a": envs[0], "b": None,
                           "runs": {envs[0]: len(rs)}, "metrics": []})
    obs = observations(runs, metrics, iterations, variants)
    findings = run_checks(obs, [m.name for m in metrics]) + check_power(flat, alpha=alpha)
    return {
        "schema": COMPARE_SCHEMA,
        "alpha": alpha,
        "margin_relative": margin,
        "margins_declared": {sid: {k: m.to_dict() for k, m in ms.items()} for sid, ms in (declared or {}).items()},
        "bootstrap_seed": seed,
        "groups": groups,
        "findings": [f.to_dict() for f in findings],
    }


def parse_margin(text: str) -> float:
    """'5%' or '0.05' -> 0.05 (a fraction of the baseline mean)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(f"--margin: {text!r} is not a fraction (0.05) or a percentage (5%)") from None
    if not (0 <= value < 1):
        raise UsageError(f"--margin: must be in [0, 100%), got {text!r}")
    return value


def selected_runs(st: Store, selectors: Sequence[str]) -> list[list[StoredRun]]:
    """One list of runs per selector (failed runs included: the checks report them);
    with no selector, every run in the store."""
    if not selectors:
        runs = st.runs()
        if not runs:
            raise UsageError(f"no runs in {st.path}: run `memgap run` or `memgap import` first")
        return [runs]
    return [select_runs(st, parse_selector(s)) for s in selectors]


def build_comparison(
    st: Store, selectors: Sequence[str], *, metrics: Sequence[Metric], margin: float, alpha: float, seed: int
) -> dict[str, Any]:
    if len(selectors) > 2:
        raise UsageError("compare takes at most two selectors (A and B); use key=value,key=value to narrow one")
    sets = selected_runs(st, selectors)
    iterations, excluded, variants = study_annotations(st)
    declared = study_margins(st, [r for s in sets for r in s])
    if len(sets) == 1:
        out = compare_runs(sets[0], metrics=metrics, margin=margin, alpha=alpha, seed=seed,
                           iterations=iterations, excluded=excluded, variants=variants, declared=declared)
    else:
        skip = set(excluded)
        a = [r for r in sets[0] if r.run_id not in skip]
        b = [r for r in sets[1] if r.run_id not in skip]
        rows = compare_sets(a, b, metrics=metrics, margin=margin, alpha=alpha, seed=seed,
                            margins=margins_for([*a, *b], declared))
        label = f"{selectors[0]} vs {selectors[1]}"
        both = {r.run_id: r for r in [*a, *b]}
        full = compare_runs(list(both.values()), metrics=metrics, margin=margin, alpha=alpha, seed=seed,
                            iterations=iterations, variants=variants, declared=declared)
        for row in rows:
            row["a"]["environment"], row["b"]["environment"] = selectors[0], selectors[1]
        out = {**full, "groups": [{"model": label, "a": selectors[0], "b": selectors[1],
                                   "runs": {selectors[0]: len(a), selectors[1]: len(b)}, "metrics": rows}]}
    out["store"] = str(st.path)
    out["selectors"] = list(selectors)
    return out
