"""Everything a report shows, aggregated from the store (no rendering here)."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from memgap.analysis.compare import baseline_first, group_name, study_annotations
from memgap.analysis.metrics import BY_NAME
from memgap.analysis.stats import mean_ci, summarize
from memgap.store import Store, StoredRun

TIMELINE_COLUMNS = ("process_rss_bytes", "cgroup_usage_bytes", "host_used_bytes")
INTERVAL_METRICS = ("kv_cache_bytes", "output_tokens_per_s", "engine_peak_bytes", "process_rss_peak_bytes")
MAX_POINTS = 240
CONFIG_KEYS = ("engine", "engine_version", "engine_options", "engine_command", "model", "model_sha256",
               "workload", "environment_info", "sampler", "source")


def _downsample(xs: list[Any], ys: list[Any]) -> tuple[list[float], list[float | None]]:
    step = max(1, len(xs) // MAX_POINTS)
    return [float(x) for x in xs[::step]], [None if y is None else float(y) for y in ys[::step]]


def _timelines(st: Store, runs: Sequence[StoredRun]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in TIMELINE_COLUMNS}
    for r in runs:
        s = st.series(r.run_id)
        if not s:
            continue
        cols = s.get("columns", {})
        t = cols.get("t_s") or []
        for c in TIMELINE_COLUMNS:
            ys = cols.get(c) or []
            if t and any(y is not None for y in ys):
                xs, vs = _downsample(t, ys)
                out[c].append({"run_id": r.run_id, "environment": r.environment, "t_s": xs, "values": vs,
                               "marks": s.get("marks", {})})
    return {c: v for c, v in out.items() if v}


def _ledger(st: Store, runs: Sequence[StoredRun], envs: Sequence[str]) -> dict[str, Any] | None:
    try:
        from memgap.analysis.ledger import CATEGORIES, run_ledger
    except ImportError:  # the explain work is not there: leave the section out
        return None
    bars = []
    for env in envs:
        sums: dict[str, list[int]] = defaultdict(list)
        n = 0
        for r in runs:
            if r.environment != env or r.status != "ok":
                continue
            try:
                led = run_ledger(r.record, st.series(r.run_id), at="peak")
            except Exception:  # noqa: BLE001 - an old or odd record: no ledger for it
                continue
            if not led.measured:
                continue
            n += 1
            for c in led.categories:
                if c.bytes is not None:
                    sums[c.key].append(c.bytes)
        if n:
            bars.append({"environment": env, "runs": n,
                         "categories": {t: sum(sums[k]) / len(sums[k]) for k, t in CATEGORIES if sums.get(k)}})
    return {"at": "peak", "bars": bars} if bars else None


def _configurations(runs: Sequence[StoredRun]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in runs:
        cfg = {k: r.record.get(k) for k in CONFIG_KEYS if r.record.get(k) is not None}
        cfg["environment"] = r.environment
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = {**cfg, "runs": []}
        seen[key]["runs"].append(r.run_id)
    return list(seen.values())


def _studies(st: Store, runs: Sequence[StoredRun]) -> list[dict[str, Any]]:
    from memgap.experiment import Experiment
    from memgap.study import study_outcome

    out = []
    for sid in sorted({r.study_id for r in runs if r.study_id}):
        stored = st.study(sid)
        if stored is None:
            continue
        exp = Experiment.model_validate(stored["plan"])
        o = study_outcome(exp, st)
        rows = st.study_runs(sid)
        out.append({
            "study_id": sid, "name": exp.study.name, "experiment_path": stored["experiment_path"],
            "iterations": exp.study.iterations, "max_iterations": exp.study.max_iterations,
            "alpha": exp.study.alpha, "boundary": exp.study.boundary, "seed": exp.study.seed,
            "page_cache": exp.study.page_cache,
            "metrics": [{"name": m.name, "margin": m.margin} for m in exp.metrics],
            "runs_finished": o.runs_finished, "runs_planned_fixed": o.runs_planned_fixed,
            "interrupted": sum(r["status"] == "interrupted" for r in rows),
            "groups": [{"model": g.model, "variant": g.variant, "blocks_run": g.blocks_run,
                        "settled": g.settled, "verdicts": g.verdicts} for g in o.groups],
            "order": [{"block": r["block"], "environment": r["cell"]["environment"], "status": r["status"],
                       "cooldown_s": ((r["actions"] or {}).get("cooldown") or {}).get("waited_s"),
                       "page_cache": ((r["actions"] or {}).get("page_cache") or {}).get("policy")}
                      for r in rows],
        })
    return out


def build_report(st: Store, runs: Sequence[StoredRun], comparison: Mapping[str, Any], *,
                 title: str = "memgap report") -> dict[str, Any]:
    _, excluded, variants = study_annotations(st)
    skip = set(excluded)
    runs = [r for r in runs if r.run_id not in skip]
    by_model: dict[str, list[StoredRun]] = defaultdict(list)
    for r in runs:
        by_model[group_name(r, variants)].append(r)
    models = []
    for model in sorted(by_model):
        rs = by_model[model]
        envs = baseline_first([r.environment for r in rs])
        ok = [r for r in rs if r.status == "ok"]
        intervals = {}
        for name in INTERVAL_METRICS:
            m = BY_NAME[name]
            rows = []
            for env in envs:
                vals = [m.read(r.record) for r in ok if r.environment == env]
                s = summarize(vals)
                if s.n:
                    rows.append({"environment": env, "n": s.n, "mean": s.mean, "sd": s.sd, "ci95": mean_ci(vals)})
            if rows:
                intervals[name] = rows
        models.append({
            "model": model,
            "environments": envs,
            "runs": {e: {"ok": sum(r.environment == e for r in ok), "all": sum(r.environment == e for r in rs)}
                     for e in envs},
            "timelines": _timelines(st, ok),
            "intervals": intervals,
            "ledger": _ledger(st, rs, envs),
            "comparisons": [g for g in comparison.get("groups", []) if g["model"] == model],
            "configurations": _configurations(rs),
        })
    return {
        "title": title,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "store": str(st.path),
        "selectors": comparison.get("selectors", []),
        "alpha": comparison.get("alpha"),
        "margin_relative": comparison.get("margin_relative"),
        "models": models,
        "findings": comparison.get("findings", []),
        "studies": _studies(st, runs),
        "sweeps": _sweeps(st, runs),
    }


def _sweeps(st: Store, runs: Sequence[StoredRun]) -> dict[str, list[dict[str, Any]]]:
    from memgap.analysis.sweep_curves import sweeps_in_store  # memgap sweep's runs: one curve per KV budget

    return sweeps_in_store(st, runs)
