"""SVG charts: escaped text, no references outside the file, values placed in range."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from memgap.report.svg import Line, interval_chart, line_chart, stacked_bars


def test_line_chart_is_valid_svg_and_escapes() -> None:
    svg = line_chart([Line("a<b", "#000", [0, 1, 2], [1.0, None, 3.0]), Line("a<b", "#000", [0, 1], [2.0, 2.5])],
                     title="t&t", x_label="s", y_fmt=lambda v: f"{v:g}")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "a&lt;b" in svg and "t&amp;t" in svg
    assert svg.count("<polyline") == 3  # the gap at None splits the first line
    assert not re.search(r"href|url\(", svg)


def test_empty_charts_say_so() -> None:
    assert "no samples" in line_chart([], title="x", x_label="s", y_fmt=str)
    assert "no values" in interval_chart([("a", "#000", None, None)], title="x", fmt=str)


def test_interval_and_stacked_bars_positions() -> None:
    svg = interval_chart([("a", "#111", 10.0, (9.0, 11.0)), ("b", "#222", 20.0, (19.0, 21.0))], title="x",
                         fmt=lambda v: f"{v:g}")
    ET.fromstring(svg)
    cx = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert len(cx) == 2 and cx[0] < cx[1]
    bars = stacked_bars([("n", [("kv", 2.0), ("w", 1.0)]), ("s", [("kv", 1.0), ("w", 1.0)])], title="x",
                        fmt=lambda v: f"{v:g}", colours={"kv": "#111", "w": "#222"})
    ET.fromstring(bars)
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="22"', bars)]
    assert abs(widths[0] - 2 * widths[1]) < 0.2 and widths[2] == widths[3]
