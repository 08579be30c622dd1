"""The words and table rows every format shows alike (pure): the HTML and Markdown
renderers take them from here and only escape and mark them up their own way, so both
say the same thing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memgap.analysis.margins import Margin
from memgap.analysis.metrics import BY_NAME

# A paragraph of text as (text, emphasised) segments, which each format escapes and marks
# its own way.
Segments = list[tuple[str, bool]]

COMPARISON_HEAD = ["metric", "a", "b", "difference", "95% CI", "p (Welch)", "p (Holm)", "Hedges g", "verdict",
                   "margin applied"]
COMPARISON_VERDICT_COL = 8
STUDY_HEAD = ["group", "comparison", "verdict", "margin applied", "pairs", "blocks", "settled"]
STUDY_VERDICT_COL = 2
VERDICT_HEAD = ["hypothesis", "differs?", "explains the KV difference?", "verdict", "why"]
VERDICT_COL = 3


def fmt_metric(name: str, v: float | None) -> str:
    return BY_NAME[name].format(v) if name in BY_NAME else ("-" if v is None else f"{v:.4g}")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def fmt_bytes(v: float | None) -> str:
    return fmt_metric("kv_cache_bytes", v)


def yes_no(v: bool | None) -> str:
    return "unknown" if v is None else "yes" if v else "no"


def margin_text(rule: Mapping[str, Any] | None, metric: str, default_relative: float | None = None) -> str:
    """``±25% (study mine)``: the margin a verdict applied (a report rendered from an older
    file, without the rule, falls back to the report's own margin)."""
    if rule:
        return Margin(rule.get("relative"), rule.get("absolute"), str(rule.get("source") or "")).describe(metric)
    return "-" if default_relative is None else Margin(default_relative, None).describe(metric)


def intro(rep: Mapping[str, Any]) -> str:
    """How the comparison's verdicts were reached, and which margins they applied."""
    declared = rep.get("margins_declared") or {}
    studies = "; a study's primary metrics use the margins the study declared" if declared else ""
    return (f"Verdicts: Holm-corrected Welch test at alpha {rep.get('alpha')}; equivalent when the 95% interval of "
            f"the difference lies within the margin shown beside each verdict: "
            f"±{100 * (rep.get('margin_relative') or 0):g}% of the baseline mean (--margin){studies}.")


# -- the answer ---------------------------------------------------------------------------------


def answer_heading(a: Mapping[str, Any]) -> str:
    """``qwen72b: docker vs native (10 vs 10 runs)``; two selections need no group name."""
    pair = f"{a['b']} vs {a['a']} ({a['runs']['b']} vs {a['runs']['a']} runs)"
    return pair if a["group"] == f"{a['a']} vs {a['b']}" else f"{a['group']}: {pair}"


def answer_paragraph(a: Mapping[str, Any]) -> str:
    if a.get("answer") is None:
        return f"explain could not weigh these runs: {a.get('error') or 'no answer'}"
    return str(a["answer"]["text"])


def verdict_rows(a: Mapping[str, Any]) -> list[list[object]]:
    return [[v["hypothesis"], yes_no(v["differs"]), yes_no(v["explains_kv"]), v["verdict"], v["why"]]
            for v in a.get("verdicts", [])]


# -- the comparison and the study -----------------------------------------------------------------


def comparison_rows(group: Mapping[str, Any], default_relative: float | None = None) -> list[list[object]]:
    rows = []
    for m in group["metrics"]:
        n, d = m["metric"], m["difference"]
        ci = d["ci95"]
        rows.append([
            n, f"{fmt_metric(n, m['a']['mean'])} ± {fmt_metric(n, m['a']['sd'])} (n={m['a']['n']})",
            f"{fmt_metric(n, m['b']['mean'])} ± {fmt_metric(n, m['b']['sd'])} (n={m['b']['n']})",
            fmt_metric(n, d["mean"]) + (f" ({100 * d['relative']:+.1f}%)" if d["relative"] is not None else ""),
            f"[{fmt_metric(n, ci[0])}, {fmt_metric(n, ci[1])}]" if ci else "-",
            fmt_p(m["p_value"]), fmt_p(m["p_holm"]),
            "-" if m["effect_size"] is None else f"{m['effect_size']:+.2f}", m["verdict"],
            margin_text(m.get("margin_rule"), n, default_relative)
            + (f"; {m['verdict_source']}" if m.get("verdict_source") else ""),
        ])
    return rows


def study_paragraphs(s: Mapping[str, Any]) -> list[Segments]:
    """A study's design and order, the same words in every format."""
    if s["iterations"] == "auto":
        design: Segments = [(f"Sequential design (iterations = \"auto\", {s['boundary']} boundary, "
                             f"alpha {s['alpha']}): ", False), (f"{s['runs_finished']} runs", True)]
        if all(g["settled"] for g in s["groups"]):
            design += [(f" reached the verdicts, where {s['max_iterations']} per cell would have taken ", False),
                       (str(s["runs_planned_fixed"]), True), (".", False)]
        else:
            design.append((f" so far and the verdicts are not all settled (at most {s['runs_planned_fixed']} "
                           "runs); run the experiment again to continue.", False))
    else:
        design = [(f"Fixed design: {s['iterations']} iterations per cell; {s['runs_finished']} of "
                   f"{s['runs_planned_fixed']} runs finished.", False)]
    order = " ".join(f"{o['block']}:{o['environment']}" for o in s["order"])
    return [design, [(f"Order: randomized blocks, seed {s['seed']}; page cache: {s['page_cache']}; "
                      f"interrupted attempts redone: {s['interrupted']}. Run order: {order}", False)]]


def study_rows(s: Mapping[str, Any]) -> list[list[object]]:
    return [[f"{g['model']} / {g['variant']}", name, v["verdict"], v.get("margin_text", v.get("margin")), v["n"],
             g["blocks_run"], "yes" if g["settled"] else "no"]
            for g in s["groups"] for name, v in g["verdicts"].items()]


# -- the ledger -----------------------------------------------------------------------------------


def ledger_rows(ledger: Mapping[str, Any]) -> tuple[list[str], list[list[object]]]:
    """The ledger at peak as a table: the run's own categories and their sum first, then
    what lay outside the run, the unexplained rest and the host's used memory."""
    bars = ledger["bars"]
    head = ["category", *[f"{b['environment']} (n={b['runs']})" for b in bars]]
    own, outside = ledger["own_titles"], ledger["outside_titles"]
    rows: list[list[object]] = [[c, *[fmt_bytes(b["own"].get(c)) for b in bars]] for c in own]
    rows.append(["the run's own memory", *[fmt_bytes(b["own_bytes"]) for b in bars]])
    rows += [[f"outside the run: {c}", *[fmt_bytes(b["outside"].get(c)) for b in bars]] for c in outside]
    rows.append([ledger["unexplained_title"], *[fmt_bytes(b["unexplained_bytes"]) for b in bars]])
    rows.append(["host used memory (MemTotal - MemFree)", *[fmt_bytes(b["total_bytes"]) for b in bars]])
    return head, rows


def runs_line(m: Mapping[str, Any]) -> str:
    return "Runs: " + ", ".join(f"{e} {c['ok']} ok of {c['all']}" for e, c in m["runs"].items())
