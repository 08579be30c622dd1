"""Parsing and printing of sizes and durations. Canonical units are bytes and seconds;
conversion happens only at the edges (parsing user input, printing).

Two parsers, because two kinds of text carry sizes:

- :func:`parse_size` reads every size a user types (``--memory-limit``, ``--kv-budget``,
  ``--weights-bytes``, a study file's ``memory_limit``, a container's ``--memory``) with
  the one meaning users already know from ``docker run --memory``: docker/go-units
  ``RAMInBytes`` (size.go, ``parseSize(size, binaryMap)``, v0.5.0 /
  commit 737572633c "size: stop using regexp"). Docker and Podman both read their
  ``--memory``/``--shm-size`` with it. So ``512m`` is the same number of bytes
  whichever flag it is given to.
- :func:`parse_reported_size` reads figures another program printed (``docker stats``,
  ``podman stats``), where the printer decided what "MB" means; the caller says which.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from memgap.errors import UsageError

# A number as go-units accepts it (strconv.ParseFloat: "512", "1.5", ".5", "1e9"), then
# the unit. Signs are left out on purpose: a negative size is reported as such below,
# and ParseFloat's hex, "inf" and "+" forms are not sizes anyone types.
_SIZE_RE = re.compile(
    r"(?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(?P<gap>\s*)(?P<unit>[A-Za-z]*)"
)

# Longer text is no size anyone typed; the cap also keeps an exponent's digits small.
_MAX_CHARS = 64

# cgroups and docker hold limits as signed 64-bit integers.
_MAX_BYTES = 2**63 - 1

_PREFIXES = "kmgtp"  # kilo … peta, as go-units' binaryMap has them

# What a typed unit means, case-insensitive, exactly as RAMInBytes reads it: "b" or
# nothing for bytes; k, m, g, t, p, each optionally followed by "b" or "ib", all binary.
# So kB/MB/GB are 1024-based here, deliberately: a user who types "--memory 2GB" for a
# container gets 2 GiB from docker, and must get the same from every other flag.
# KiB/MiB/GiB are binary as their names say. Anyone who means 10**9 can type 1e9.
_TYPED_UNITS: dict[str, int] = {"": 1, "b": 1} | {
    p + suffix: 1024**i for i, p in enumerate(_PREFIXES, start=1) for suffix in ("", "b", "ib")
}

_TYPED_UNIT_HELP = "b, k, m, g, t, p, optionally followed by b or ib, all 1024-based as in docker run"


def parse_size(text: str, *, what: str = "size") -> int:
    """A size the user typed -> bytes, as ``docker run --memory`` reads it:
    ``512m`` = ``512MB`` = ``512MiB`` = 536870912; ``1.5g``; ``1e9``; ``100`` (bytes);
    one space may separate number and unit (``512 m``), as in go-units.

    Fractions of a byte are dropped, as go-units drops them (``int64(size)``). go-units
    multiplies float64s; this multiplies exactly. The two agree to the byte on sizes as
    people type them (tests/unit/test_units.py checks up to 9999.999g); they can part by
    a byte only where float64 rounding lands on a whole byte: past 2**53 bytes, or many
    decimals on a terabyte size. Raises UsageError, one line naming ``what`` and the text."""
    m = _SIZE_RE.fullmatch(text) if len(text) <= _MAX_CHARS else None
    if m is None:
        if text.startswith("-") and _SIZE_RE.fullmatch(text[1:]):
            raise UsageError(f"{what}: {text!r} is negative")
        raise UsageError(
            f"{what}: cannot read {text!r} as a size (a number and a unit: 512m, 1.5g, 512MiB, 1e9)"
        )
    if m["gap"] not in ("", " "):  # go-units splits at one space; "512  m" fails there
        raise UsageError(f"{what}: {text!r} has more than one space between number and unit")
    factor = _TYPED_UNITS.get(m["unit"].lower())
    if factor is None:
        raise UsageError(f"{what}: unknown unit {m['unit']!r} in {text!r} (use {_TYPED_UNIT_HELP})")
    value = _exact(m["number"], what=what, text=text) * factor
    if value > _MAX_BYTES:
        raise UsageError(f"{what}: {text!r} is too large (more than 2**63 - 1 bytes)")
    return math.floor(value)


def _exact(number: str, *, what: str, text: str) -> Fraction:
    """The decimal ``number`` (as _SIZE_RE matched it) as an exact fraction, without
    computing 10**exponent for absurd exponents ("1e999999999")."""
    mantissa, _, exponent = number.lower().partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return Fraction(0)
    power = int(exponent or 0) - len(frac)
    magnitude = len(digits) + power  # value < 10**magnitude
    if magnitude > 20:  # over 10**19 bytes before any unit: past 2**63
        raise UsageError(f"{what}: {text!r} is too large (more than 2**63 - 1 bytes)")
    if magnitude < -20:  # under 10**-20: 0 bytes even times 1024**5
        return Fraction(0)
    return Fraction(int(digits)) * Fraction(10) ** power


# What a printed unit means to the program that printed it. go-units' HumanSize (podman
# stats) prints kB/MB/GB as powers of 1000; its BytesSize (docker stats) prints
# KiB/MiB/GiB. Some programs print "GB" for 2**30 (SGLang's memory_pool.py), so the
# caller, who knows the printer, says which.
_IEC_UNITS: dict[str, int] = {"": 1, "b": 1} | {f"{p}ib": 1024**i for i, p in enumerate(_PREFIXES, 1)}


def _si_units(base: int) -> dict[str, int]:
    return {f"{p}{s}": base**i for i, p in enumerate(_PREFIXES, 1) for s in ("", "b")}


_REPORTED_UNITS = {True: _IEC_UNITS | _si_units(1000), False: _IEC_UNITS | _si_units(1024)}


def parse_reported_size(text: str, *, decimal_gb: bool, what: str = "size") -> int:
    """A size another program printed -> bytes: ``'68.54MiB'``, ``'71.44MB'``.

    KiB/MiB/GiB (any case) are binary. ``decimal_gb`` says what kB/MB/GB and bare
    k/m/g mean in this printer's text: powers of 1000 (True) or of 1024 (False).
    Rounded to the nearest byte (the text is itself a rounded figure); surrounding
    whitespace is ignored. Raises UsageError, so a caller can record ``None``."""
    s = text.strip()
    m = _SIZE_RE.fullmatch(s) if len(s) <= _MAX_CHARS else None
    if m is None:
        raise UsageError(f"{what}: cannot read {text!r} as a size")
    factor = _REPORTED_UNITS[decimal_gb].get(m["unit"].lower())
    if factor is None:
        raise UsageError(f"{what}: unknown unit {m['unit']!r} in {text!r}")
    value = float(m["number"]) * factor
    if not value <= _MAX_BYTES:  # also inf ("1e999GB")
        raise UsageError(f"{what}: {text!r} is too large (more than 2**63 - 1 bytes)")
    return round(value)


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
