"""Everything a report shows, aggregated from the store (reads only; no rendering here).

The report opens with the answer: for every group of runs it compares (model and variant,
or the two selections ``memgap report A B`` names), the first environment against each
other one, explain's paragraph and both questions of every hypothesis (does it differ,
does it explain the KV difference). Then the studies (with the margins they declared),
per group the timelines, the ledger at peak (the run's own memory apart from what lay
outside it), the intervals, the comparison (each verdict with the margin it applied) and
the configurations, the sweeps, the capacity searches and the findings. ``memgap.report`` renders this dict;
``REPORT_SCHEMA`` names its layout."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from memgap.analysis.capacity_outcome import capacity_citation, capacity_results
from memgap.analysis.compare import baseline_first, group_name, study_annotations
from memgap.analysis.explain import RunInput, explain
from memgap.analysis.ledger import CATEGORIES, OUTSIDE_CATEGORIES, TITLES, run_ledger
from memgap.analysis.margins import Margin, study_margins
from memgap.analysis.metrics import BY_NAME
from memgap.analysis.stats import mean_ci, summarize
from memgap.analysis.study_outcome import study_outcome
from memgap.analysis.sweep_curves import sweep_results
from memgap.experiment import Experiment
from memgap.store import Store, StoredRun

# The layout of the dict below; bump and list the change here.
#   1 -- answers first (group, a, b, runs, answer, verdicts, notes); the ledger's bars split
#        into the run's own categories and what lay outside the run; every comparison
#        row and study verdict with the margin it applied; a comparison row of a metric
#        the study decided carries the study's verdict (verdict_source; the interval's
#        own as verdict_compare) (2026-12).
#   2 -- capacities: each capacity search among the runs (analysis.capacity_outcome: per
#        arm the boundary, its interval, the points tried with the engine's signals, plan's
#        prediction and the diagnosis; the ratios between arms both ways) (2026-12).
#   3 -- answers[].answer.capacity: the capacity search a pair's two sides are arms of,
#        cited in one sentence at the end of the answer's text (explain version 3) (2026-12).
REPORT_SCHEMA = "memgap.report/3"

TIMELINE_COLUMNS = ("process_rss_bytes", "cgroup_usage_bytes", "host_used_bytes")
INTERVAL_METRICS = ("kv_cache_bytes", "output_tokens_per_s", "engine_peak_bytes", "process_rss_peak_bytes")
MAX_POINTS = 240
CONFIG_KEYS = ("engine", "engine_version", "engine_options", "engine_command", "model", "model_sha256",
               "workload", "environment_info", "sampler", "source")
UNEXPLAINED = TITLES["unexplained"]

Series = Mapping[str, Mapping[str, Any] | None]  # run_id -> its stored series (or None)


def _downsample(xs: list[Any], ys: list[Any]) -> tuple[list[float], list[float | None]]:
    step = max(1, len(xs) // MAX_POINTS)
    return [float(x) for x in xs[::step]], [None if y is None else float(y) for y in ys[::step]]


def _timelines(series: Series, runs: Sequence[StoredRun]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in TIMELINE_COLUMNS}
    for r in runs:
        s = series.get(r.run_id)
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


def _ledger(series: Series, runs: Sequence[StoredRun], envs: Sequence[str]) -> dict[str, Any] | None:
    """The mean ledger at peak per environment, its categories split into the run's own
    and what lay outside the run (which at peak can be nearly all of the host's used
    memory, and would leave the run's own categories as slivers on one scale)."""
    outside = {TITLES[k] for k in OUTSIDE_CATEGORIES}
    bars: list[dict[str, Any]] = []
    measured: set[str] = set()  # titles of the run's own categories some environment measured
    for env in envs:
        sums: dict[str, list[int]] = defaultdict(list)
        n = 0
        for r in runs:
            if r.environment != env or r.status != "ok":
                continue
            try:
                led = run_ledger(r.record, series.get(r.run_id), at="peak")
            except Exception:  # noqa: BLE001 - an old or odd record: no ledger for it
                continue
            if not led.measured:
                continue
            n += 1
            for c in led.categories:
                if c.bytes is not None:
                    sums[c.key].append(c.bytes)
        if not n:
            continue
        cats = {t: sum(sums[k]) / len(sums[k]) for k, t in CATEGORIES if sums.get(k)}
        own = {t: v for t, v in cats.items() if t not in outside and t != UNEXPLAINED}
        out = {t: v for t, v in cats.items() if t in outside}
        measured |= set(own)
        bars.append({"environment": env, "runs": n, "categories": cats, "own": own, "outside": out,
                     "own_bytes": sum(own.values()), "outside_bytes": sum(out.values()),
                     "unexplained_bytes": cats.get(UNEXPLAINED), "total_bytes": sum(cats.values())})
    if not bars:
        return None
    own_titles = [t for _, t in CATEGORIES if t in measured]  # in ledger order
    return {"at": "peak", "bars": bars, "own_titles": own_titles,
            "outside_titles": [TITLES[k] for k in OUTSIDE_CATEGORIES], "unexplained_title": UNEXPLAINED}


def _answer(st: Store, group: str, a: str, a_runs: Sequence[StoredRun], b: str, b_runs: Sequence[StoredRun],
            series: Series) -> dict[str, Any] | None:
    """Explain's answer and verdicts for one pair of run sets (ok runs only); it cites the
    capacity search the two sets are arms of, if they are."""
    oka, okb = [r for r in a_runs if r.status == "ok"], [r for r in b_runs if r.status == "ok"]
    ia = [RunInput(r.record, series.get(r.run_id)) for r in oka]
    ib = [RunInput(r.record, series.get(r.run_id)) for r in okb]
    if not ia or not ib:
        return None
    head = {"group": group, "a": a, "b": b, "runs": {"a": len(ia), "b": len(ib)}}
    try:
        ex = explain(a, ia, b, ib, capacity=capacity_citation(st, oka, okb))
    except Exception as e:  # noqa: BLE001 - an odd record must not cost the rest of the report
        return {**head, "answer": None, "verdicts": [], "notes": [], "error": f"{type(e).__name__}: {e}"}
    return {"group": group, "a": a, "b": b, "runs": {"a": len(ia), "b": len(ib)},
            "answer": ex.answer.to_dict(), "verdicts": ex.verdicts(), "notes": list(ex.notes)}


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


def _studies(st: Store, runs: Sequence[StoredRun], declared: Mapping[str, Mapping[str, Margin]]) -> list[dict[str, Any]]:
    out = []
    for sid in sorted({r.study_id for r in runs if r.study_id}):
        stored = st.study(sid)
        if stored is None:
            continue
        exp = Experiment.model_validate(stored["plan"])
        o = study_outcome(exp, st)
        rows = st.study_runs(sid)
        margins = declared.get(sid, {})
        groups = []
        for g in o.groups:
            verdicts = {}
            for key, v in g.verdicts.items():
                m = margins.get(v.get("metric", ""))
                verdicts[key] = {**v, "margin_rule": m.to_dict() if m else None,
                                 "margin_text": m.describe(v.get("metric")) if m else str(v.get("margin"))}
            groups.append({"model": g.model, "variant": g.variant, "host": getattr(g, "host", None),
                           "blocks_run": g.blocks_run, "settled": g.settled, "verdicts": verdicts})
        out.append({
            "study_id": sid, "name": exp.study.name, "experiment_path": stored["experiment_path"],
            "iterations": exp.study.iterations, "max_iterations": exp.study.max_iterations,
            "alpha": exp.study.alpha, "boundary": exp.study.boundary, "seed": exp.study.seed,
            "page_cache": exp.study.page_cache,
            "metrics": [{"name": m.name, "margin": m.margin} for m in exp.metrics],
            "runs_finished": o.runs_finished, "runs_planned_fixed": o.runs_planned_fixed,
            "interrupted": sum(r["status"] == "interrupted" for r in rows),
            "groups": groups,
            "order": [{"block": r["block"], "environment": r["cell"]["environment"], "status": r["status"],
                       "cooldown_s": ((r["actions"] or {}).get("cooldown") or {}).get("waited_s"),
                       "page_cache": ((r["actions"] or {}).get("page_cache") or {}).get("policy")}
                      for r in rows],
        })
    return out


def _intervals(ok: Sequence[StoredRun], envs: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
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
    return intervals


StudyGroup = tuple[tuple[str, str, str, str | None], Mapping[str, Any]]  # (study, model, variant, host), group


def _study_verdicts_by_run(st: Store, studies: Sequence[Mapping[str, Any]]) -> dict[str, StudyGroup]:
    """run_id -> the study group (model, variant, host) the run was made for, and its verdicts."""
    groups = {(s["study_id"], g["model"], g["variant"], g.get("host")): g for s in studies for g in s["groups"]}
    out: dict[str, StudyGroup] = {}
    for row in st.study_runs():
        if row["status"] != "finished" or row["run_id"] is None:
            continue
        cell = row["cell"] or {}
        key = (row["study_id"], cell.get("model"), cell.get("variant", "base"), cell.get("host"))
        if key in groups:
            out[row["run_id"]] = (key, groups[key])
    return out


def _one_verdict(groups: Sequence[dict[str, Any]], runs: Sequence[StoredRun],
                 by_run: Mapping[str, StudyGroup]) -> list[dict[str, Any]]:
    """The comparison's groups, where every run is of one study group, with that study's
    settled verdict in place of the interval's for each metric the study decided: one
    question, one verdict, at the study's margin (the interval's stays as verdict_compare)."""
    ok = [r.run_id for r in runs if r.status == "ok"]
    keys = {by_run[r][0] if r in by_run else None for r in ok}
    if len(keys) != 1 or None in keys:
        return list(groups)
    study = by_run[ok[0]][1]
    out = []
    for g in groups:
        rows = []
        for m in g["metrics"]:
            sv = study["verdicts"].get(f"{g['b']} vs {g['a']}: {m['metric']}")
            if sv is not None and sv["verdict"] != "continue":
                m = {**m, "verdict_compare": m["verdict"], "verdict": sv["verdict"],
                     "verdict_source": "the study's sequential test"}
            rows.append(m)
        out.append({**g, "metrics": rows})
    return out


def build_report(st: Store, runs: Sequence[StoredRun], comparison: Mapping[str, Any], *,
                 title: str = "memgap report",
                 sides: tuple[tuple[str, Sequence[StoredRun]], tuple[str, Sequence[StoredRun]]] | None = None,
                 ) -> dict[str, Any]:
    """``sides``: the two selections of ``memgap report A B``, answered against each
    other; without them every group's first environment is answered against each other."""
    _, excluded, variants = study_annotations(st)
    skip = set(excluded)
    runs = [r for r in runs if r.run_id not in skip]
    declared = study_margins(st, runs)
    studies = _studies(st, runs, declared)
    by_run = _study_verdicts_by_run(st, studies)
    series: dict[str, Mapping[str, Any] | None] = {r.run_id: st.series(r.run_id) for r in runs}
    by_model: dict[str, list[StoredRun]] = defaultdict(list)
    for r in runs:
        by_model[group_name(r, variants)].append(r)
    models: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for model in sorted(by_model):
        rs = by_model[model]
        envs = baseline_first([r.environment for r in rs])
        ok = [r for r in rs if r.status == "ok"]
        if sides is None:
            for other in envs[1:]:
                ans = _answer(st, model, envs[0], [r for r in rs if r.environment == envs[0]], other,
                              [r for r in rs if r.environment == other], series)
                if ans is not None:
                    answers.append(ans)
        models.append({
            "model": model,
            "environments": envs,
            "runs": {e: {"ok": sum(r.environment == e for r in ok), "all": sum(r.environment == e for r in rs)}
                     for e in envs},
            "timelines": _timelines(series, ok),
            "intervals": _intervals(ok, envs),
            "ledger": _ledger(series, rs, envs),
            "comparisons": _one_verdict([g for g in comparison.get("groups", []) if g["model"] == model], rs, by_run),
            "configurations": _configurations(rs),
        })
    if sides is not None:
        (la, ra), (lb, rb) = sides
        ans = _answer(st, f"{la} vs {lb}", la, [r for r in ra if r.run_id not in skip], lb,
                      [r for r in rb if r.run_id not in skip], series)
        answers += [ans] if ans is not None else []
        models += _selection_groups(comparison, {str(g["model"]) for g in models})
    return {
        "schema": REPORT_SCHEMA,
        "title": title,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "store": str(st.path),
        "selectors": comparison.get("selectors", []),
        "alpha": comparison.get("alpha"),
        "margin_relative": comparison.get("margin_relative"),
        "margins_declared": {sid: {k: m.to_dict() for k, m in ms.items()} for sid, ms in declared.items()},
        "answers": answers,
        "models": models,
        "findings": comparison.get("findings", []),
        "studies": studies,
        "sweeps": sweep_results(st, runs),
        "capacities": capacity_results(st, runs),
    }


def _selection_groups(comparison: Mapping[str, Any], known: set[str]) -> list[dict[str, Any]]:
    """The comparison of two selections (``memgap report A B``) as a group of its own."""
    return [{"model": g["model"], "environments": [g["a"], g["b"]],
             "runs": {k: {"ok": v, "all": v} for k, v in g["runs"].items()}, "timelines": {}, "intervals": {},
             "ledger": None, "comparisons": [g], "configurations": [], "selection": True}
            for g in comparison.get("groups", []) if g["model"] not in known]
