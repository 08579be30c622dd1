"""A capacity search as a section of ``memgap report`` (pure): per arm the boundary with
its interval beside plan's prediction (and why they differ), the points tried with the
engine's queue, KV usage and preemptions at each, the ratio between arms both ways, and
the runs used against a grid's. Everything comes computed
(``memgap.analysis.capacity_outcome``); nothing is derived here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memgap.report.htmlkit import e, table

SUMMARY_HEAD = ["arm", "KV tokens", "boundary", "interval", "runs", "stopped", "predicted", "agrees"]
POINT_SIGNALS = ["engine waiting peak", "KV usage peak", "preempted"]


def _f(v: Any, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt)


def _interval(est: Mapping[str, Any]) -> str:
    if not est["runs"]:
        return "-"
    low = "below the ladder" if est["low"] is None else _f(est["low"], "g")
    return f"{low} .. {_f(est['high'], 'g')}{'+' if est['open_above'] else ''}"


def summary_rows(c: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for a in c["arms"]:
        est, pred, diag = a["estimate"], a["prediction"] or {}, a["diagnosis"]
        agrees = "-" if diag.get("agrees") is None else ("yes" if diag["agrees"] else "no")
        if diag.get("tolerance") is not None:
            agrees += f" (±{diag['tolerance']:.3g})"
        rows.append([a["arm"], _f(pred.get("kv_cache_tokens"), "d"), _f(est["boundary"], "g"), _interval(est),
                     str(est["runs"]), a["reason"] if a["done"] else f"not finished (next: {a['reason']})",
                     _f(pred.get("predicted"), "d") + (f" ({pred['binds']})" if pred.get("binds") else ""),
                     agrees])  # fmt: skip
    return rows


def point_table(arm: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    rungs = arm["estimate"]["rungs"]
    keys = list(dict.fromkeys(k for r in rungs for k in r["observed"]))
    head = ["load", "runs", "meets", "P(meets)", *keys, *POINT_SIGNALS]
    rows = []
    for r in rungs:
        s = r["signals"]
        rows.append([_f(r["load"], "g"), str(r["runs"]), "yes" if r["meets"] else "no", _f(r["pass_probability"], ".2f"),
                     *(_f(r["observed"].get(k)) for k in keys), _f(s.get("engine_waiting_peak"), "g"),
                     "-" if s.get("kv_usage_peak") is None else f"{100 * s['kv_usage_peak']:.0f}%",
                     _f(s.get("preemptions"), "g")])  # fmt: skip
    return head, rows


def runs_line(c: Mapping[str, Any]) -> str:
    g = c["grid"]
    return (f"{c['runs']} runs adaptive; a fixed grid of the same resolution ({g['rungs_per_arm']} loads per arm): "
            f"{g['once']} once each, {g['with_repeats']} with {c['settings']['search']['repeats']} repeats each")


def notes(arm: Mapping[str, Any]) -> list[str]:
    d = arm["diagnosis"]
    return [f"{arm['arm']}: {d[k]}" for k in ("why", "evidence") if d.get(k)]


def heading(c: Mapping[str, Any]) -> str:
    kind = c["settings"]["search"]["ladder"]["kind"]
    return (f"Capacity {c['capacity_id']}: highest {kind} meeting {c['slo']} "
            f"({c['tokens_per_request']} tokens per request)")


def capacity_markdown(c: Mapping[str, Any]) -> list[str]:
    def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
        cell = [str(x).replace("|", "\\|") for x in head]
        return ["| " + " | ".join(cell) + " |", "|" + "---|" * len(head),
                *("| " + " | ".join(str(x).replace("|", "\\|") for x in r) + " |" for r in rows), ""]

    out = [f"## {heading(c)}", ""]
    out += md_table(SUMMARY_HEAD, summary_rows(c))
    for s in c["sentences"]:
        out += [s, ""]
    for a in c["arms"]:
        out += [f"### {a['arm']}: points tried", ""]
        out += md_table(*point_table(a))
        out += [f"- {n}" for n in notes(a)] + ([""] if notes(a) else [])
    return out + [runs_line(c), ""]


def capacity_html(c: Mapping[str, Any]) -> str:
    parts = [f"<h2>{e(heading(c))}</h2>", table(SUMMARY_HEAD, summary_rows(c))]
    parts += [f"<p>{e(s)}</p>" for s in c["sentences"]]
    for a in c["arms"]:
        parts.append(f"<h3>{e(a['arm'])}: points tried</h3>")
        parts.append(table(*point_table(a)))
        parts += [f"<p>{e(n)}</p>" for n in notes(a)]
    parts.append(f"<p>{e(runs_line(c))}</p>")
    return "\n".join(parts)
