"""Equivalence margins: which one a verdict used, and where it came from.

A study declares a margin per primary metric (``[[metrics]] margin = "25%"`` or an absolute
value in the metric's unit) and keeps it in the store with its plan (``studies.plan``). A
report or a comparison of that study's runs uses the study's margin for those metrics, so
the study table and the comparison table judge one question against one margin; every
other metric gets the margin given on the command line (``--margin``, 5% by default).
Each verdict carries the margin it applied (``Margin.to_dict``), and the reports print it
beside the verdict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from memgap.analysis.metrics import BY_NAME
from memgap.experiment import PrimaryMetric
from memgap.store import Store, StoredRun

DEFAULT_SOURCE = "--margin"


@dataclass(frozen=True)
class Margin:
    """``relative``: a fraction of the baseline's mean; ``absolute``: in the metric's unit.
    Exactly one is set. ``source``: ``--margin``, or ``study NAME``."""

    relative: float | None
    absolute: float | None
    source: str = DEFAULT_SOURCE

    def bound(self, baseline_mean: float) -> float:
        """The half-width of the equivalence interval, in the metric's unit."""
        if self.absolute is not None:
            return float(self.absolute)
        return (self.relative or 0.0) * abs(baseline_mean)

    def describe(self, metric: str | None = None) -> str:
        """``±25% (study mine)``, ``±0 B (study mine)``, ``±5% (--margin)``."""
        if self.absolute is not None:
            m = BY_NAME.get(metric or "")
            width = m.format(self.absolute) if m is not None else f"{self.absolute:g}"
        else:
            width = f"{100 * (self.relative or 0.0):g}%"
        return f"±{width} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {"relative": self.relative, "absolute": self.absolute, "source": self.source}


def as_margin(value: float | Margin) -> Margin:
    """A bare fraction is the command line's relative margin."""
    return value if isinstance(value, Margin) else Margin(relative=float(value), absolute=None)


def declared_margins(plan: Mapping[str, Any], source: str) -> dict[str, Margin]:
    """The margins a stored study plan declares, by metric name (an entry that no longer
    validates, e.g. a metric since renamed, declares nothing)."""
    out: dict[str, Margin] = {}
    for entry in plan.get("metrics") or []:
        try:
            pm = PrimaryMetric.model_validate(entry)
        except ValidationError:
            continue
        rel = pm.relative
        out[pm.name] = Margin(relative=rel, absolute=None if rel is not None else float(pm.margin), source=source)
    return out


def study_margins(st: Store, runs: Iterable[StoredRun]) -> dict[str, dict[str, Margin]]:
    """``{study_id: {metric: Margin}}`` for the studies the runs belong to."""
    out: dict[str, dict[str, Margin]] = {}
    for sid in sorted({r.study_id for r in runs if r.study_id}):
        stored = st.study(sid)
        if stored is None:  # a sweep, or an imported study: no declared margins
            continue
        plan = stored.get("plan") or {}
        name = (plan.get("study") or {}).get("name") or sid
        out[sid] = declared_margins(plan, f"study {name}")
    return out


def margins_for(runs: Iterable[StoredRun], declared: Mapping[str, Mapping[str, Margin]] | None) -> dict[str, Margin]:
    """The declared margin of each metric that applies to a set of runs: every run belongs
    to a study that declares that metric, and they all declare the same margin. A metric
    the studies disagree on, or runs outside any study, keep the command line's margin."""
    if not declared:
        return {}
    runs = list(runs)
    if not runs or any(r.study_id not in declared for r in runs):
        return {}
    per_study = [declared[str(r.study_id)] for r in runs]
    names = set.intersection(*(set(d) for d in per_study))
    out = {}
    for name in sorted(names):
        found = {(d[name].relative, d[name].absolute) for d in per_study}
        if len(found) == 1:
            sources = sorted({d[name].source for d in per_study})
            first = per_study[0][name]
            out[name] = Margin(first.relative, first.absolute, ", ".join(sources))
    return out
