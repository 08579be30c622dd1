"""Parsing and printing of sizes and durations. Canonical units are bytes and seconds;
conversion happens only at the edges (parsing user input, printing)."""

from __future__ import annotations

import re

from memgap.errors import UsageError

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(text: str, *, what: str = "size") -> int:
    """``'37.26GiB'`` -> bytes. Accepts decimal (kB, MB, GB) and binary (KiB, MiB, GiB)
    suffixes and plain numbers in any float notation (``1e9``). Raises UsageError."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"{what}: cannot read {text!r} as a size (examples: 512MiB, 37.26GiB, 1e9)")
    number, unit = m.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise UsageError(f"{what}: unknown unit {unit!r} in {text!r} (use B, kB, MB, GB, KiB, MiB, GiB, TiB)")
    value = float(number) * factor
    if value < 0:
        raise UsageError(f"{what}: {text!r} is negative")
    return int(round(value))


def format_bytes(n: int | float | None, *, precision: int = 1) -> str:
    """Binary units for people; ``None`` prints as a dash, never as 0."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    v = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            if unit == "B":
                return f"{sign}{int(v)} B"
            return f"{sign}{v:.{precision}f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


def format_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"
