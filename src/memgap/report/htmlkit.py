"""What every memgap HTML page shares: the Content-Security-Policy that forbids every
request, the escape every piece of text goes through, tables and the page frame."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def e(x: object) -> str:
    """Escaped text, quotes included (safe in element content and in attribute values)."""
    return escape(str(x), quote=True)


def table(head: Sequence[str], rows: Sequence[Sequence[object]], *, verdict_col: int | None = None) -> str:
    """A table of escaped cells; the cell in ``verdict_col`` is classed by its verdict."""
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = f' class="{e(c)}"' if i == verdict_col else ""
            cells.append(f"<td{cls}>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def page(title: str, style: str, body: Sequence[str]) -> str:
    """A whole self-contained page: inline style, no scripts, nothing fetched."""
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">'
            f"<title>{e(title)}</title><style>{style}</style></head><body>")
    return head + "\n".join(body) + "\n</body></html>\n"
