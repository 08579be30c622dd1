"""Selecting stored runs: ``RUN_ID`` (or a unique prefix of one) or ``key=value[,key=value]``.

One grammar for every command that reads the store (explain, compare, report)::

    3f2a9c1b04de                     one run, by id or by a unique prefix of its id
    environment=sandbox              every run whose column equals the value
    model=deepseek,environment=native,status=ok

Keys are the store's indexed columns and ``host`` (``FIELDS``; ``host`` is the run's host
as a study on a cluster names it, else its hostname: ``memgap.hostinfo.host_name``). Values are taken verbatim after
stripping surrounding spaces; a value may not contain ``,`` or ``=``. The parser is pure;
``select_runs`` is the thin reader over a :class:`memgap.store.Store`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from memgap.errors import UsageError
from memgap.hostinfo import host_name
from memgap.store import Store, StoredRun

FIELDS: tuple[str, ...] = (
    "environment", "model", "engine", "label", "status", "study_id", "source", "run_id", "host",
)

# For a command's help text: what a selector argument accepts.
HELP = ("a run id (or a unique prefix of one), or key=value[,key=value] over "
        + ", ".join(FIELDS) + " (e.g. model=deepseek,environment=native)")

# Run ids are memgap's 12 hex digits or an importer's readable ids (letters, digits, . _ : -).
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")


@dataclass(frozen=True)
class Selector:
    """A parsed selector. Exactly one of ``run_id`` and ``where`` is set."""

    text: str
    run_id: str | None = None
    where: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def describe(self) -> str:
        if self.run_id is not None:
            return f"run {self.run_id}"
        return ", ".join(f"{k}={v}" for k, v in self.where.items())


def parse_selector(text: str) -> Selector:
    """Parse one selector; raises UsageError naming what is wrong and how to write it."""
    s = text.strip()
    if not s:
        raise UsageError("empty run selector (give a run id or key=value[,key=value])")
    if "=" not in s:
        if not _RUN_ID_RE.match(s):
            raise UsageError(
                f"{text!r} is neither a run id nor key=value[,key=value] "
                f"(keys: {', '.join(FIELDS)})"
            )
        return Selector(text=text, run_id=s)
    where: dict[str, str] = {}
    for part in s.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise UsageError(f"in selector {text!r}: {part.strip()!r} is not key=value")
        if "=" in value:
            raise UsageError(f"in selector {text!r}: {part.strip()!r} has more than one '='")
        if key not in FIELDS:
            raise UsageError(f"in selector {text!r}: unknown key {key!r} (keys: {', '.join(FIELDS)})")
        if not value:
            raise UsageError(f"in selector {text!r}: {key}= has no value")
        if key in where and where[key] != value:
            raise UsageError(f"in selector {text!r}: {key} given twice ({where[key]!r} and {value!r})")
        where[key] = value
    return Selector(text=text, where=MappingProxyType(where))


def select_runs(store: Store, selector: Selector | str, *, default_status: str | None = None) -> list[StoredRun]:
    """Runs the selector picks, in creation order; never empty (UsageError instead).

    ``default_status`` (e.g. ``'ok'``) filters a key=value selector that does not name a
    status itself, so failed runs are left out unless asked for; a run id always selects
    that run."""
    sel = parse_selector(selector) if isinstance(selector, str) else selector
    if sel.run_id is not None:
        return [_by_id(store, sel.run_id)]
    where = dict(sel.where)
    if default_status is not None and "status" not in where:
        where["status"] = default_status
    host = where.pop("host", None)  # in the record, not a column: filtered here
    runs = store.runs(where=where)
    if host is not None:
        runs = [r for r in runs if host_name(r.record) == host]
    if not runs:
        extra = f" and status={default_status}" if default_status and "status" not in sel.where else ""
        known = _known_values(store, [k for k in sel.where if k != "run_id"])
        raise UsageError(f"no runs match {sel.describe()}{extra} in {store.path}{known}")
    return runs


def _by_id(store: Store, run_id: str) -> StoredRun:
    try:
        return store.get(run_id)
    except UsageError:
        pass
    matches = [r for r in store.runs() if r.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run {run_id!r} in {store.path} (and no run id starts with it)")
    ids = ", ".join(r.run_id for r in matches[:5])
    more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
    raise UsageError(f"run id prefix {run_id!r} is ambiguous: {ids}{more}")


def _known_values(store: Store, keys: list[str]) -> str:
    """A hint listing the values the store holds for the keys the selector used."""
    if not keys:
        return ""
    runs = store.runs()
    parts = []
    for k in keys:
        vals = sorted({str(host_name(r.record) if k == "host" else getattr(r, k, None) if k != "source"
                           else r.record.get("source", "memgap")) for r in runs})
        if vals:
            parts.append(f"{k}: {', '.join(vals[:10])}")
    return f" (the store has {'; '.join(parts)})" if parts else " (the store is empty)"
