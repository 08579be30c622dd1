"""The report as one self-contained HTML file: inline CSS, charts as inline SVG, no
scripts, no fonts, no images from anywhere, and a Content-Security-Policy that forbids
every request. Every piece of text from the store is escaped (``htmlkit.e``).

The page opens with the answer (explain's paragraph and both questions of every
hypothesis, for every pair of environments compared), then the studies, the groups,
the sweeps and the findings."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from memgap.analysis.metrics import BY_NAME
from memgap.report.capacity_section import capacity_html
from memgap.report.htmlkit import CSP, e, page, table
from memgap.report.svg import Line, colour, interval_chart, line_chart, stacked_bars
from memgap.report.sweep_html import sweep_section
from memgap.report.text import (
    COMPARISON_HEAD,
    COMPARISON_VERDICT_COL,
    STUDY_HEAD,
    STUDY_VERDICT_COL,
    VERDICT_COL,
    VERDICT_HEAD,
    answer_heading,
    answer_paragraph,
    comparison_rows,
    fmt_metric,
    intro,
    runs_line,
    study_paragraphs,
    study_rows,
    verdict_rows,
)
from memgap.units import format_bytes

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.different { color: #b00; font-weight: bold; } .equivalent { color: #070; font-weight: bold; }
.inconclusive { color: #a60; }
.supported { color: #070; font-weight: bold; } .contradicted { color: #b00; font-weight: bold; }
.error { color: #b00; } .warning { color: #a60; } .info { color: #555; }
p.answer { font-size: 1.1em; line-height: 1.45; border-left: 4px solid #1f77b4; padding: 0.3em 0.8em;
           background: #f5f9fc; }
.notes { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.chart { margin: 0.5em 0 1em; }
"""
COLUMN_TITLES = {"process_rss_bytes": "engine process RSS", "cgroup_usage_bytes": "cgroup usage",
                 "host_used_bytes": "host used (MemTotal - MemFree)"}
RUN_OWN = "the run's own memory"


def _bytes_fmt(v: float) -> str:
    return format_bytes(v, precision=1)


def _formatter(name: str) -> Callable[[float], str]:
    return lambda v: fmt_metric(name, v)


def _answers(answers: list[Mapping[str, Any]]) -> list[str]:
    out = ['<section id="answer"><h2>The answer</h2>']
    if not answers:
        out.append("<p>No two environments to compare: the answer needs runs of at least two.</p>")
    for a in answers:
        out.append(f"<h3>{e(answer_heading(a))}</h3>")
        out.append(f'<p class="answer">{e(answer_paragraph(a))}</p>')
        rows = verdict_rows(a)
        if rows:
            out.append(table(VERDICT_HEAD, rows, verdict_col=VERDICT_COL))
        if a.get("notes"):
            out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in a["notes"]) + "</ul>")
    out.append("</section>")
    return out


def _study(s: Mapping[str, Any]) -> str:
    out = [f"<h2>Study {e(s['name'])}</h2>"]
    for para in study_paragraphs(s):
        out.append("<p>" + "".join(f"<strong>{e(t)}</strong>" if strong else e(t) for t, strong in para) + "</p>")
    rows = study_rows(s)
    if rows:
        out.append(table(STUDY_HEAD, rows, verdict_col=STUDY_VERDICT_COL))
    return "\n".join(out)


def _ledger(led: Mapping[str, Any]) -> list[str]:
    """Two charts: the run's own memory on its own scale, then the run as one segment of
    the host's used memory with what lay outside it (the context, often far larger)."""
    bars = led["bars"]
    own = led["own_titles"]
    palette = {c: colour(i) for i, c in enumerate(own)}
    data = [(f"{b['environment']} (n={b['runs']})", [(c, max(0.0, float(b["own"].get(c) or 0))) for c in own])
            for b in bars]
    context_cats = [RUN_OWN, *led["outside_titles"], led["unexplained_title"]]
    context_palette = {RUN_OWN: "#1f77b4", **{c: ("#c7c7c7", "#9e9e9e")[i % 2] for i, c in enumerate(led["outside_titles"])},
                       led["unexplained_title"]: "#f0d0d0"}
    context = [(f"{b['environment']} (n={b['runs']})",
                [(RUN_OWN, max(0.0, float(b["own_bytes"])))]
                + [(c, max(0.0, float(b["outside"].get(c) or 0))) for c in led["outside_titles"]]
                + [(led["unexplained_title"], max(0.0, float(b["unexplained_bytes"] or 0)))]) for b in bars]
    return [
        f"<h3>Memory ledger at {e(led['at'])} (mean of runs)</h3>",
        "<p>The run's own memory, on its own scale:</p>",
        '<div class="chart">' + stacked_bars(data, title="the run's own memory", fmt=_bytes_fmt,
                                             colours=palette) + "</div>",
        "<p>The same run in context: its own memory (first segment) within the host's used memory; "
        "the grey segments lay outside the run.</p>",
        '<div class="chart">' + stacked_bars(context, title="host used memory (MemTotal - MemFree): the run and "
                                             "what lay outside it", fmt=_bytes_fmt,
                                             colours={c: context_palette[c] for c in context_cats}) + "</div>",
    ]


def _model(m: Mapping[str, Any], default_margin: float | None) -> str:
    envs = m["environments"]
    cols = {env: colour(i) for i, env in enumerate(envs)}
    out = [f"<h2>Model {e(m['model'])}</h2>", f"<p>{e(runs_line(m))}</p>"]
    if m["timelines"]:
        out.append("<h3>Memory over time, environments overlaid (one line per run)</h3>")
        for col, runs in m["timelines"].items():
            lines = [Line(r["environment"], cols.get(r["environment"], "#888"), r["t_s"], r["values"]) for r in runs]
            out.append('<div class="chart">' + line_chart(lines, title=COLUMN_TITLES.get(col, col),
                                                          x_label="seconds since engine start",
                                                          y_fmt=_bytes_fmt) + "</div>")
    elif not m.get("selection"):
        out.append("<p>No memory samples for these runs (imported results carry none).</p>")
    if m["ledger"]:
        out += _ledger(m["ledger"])
    if m["intervals"]:
        out.append("<h3>KV cache, throughput and peaks (mean and 95% interval)</h3>")
        for name, rows in m["intervals"].items():
            mt = BY_NAME[name]
            points = [(f"{r['environment']} (n={r['n']})", cols.get(r["environment"], "#888"), r["mean"],
                     tuple(r["ci95"]) if r["ci95"] else None) for r in rows]
            out.append('<div class="chart">' + interval_chart(points, title=f"{name} ({mt.description})",
                                                              fmt=_formatter(name)) + "</div>")
    for g in m["comparisons"]:
        if g["b"] is None:
            continue
        out.append(f"<h3>{e(g['b'])} vs {e(g['a'])}</h3>")
        out.append(table(COMPARISON_HEAD, comparison_rows(g, default_margin), verdict_col=COMPARISON_VERDICT_COL))
    if m["configurations"]:
        out.append("<h3>Configuration</h3>")
    for cfg in m["configurations"]:
        out.append("<pre>" + e(json.dumps(cfg, indent=2, default=str)) + "</pre>")
    return "\n".join(out)


class HtmlReporter:
    """The report (``memgap.analysis.report_data.build_report``) as one HTML page."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.report = report

    def render(self, stream: TextIO) -> None:
        rep = self.report
        body = [f"<h1>{e(rep['title'])}</h1>",
                f"<p>Generated {e(rep['generated_at'])} from <code>{e(rep['store'])}</code>"
                + (f", selection: {e(', '.join(rep['selectors']))}" if rep["selectors"] else "") + ".</p>"]
        body += _answers(rep.get("answers", []))
        body.append(f"<p>{e(intro(rep))}</p>")
        body += [_study(s) for s in rep["studies"]]
        body += [_model(m, rep.get("margin_relative")) for m in rep["models"]]
        for sw in rep.get("sweeps", []):
            body.append(sweep_section(sw))
        for c in rep.get("capacities", []):
            body.append(capacity_html(c))
        body.append("<h2>Findings</h2>")
        if not rep["findings"]:
            body.append("<p>No quality problems found.</p>")
        else:
            body.append("<ul>" + "".join(
                f'<li><span class="{e(f["severity"])}">{e(f["severity"])}</span> <code>{e(f["check"])}</code>: '
                f"{e(f['message'])}<br><em>advice:</em> {e(f['advice'])}</li>" for f in rep["findings"]) + "</ul>")
        stream.write(page(rep["title"], STYLE, body))


__all__ = ["CSP", "HtmlReporter"]
