"""The report as Markdown (renders the dict of ``memgap.report.build``)."""

from __future__ import annotations

import json
from typing import Any

from memgap.analysis.metrics import BY_NAME


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def fmt_metric(name: str, v: float | None) -> str:
    return BY_NAME[name].format(v) if name in BY_NAME else ("-" if v is None else f"{v:.4g}")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def comparison_rows(group: dict[str, Any]) -> list[list[object]]:
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
        ])
    return rows


COMPARISON_HEAD = ["metric", "a", "b", "difference", "95% CI", "p (Welch)", "p (Holm)", "Hedges g", "verdict"]


# A paragraph of text as (text, emphasised) segments, which each format escapes and marks
# its own way.
Segments = list[tuple[str, bool]]
STUDY_HEAD = ["group", "comparison", "verdict", "pairs", "margin", "blocks", "settled"]


def study_paragraphs(s: dict[str, Any]) -> list[Segments]:
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


def study_rows(s: dict[str, Any]) -> list[list[object]]:
    return [[f"{g['model']} / {g['variant']}", name, v["verdict"], v["n"], v["margin"], g["blocks_run"],
             "yes" if g["settled"] else "no"] for g in s["groups"] for name, v in g["verdicts"].items()]


def study_lines(s: dict[str, Any]) -> list[str]:
    out = [f"## Study {s['name']}", ""]
    for para in study_paragraphs(s):
        out.append("".join(f"**{t}**" if strong else t for t, strong in para))
    out.append("")
    rows = study_rows(s)
    if rows:
        out += _table(STUDY_HEAD, rows)
    return out


def render_markdown(rep: dict[str, Any]) -> str:
    out = [f"# {rep['title']}", "",
           f"Generated {rep['generated_at']} from `{rep['store']}`"
           + (f", selection: {', '.join(rep['selectors'])}" if rep["selectors"] else "") + ".", ""]
    for s in rep["studies"]:
        out += study_lines(s)
    for m in rep["models"]:
        out += [f"## Model {m['model']}", ""]
        out.append("Runs: " + ", ".join(f"{e} {c['ok']} ok of {c['all']}" for e, c in m["runs"].items()) + ".")
        out.append("")
        if m["intervals"]:
            out += ["### KV cache, throughput and peaks (mean, 95% interval)", ""]
            rows = []
            for name, rs in m["intervals"].items():
                for r in rs:
                    ci = r["ci95"]
                    rows.append([name, r["environment"], r["n"], fmt_metric(name, r["mean"]),
                                 f"[{fmt_metric(name, ci[0])}, {fmt_metric(name, ci[1])}]" if ci else "-"])
            out += _table(["metric", "environment", "n", "mean", "95% CI"], rows)
        for g in m["comparisons"]:
            if g["b"] is None:
                continue
            out += [f"### {g['b']} vs {g['a']}", ""]
            out += _table(COMPARISON_HEAD, comparison_rows(g))
        if m["ledger"]:
            bars = m["ledger"]["bars"]
            cats = list(dict.fromkeys(c for b in bars for c in b["categories"]))
            out += [f"### Memory ledger at {m['ledger']['at']} (mean of runs)", ""]
            out += _table(["category", *[f"{b['environment']} (n={b['runs']})" for b in bars]],
                          [[c, *[fmt_metric("kv_cache_bytes", b["categories"].get(c)) for b in bars]] for c in cats])
        if m["timelines"]:
            out += ["Memory timelines: see the HTML report.", ""]
        else:
            out += ["No memory samples for these runs (imported results carry none).", ""]
        out += ["### Configuration", ""]
        for cfg in m["configurations"]:
            out += ["```json", json.dumps(cfg, indent=2, default=str), "```", ""]
    out += ["## Findings", ""]
    if not rep["findings"]:
        out += ["No quality problems found.", ""]
    for f in rep["findings"]:
        out.append(f"- **{f['severity']}** `{f['check']}`: {f['message']}  \n  advice: {f['advice']}")
    out.append("")
    return "\n".join(out)
