"""The report as one self-contained HTML file: inline CSS, charts as inline SVG, no
scripts, no fonts, no images from anywhere, and a Content-Security-Policy that forbids
every request. Every piece of text from the store is escaped."""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

from memgap.analysis.metrics import BY_NAME
from memgap.report.markdown import (
    COMPARISON_HEAD,
    STUDY_HEAD,
    comparison_rows,
    fmt_metric,
    fmt_p,
    study_paragraphs,
    study_rows,
)
from memgap.report.svg import Line, colour, interval_chart, line_chart, stacked_bars
from memgap.units import format_bytes

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.different { color: #b00; font-weight: bold; } .equivalent { color: #070; font-weight: bold; }
.inconclusive { color: #a60; }
.error { color: #b00; } .warning { color: #a60; } .info { color: #555; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.chart { margin: 0.5em 0 1em; }
"""
COLUMN_TITLES = {"process_rss_bytes": "engine process RSS", "cgroup_usage_bytes": "cgroup usage",
                 "host_used_bytes": "host used (MemTotal - MemFree)"}


def _e(x: object) -> str:
    return escape(str(x), quote=True)


def _table(head: list[str], rows: list[list[object]], *, verdict_col: int | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = f' class="{_e(c)}"' if i == verdict_col else ""
            cells.append(f"<td{cls}>{_e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _bytes_fmt(v: float) -> str:
    return format_bytes(v, precision=1)


def _formatter(name: str) -> Callable[[float], str]:
    return lambda v: fmt_metric(name, v)


def _env_colours(envs: list[str]) -> dict[str, str]:
    return {e: colour(i) for i, e in enumerate(envs)}


def _study(s: dict[str, Any]) -> str:
    out = [f"<h2>Study {_e(s['name'])}</h2>"]
    for para in study_paragraphs(s):
        out.append("<p>" + "".join(f"<strong>{_e(t)}</strong>" if strong else _e(t) for t, strong in para) + "</p>")
    rows = study_rows(s)
    if rows:
        out.append(_table(STUDY_HEAD, rows, verdict_col=2))
    return "\n".join(out)


def _model(m: dict[str, Any]) -> str:
    envs = m["environments"]
    cols = _env_colours(envs)
    out = [f"<h2>Model {_e(m['model'])}</h2>",
           "<p>Runs: " + _e(", ".join(f"{e} {c['ok']} ok of {c['all']}" for e, c in m["runs"].items())) + "</p>"]
    if m["timelines"]:
        out.append("<h3>Memory over time, environments overlaid (one line per run)</h3>")
        for col, runs in m["timelines"].items():
            lines = [Line(r["environment"], cols.get(r["environment"], "#888"), r["t_s"], r["values"]) for r in runs]
            out.append('<div class="chart">' + line_chart(lines, title=COLUMN_TITLES.get(col, col),
                                                          x_label="seconds since engine start",
                                                          y_fmt=_bytes_fmt) + "</div>")
    else:
        out.append("<p>No memory samples for these runs (imported results carry none).</p>")
    if m["ledger"]:
        bars = m["ledger"]["bars"]
        cats = list(dict.fromkeys(c for b in bars for c in b["categories"]))
        palette = {c: colour(i) for i, c in enumerate(cats)}
        data = [(f"{b['environment']} (n={b['runs']})",
                 [(c, max(0.0, float(b["categories"].get(c) or 0))) for c in cats]) for b in bars]
        out.append(f"<h3>Memory ledger at {_e(m['ledger']['at'])} (mean of runs)</h3>")
        out.append('<div class="chart">' + stacked_bars(data, title="where the memory was", fmt=_bytes_fmt,
                                                        colours=palette) + "</div>")
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
        out.append(f"<h3>{_e(g['b'])} vs {_e(g['a'])}</h3>")
        out.append(_table(COMPARISON_HEAD, comparison_rows(g), verdict_col=8))
    out.append("<h3>Configuration</h3>")
    for cfg in m["configurations"]:
        out.append("<pre>" + _e(json.dumps(cfg, indent=2, default=str)) + "</pre>")
    return "\n".join(out)


def _pct(x: float | None) -> str:
    return f"{100 * (x or 0):g}"


def render_html(rep: dict[str, Any]) -> str:
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
            f"<title>{_e(rep['title'])}</title><style>{STYLE}</style></head><body>")
    body = [f"<h1>{_e(rep['title'])}</h1>",
            f"<p>Generated {_e(rep['generated_at'])} from <code>{_e(rep['store'])}</code>"
            + (f", selection: {_e(', '.join(rep['selectors']))}" if rep["selectors"] else "")
            + f". Verdicts: Holm-corrected Welch test at alpha {_e(rep['alpha'])}; equivalent when the "
              f"95% interval of the difference lies within ±{_e(_pct(rep['margin_relative']))}% "
              "of the baseline.</p>"]
    body += [_study(s) for s in rep["studies"]]
    body += [_model(m) for m in rep["models"]]
    if rep.get("sweeps"):
        from memgap.report.sweep_html import report_section

        body += [report_section(sid, rows) for sid, rows in rep["sweeps"].items()]
    body.append("<h2>Findings</h2>")
    if not rep["findings"]:
        body.append("<p>No quality problems found.</p>")
    else:
        body.append("<ul>" + "".join(
            f'<li><span class="{_e(f["severity"])}">{_e(f["severity"])}</span> <code>{_e(f["check"])}</code>: '
            f"{_e(f['message'])}<br><em>advice:</em> {_e(f['advice'])}</li>" for f in rep["findings"]) + "</ul>")
    return head + "\n".join(body) + "\n</body></html>\n"


__all__ = ["CSP", "render_html", "fmt_p"]
