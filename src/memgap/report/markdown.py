"""The report as Markdown: the same sections as the HTML page, tables instead of charts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

from memgap.report.capacity_section import capacity_markdown
from memgap.report.text import (
    COMPARISON_HEAD,
    STUDY_HEAD,
    VERDICT_HEAD,
    answer_heading,
    answer_paragraph,
    comparison_rows,
    fmt_metric,
    intro,
    ledger_rows,
    runs_line,
    study_paragraphs,
    study_rows,
    verdict_rows,
)

SWEEP_COLUMNS = ("ctx_size", "parallel", "load", "status", "output_tokens_per_s", "goodput_per_s", "ttft_p50_s",
                 "e2e_p50_s", "engine_waiting_peak", "run_id")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[object]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def answer_lines(answers: list[Mapping[str, Any]]) -> list[str]:
    out = ["## The answer", ""]
    if not answers:
        out += ["No two environments to compare: the answer needs runs of at least two.", ""]
    for a in answers:
        out += [f"### {answer_heading(a)}", "", answer_paragraph(a), ""]
        rows = verdict_rows(a)
        if rows:
            out += _table(VERDICT_HEAD, rows)
        out += [f"- {n}" for n in a.get("notes", [])]
        out += [""] if a.get("notes") else []
    return out


def study_lines(s: Mapping[str, Any]) -> list[str]:
    out = [f"## Study {s['name']}", ""]
    for para in study_paragraphs(s):
        out.append("".join(f"**{t}**" if strong else t for t, strong in para))
    out.append("")
    rows = study_rows(s)
    if rows:
        out += _table(STUDY_HEAD, rows)
    return out


def model_lines(m: Mapping[str, Any], default_margin: float | None) -> list[str]:
    out = [f"## Model {m['model']}", "", runs_line(m) + ".", ""]
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
        out += _table(COMPARISON_HEAD, comparison_rows(g, default_margin))
    if m["ledger"]:
        out += [f"### Memory ledger at {m['ledger']['at']} (mean of runs)", "",
                "The run's own memory first, then what lay outside the run (context).", ""]
        head, rows = ledger_rows(m["ledger"])
        out += _table(head, rows)
    if m["timelines"]:
        out += ["Memory timelines: see the HTML report.", ""]
    elif not m.get("selection"):
        out += ["No memory samples for these runs (imported results carry none).", ""]
    if m["configurations"]:
        out += ["### Configuration", ""]
    for cfg in m["configurations"]:
        out += ["```json", json.dumps(cfg, indent=2, default=str), "```", ""]
    return out


def sweep_lines(sw: Mapping[str, Any]) -> list[str]:
    out = [f"## Sweep {sw['sweep_id']}", ""]
    if sw.get("slo_text"):
        out += [f"SLO: {sw['slo_text']}", ""]
    k = sw.get("knees") or {}
    if k.get("compared"):
        lo, hi = k["compared"]
        out += [f"Where the curves of ctx {lo} and ctx {hi} part:"]
        out += [f"- {metric}: {'never (within 20%)' if at is None else f'from load {at:g}'}"
                for metric, at in (k.get("parting") or {}).items()]
        out.append("")
    rows = [["-" if r.get(c) is None else f"{r[c]:.3g}" if isinstance(r.get(c), float) else r.get(c)
             for c in SWEEP_COLUMNS] for r in sw.get("points", [])]
    return out + _table(list(SWEEP_COLUMNS), rows)


class MarkdownReporter:
    """The report (``memgap.analysis.report_data.build_report``) as Markdown."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.report = report

    def render(self, stream: TextIO) -> None:
        rep = self.report
        out = [f"# {rep['title']}", "",
               f"Generated {rep['generated_at']} from `{rep['store']}`"
               + (f", selection: {', '.join(rep['selectors'])}" if rep["selectors"] else "") + ".", ""]
        out += answer_lines(rep.get("answers", []))
        out += [intro(rep), ""]
        for s in rep["studies"]:
            out += study_lines(s)
        for m in rep["models"]:
            out += model_lines(m, rep.get("margin_relative"))
        for sw in rep.get("sweeps", []):
            out += sweep_lines(sw)
        for c in rep.get("capacities", []):
            out += capacity_markdown(c)
        out += ["## Findings", ""]
        if not rep["findings"]:
            out += ["No quality problems found.", ""]
        for f in rep["findings"]:
            out.append(f"- **{f['severity']}** `{f['check']}`: {f['message']}  \n  advice: {f['advice']}")
        out.append("")
        stream.write("\n".join(out))
