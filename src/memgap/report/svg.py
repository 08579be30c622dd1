"""Charts as inline SVG strings (pure): every text escaped, no external references."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from memgap.report.htmlkit import e as escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939")
Fmt = Callable[[float], str]


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass(frozen=True)
class Line:
    label: str
    colour: str
    xs: Sequence[float]
    ys: Sequence[float | None]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _t(x: float, y: float, text: str, *, anchor: str = "start", size: int = 11, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif"{extra}>{escape(text)}</text>')


def line_chart(lines: Sequence[Line], *, title: str, x_label: str, y_fmt: Fmt,
               width: int = 720, height: int = 300) -> str:
    pts = [(x, y) for ln in lines for x, y in zip(ln.xs, ln.ys, strict=False) if y is not None]
    left, right, top, bottom = 90, 170, 28, 40
    w, h = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           '<rect width="100%" height="100%" fill="#ffffff"/>', _t(left, 18, title, size=13, extra=' font-weight="bold"')]
    if not pts:
        out.append(_t(left + w / 2, top + h / 2, "no samples", anchor="middle"))
        out.append("</svg>")
        return "\n".join(out)
    x0, x1 = 0.0, max(x for x, _ in pts) or 1.0
    y0, y1 = min(0.0, min(y for _, y in pts)), max(y for _, y in pts) * 1.05 or 1.0

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return top + h - (y - y0) / (y1 - y0) * h

    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    for ty in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{sy(ty):.1f}" y2="{sy(ty):.1f}" stroke="#eee"/>')
        out.append(_t(left - 6, sy(ty) + 4, y_fmt(ty), anchor="end", size=10))
    for tx in _ticks(x0, x1):
        out.append(_t(sx(tx), top + h + 14, f"{tx:g}", anchor="middle", size=10))
    out.append(_t(left + w / 2, height - 6, x_label, anchor="middle", size=10))
    for ln in lines:
        segs: list[list[str]] = []
        cur: list[str] = []
        for x, y in zip(ln.xs, ln.ys, strict=False):
            if y is None:
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append(f"{sx(x):.1f},{sy(y):.1f}")
        if cur:
            segs.append(cur)
        for s in segs:
            out.append(f'<polyline fill="none" stroke="{ln.colour}" stroke-width="1.3" '
                       f'stroke-opacity="0.8" points="{" ".join(s)}"/>')
    seen: dict[str, str] = {}
    for ln in lines:
        seen.setdefault(ln.label, ln.colour)
    for i, (label, c) in enumerate(seen.items()):
        y = top + 10 + 16 * i
        out.append(f'<rect x="{left + w + 12}" y="{y - 8}" width="12" height="3" fill="{c}"/>')
        out.append(_t(left + w + 30, y - 3, label, size=10))
    out.append("</svg>")
    return "\n".join(out)


def interval_chart(rows: Sequence[tuple[str, str, float | None, tuple[float, float] | None]], *,
                   title: str, fmt: Fmt, width: int = 720) -> str:
    """One row per (label, colour, mean, 95% interval): a dot and a whisker."""
    left, right, top, row_h = 170, 150, 30, 26
    height = top + row_h * max(1, len(rows)) + 30
    w = width - left - right
    vals = [v for _, _, m, ci in rows for v in ([m] if m is not None else []) + (list(ci) if ci else [])]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           '<rect width="100%" height="100%" fill="#ffffff"/>', _t(10, 18, title, size=13, extra=' font-weight="bold"')]
    if not vals:
        out += [_t(left, top + 20, "no values"), "</svg>"]
        return "\n".join(out)
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad

    def sx(x: float) -> float:
        return left + (x - lo) / (hi - lo) * w

    for tx in _ticks(lo, hi, 4):
        out.append(f'<line x1="{sx(tx):.1f}" x2="{sx(tx):.1f}" y1="{top - 6}" y2="{height - 24}" stroke="#eee"/>')
        out.append(_t(sx(tx), height - 10, fmt(tx), anchor="middle", size=10))
    for i, (label, c, mean, ci) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        out.append(_t(left - 8, y + 4, label, anchor="end", size=11))
        if ci is not None:
            out.append(f'<line x1="{sx(ci[0]):.1f}" x2="{sx(ci[1]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                       f'stroke="{c}" stroke-width="2"/>')
            for e in ci:
                out.append(f'<line x1="{sx(e):.1f}" x2="{sx(e):.1f}" y1="{y - 5:.1f}" y2="{y + 5:.1f}" stroke="{c}"/>')
        if mean is not None:
            out.append(f'<circle cx="{sx(mean):.1f}" cy="{y:.1f}" r="4" fill="{c}"/>')
            out.append(_t(left + w + 8, y + 4, fmt(mean), size=10))
    out.append("</svg>")
    return "\n".join(out)


def stacked_bars(bars: Sequence[tuple[str, Sequence[tuple[str, float]]]], *, title: str, fmt: Fmt,
                 colours: dict[str, str], width: int = 720) -> str:
    """Horizontal stacked bars: (label, [(category, value >= 0)]), and a legend."""
    left, right, top, bar_h, gap = 110, 80, 30, 22, 10  # right: room for the total beside the longest bar
    cats = list(colours)
    legend_rows = math.ceil(len(cats) / 2)
    height = top + (bar_h + gap) * max(1, len(bars)) + 20 + 16 * legend_rows + 10
    w = width - left - right
    total = max((sum(v for _, v in parts) for _, parts in bars), default=0.0) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
           '<rect width="100%" height="100%" fill="#ffffff"/>', _t(10, 18, title, size=13, extra=' font-weight="bold"')]
    for i, (label, parts) in enumerate(bars):
        y = top + (bar_h + gap) * i
        out.append(_t(left - 8, y + bar_h / 2 + 4, label, anchor="end"))
        x = float(left)
        for cat, v in parts:
            bw = v / total * w
            if bw <= 0:
                continue
            out.append(f'<rect x="{x:.1f}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{colours.get(cat, "#ccc")}">'
                       f"<title>{escape(cat)}: {escape(fmt(v))}</title></rect>")
            x += bw
        out.append(_t(x + 4, y + bar_h / 2 + 4, fmt(sum(v for _, v in parts)), size=10))
    ly = top + (bar_h + gap) * max(1, len(bars)) + 10
    for j, cat in enumerate(cats):
        cx = 10 + (j % 2) * (width // 2)
        cy = ly + 16 * (j // 2)
        out.append(f'<rect x="{cx}" y="{cy}" width="10" height="10" fill="{colours[cat]}"/>')
        out.append(_t(cx + 14, cy + 9, cat, size=10))
    out.append("</svg>")
    return "\n".join(out)
