"""A sweep's curves in HTML (pure): one inline SVG chart per metric with one line per KV
budget, the table of points, and where the curves part -- as a page of its own
(``memgap sweep --html``, :class:`SweepHtmlReporter`) and as a section of ``memgap
report`` (:func:`sweep_section`). No scripts, no external references, every text escaped.
The knees come computed (``memgap.analysis.sweep_curves``): nothing is derived here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from memgap.analysis.sweep_curves import curves
from memgap.report.htmlkit import e, page
from memgap.report.svg import Line, colour, line_chart
from memgap.units import format_seconds

STYLE = ("body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222}"
         "table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:2px 6px}"
         "th{background:#f3f3f3}.chart{margin:.5em 0 1em}")

# (row key, chart title, y format)
CHARTS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("output_tokens_per_s", "output tokens/s", lambda v: f"{v:.0f}"),
    ("goodput_per_s", "goodput (requests/s meeting every SLO)", lambda v: f"{v:.2f}"),
    ("request_throughput_per_s", "requests/s (all successful)", lambda v: f"{v:.2f}"),
    ("ttft_p50_s", "TTFT p50 (from scheduled send)", format_seconds),
    ("e2e_p50_s", "end-to-end latency p50", format_seconds),
    ("engine_waiting_peak", "engine queue peak (requests waiting, from /metrics)", lambda v: f"{v:g}"),
    ("engine_waiting_mean", "engine queue mean during the workload", lambda v: f"{v:.1f}"),
)


def budget_name(ctx: int | None, rows: Sequence[Mapping[str, Any]]) -> str:
    if ctx is None:
        return "engine default"
    par = next((r.get("parallel") for r in rows if r.get("ctx_size") == ctx and r.get("parallel")), None)
    return f"ctx {ctx}" + (f" ({par} slots)" if par else "")


def chart(rows: Sequence[Mapping[str, Any]], metric: str, title: str, fmt: Callable[[float], str], x_label: str) -> str:
    lines = []
    for i, (ctx, pts) in enumerate(sorted(curves(rows, metric).items(), key=lambda kv: (kv[0] is None, kv[0] or 0))):
        lines.append(Line(budget_name(ctx, rows), colour(i), [x for x, _ in pts], [y for _, y in pts]))
    return line_chart(lines, title=title, x_label=x_label, y_fmt=fmt)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


TABLE_COLUMNS = (
    "ctx_size", "parallel", "load", "status", "requests_ok", "requests_errored", "output_tokens_per_s",
    "goodput_per_s", "ttft_p50_s", "e2e_p50_s", "engine_waiting_peak", "engine_waiting_mean", "run_id",
)  # fmt: skip


def render_section(result: Mapping[str, Any], *, heading: str = "h2") -> list[str]:
    """The sweep's knee, charts, points and failures as HTML fragments (escaped)."""
    rows: list[Mapping[str, Any]] = list(result.get("points", []))
    x_label = "request rate (1/s)" if any(r.get("request_rate_per_s") is not None for r in rows) else "concurrency"
    sub = "h3" if heading == "h2" else "h4"
    parts: list[str] = []
    knees = result.get("knees") or {}
    if knees.get("compared"):
        lo, hi = knees["compared"]
        parts.append(f"<{sub}>Where the curves of ctx {e(lo)} and ctx {e(hi)} part</{sub}><ul>")
        for metric, at in (knees.get("parting") or {}).items():
            where = "never (within 20%)" if at is None else f"from {x_label} {at:g}"
            parts.append(f"<li>{e(metric)}: {e(where)}</li>")
        parts.append("</ul>")
    sat = knees.get("saturation") or {}
    if sat:
        parts.append("<p>Throughput stops scaling: " + "; ".join(
            f"ctx {e(k)}: {'not within the sweep' if v is None else e(f'after {x_label} {v:g}')}" for k, v in sat.items()
        ) + "</p>")
    for metric, title, fmt in CHARTS:
        if metric == "goodput_per_s" and not result.get("slo_text"):
            continue  # no SLO: goodput would only repeat throughput
        if any(r.get(metric) is not None for r in rows):
            parts.append(f'<div class="chart">{chart(rows, metric, title, fmt, x_label)}</div>')
    parts.append(f"<{sub}>Points</{sub}><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in TABLE_COLUMNS) + "</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{e(_cell(r.get(c)))}</td>" for c in TABLE_COLUMNS) + "</tr>")
    parts.append("</table>")
    failed = [r for r in rows if r.get("status") != "ok" or r.get("requests_errored")]
    if failed:
        parts.append(f"<{sub}>Failures and errors</{sub}><ul>")
        for r in failed:
            errs = ", ".join(f"{k} x{n}" for k, n in (r.get("errors_by_kind") or {}).items())
            parts.append(f"<li>{e(r.get('run_id'))} ({e(r.get('ctx_size'))}, load {e(r.get('load'))}): "
                         f"{e(r.get('failure') or '')} {e(errs)}</li>")
        parts.append("</ul>")
    sat_search = result.get("saturation_search")
    if sat_search:
        parts.append(f"<{sub}>Saturation search</{sub}><p>highest rate meeting the SLOs: "
                     f"{e(sat_search.get('best_rate_per_s'))} /s (bounded: {e(sat_search.get('bounded'))})</p>")
    return parts


def sweep_section(result: Mapping[str, Any]) -> str:
    """A sweep as a section of ``memgap report`` (``memgap.analysis.sweep_curves.sweep_results``)."""
    return "\n".join([f"<h2>Sweep {e(result['sweep_id'])}</h2>",
                      "<p>One run per point, each with a fresh engine; the engine queue is its own /metrics"
                      + (f"; SLO {e(result['slo_text'])}" if result.get("slo_text") else "") + ".</p>",
                      *render_section(result)])


class SweepHtmlReporter:
    """``memgap sweep --html``: what ``memgap sweep --json`` prints (points, knees, slo, sweep_id, ...)."""

    def __init__(self, result: Mapping[str, Any]) -> None:
        self.result = result

    def render(self, stream: TextIO) -> None:
        result = self.result
        title = f"memgap sweep {result.get('sweep_id', '')}"
        stream.write(page(title, STYLE, [
            f"<h1>{e(title)}</h1>",
            f"<p>environment {e(result.get('environment', '-'))}; SLO {e(result.get('slo_text') or 'none')}; "
            f"store {e(result.get('store', '-'))}. Each point is one run with a fresh engine.</p>",
            *render_section(result),
        ]))
