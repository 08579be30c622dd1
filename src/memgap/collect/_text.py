"""Shared helpers for the line formats of procfs and cgroupfs."""

from __future__ import annotations

import os
from pathlib import Path

from memgap.collect.errors import CollectorParseError

KIB = 1024


def parse_int(token: str, source: str, line: int, *, signed: bool = False) -> int:
    """Strict ASCII integer: ``int()`` alone would also take ``'1_0'``, ``' 7'`` and
    Unicode digits, none of which the kernel writes, so accepting them would hide a
    misparse."""
    body = token[1:] if signed and token.startswith("-") else token
    if not body or not body.isascii() or not body.isdigit():
        raise CollectorParseError(source, line, f"expected an integer, got {token[:40]!r}")
    try:
        return int(token)
    except ValueError as e:  # more digits than int() allows (sys.int_info)
        raise CollectorParseError(source, line, f"integer too long: {token[:40]!r}...") from e


def parse_kb_fields(text: str, source: str) -> dict[str, int]:
    """``Key:   123 kB`` lines (meminfo, status, smaps_rollup) -> bytes by key.

    A value without a unit (``HugePages_Total:  0``) is a count and stays as is.
    Lines whose value is not a number raise, since every line of these files is one."""
    out: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep or not key.strip():
            raise CollectorParseError(source, lineno, f"expected 'Key: value', got {line[:60]!r}")
        out[key.strip()] = kb_value(rest, source, lineno)
    return out


def kb_value(rest: str, source: str, lineno: int) -> int:
    parts = rest.split()
    if len(parts) == 1:
        return parse_int(parts[0], source, lineno)
    if len(parts) == 2 and parts[1] == "kB":
        return parse_int(parts[0], source, lineno) * KIB
    raise CollectorParseError(
        source, lineno, f"expected '<n>' or '<n> kB', got {rest.strip()[:60]!r}"
    )


def read_optional(path: Path | str, *, dir_fd: int | None = None) -> str | None:
    """Text of a file, or None when it is absent or unreadable (``dir_fd``: ``path`` is
    relative to that open folder, as os.open takes it).

    cgroup files vanish with their cgroup (ENOENT, ENODEV), some exist only on newer
    kernels, and some are refused by configuration (kmem with ``cgroup.memory=nokmem``):
    each of those is "unknown", not an error and not 0."""
    try:
        fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)
