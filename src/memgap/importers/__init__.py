"""Other tools' results and logs, brought into the store as runs.

A small registry: each importer is a module that defines ``NAME``, ``DESCRIPTION`` and a
pure ``parse(text, *, origin) -> list[ImportedRun]``; add one line to ``IMPORTERS`` to
register a new one. Imported records have the same top-level keys as memgap's own
(``blank_record``), with every figure the other tool did not measure set to ``None``,
so compare, explain and report read both alike. ``source`` names the importer."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from memgap.errors import StoreError, UsageError
from memgap.record import RECORD_VERSION, RunRecord
from memgap.store import Store

# name -> module. Modules are imported on first use, so a broken importer breaks only itself.
IMPORTERS: dict[str, str] = {
    "benchmark-spark": "memgap.importers.benchmark_spark",
    "trtllm-log": "memgap.importers.trtllm_log",
}

# The run record's top-level keys come from the model (memgap.record.RunRecord), which
# runner.build_record and every importer write through.
RECORD_KEYS: tuple[str, ...] = tuple(k for k in RunRecord.model_fields if k not in ("source", "source_info"))


def blank_record() -> dict[str, Any]:
    """A record with every key present and nothing measured (None; empty where a
    container is expected, so readers need no special case). Importers fill what the
    other tool measured; ``run_id``, ``created_at``, ``environment``, ``engine`` and
    ``status`` must be set before the record validates."""
    return {**dict.fromkeys(RECORD_KEYS), **RunRecord.model_construct().model_dump(mode="json"),
            "record_version": RECORD_VERSION, "source": None, "source_info": None}


@dataclass(frozen=True)
class ImportedRun:
    record: dict[str, Any]
    engine_log: str | None = None
    series: dict[str, Any] | None = None
    requests: Sequence[dict[str, Any]] = field(default_factory=tuple)


@dataclass(frozen=True)
class ImportSummary:
    source: str
    files: tuple[str, ...]
    added: tuple[str, ...]  # run ids written
    skipped: tuple[str, ...]  # run ids already in the store (not overwritten without force)


def importer_module(source: str) -> ModuleType:
    mod = IMPORTERS.get(source)
    if mod is None:
        raise UsageError(f"unknown import source {source!r} (known: {', '.join(sorted(IMPORTERS))})")
    return importlib.import_module(mod)


def parse_files(source: str, paths: Sequence[Path]) -> list[ImportedRun]:
    """Parse every file with the named importer (pure but for reading the files)."""
    module = importer_module(source)
    runs: list[ImportedRun] = []
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read {p}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise UsageError(f"{p} is not UTF-8 text: {e}") from e
        runs.extend(module.parse(text, origin=str(p)))
    seen: set[str] = set()
    for r in runs:
        rid = r.record["run_id"]
        if rid in seen:
            raise UsageError(f"{source}: two runs with id {rid} in {', '.join(map(str, paths))}")
        seen.add(rid)
    return runs


def import_files(store: Store, source: str, paths: Sequence[Path], *, force: bool = False,
                 skip_existing: bool = False) -> ImportSummary:
    """Parse the files and add their runs to the store. A run already there is an error
    (StoreError) unless ``force`` (overwrite) or ``skip_existing`` (leave it) is given; the
    check is done for all runs before any is written."""
    runs = parse_files(source, paths)
    existing = {r.record["run_id"] for r in runs if _exists(store, r.record["run_id"])}
    if existing and not (force or skip_existing):
        first = sorted(existing)[0]
        raise StoreError(
            f"{len(existing)} of {len(runs)} runs are already in {store.path} (e.g. {first}); "
            "use --force to overwrite them or --skip-existing to leave them"
        )
    added, skipped = [], []
    for r in runs:
        rid = r.record["run_id"]
        if rid in existing and not force:
            skipped.append(rid)
            continue
        store.add_run(r.record, engine_log=r.engine_log, requests=r.requests, series=r.series, force=force)
        added.append(rid)
    return ImportSummary(source=source, files=tuple(map(str, paths)), added=tuple(added), skipped=tuple(skipped))


def _exists(store: Store, run_id: str) -> bool:
    try:
        store.get(run_id)
    except UsageError:
        return False
    return True
