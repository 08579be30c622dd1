"""The benchmark-spark study's results (brandonrc/benchmark-spark,
``analysis/all_benchmark_results.json``): trtllm-bench runs on a DGX Spark, natively
(a chroot of the container's root filesystem) and in Docker.

Shape: ``{"models": {MODEL: {ENVIRONMENT: [run, ...]}}}``; each run has ``model_name``,
``model_id``, ``model_path``, ``iteration``, ``timestamp`` (``YYYYmmdd_HHMMSS``, the
machine's local time, zone unknown), ``start_temp_celsius``, ``end_temp_celsius``,
``exit_code``, ``throughput`` (requests/s), ``output_throughput`` (tokens/s), ``latency``,
``peak_memory`` and ``kv_cache`` (GiB, as TensorRT-LLM logged them with two decimals).

The study measured engine-level numbers only: every memory-layer figure of the record is
``None``/empty, and the GiB values are kept verbatim in ``engine_report.extra`` beside
their byte conversions."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

from memgap.errors import UsageError
from memgap.importers import ImportedRun, blank_record

NAME = "benchmark-spark"
DESCRIPTION = "benchmark-spark results JSON (trtllm-bench on DGX Spark: peak, KV cache, throughput)"
ENGINE = "trtllm"
GIB = 1024**3
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parse(text: str, *, origin: str = "<input>") -> list[ImportedRun]:
    """All runs in one results file, in file order. Raises UsageError naming the file and
    the JSON path of the first thing that is not as expected."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{origin}: not JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise UsageError(f"{origin}: not a benchmark-spark results file (no top-level 'models' object)")
    study_id = f"{NAME}:{Path(origin).stem}" if origin != "<input>" else NAME
    out: list[ImportedRun] = []
    for model, envs in doc["models"].items():
        if not isinstance(envs, dict):
            raise UsageError(f"{origin}: models.{model} is not an object of environments")
        for env, runs in envs.items():
            if not isinstance(runs, list):
                raise UsageError(f"{origin}: models.{model}.{env} is not a list of runs")
            for i, run in enumerate(runs):
                where = f"{origin}: models.{model}.{env}[{i}]"
                if not isinstance(run, dict):
                    raise UsageError(f"{where} is not an object")
                out.append(ImportedRun(record=_record(run, str(model), str(env), study_id, origin, where)))
    return out


def _record(run: dict[str, Any], model: str, env: str, study_id: str, origin: str, where: str) -> dict[str, Any]:
    stamp = _str(run, "timestamp", where, required=True)
    assert stamp is not None
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%d_%H%M%S")
    except ValueError as e:
        raise UsageError(f"{where}.timestamp: {stamp!r} is not YYYYmmdd_HHMMSS") from e
    iteration = _int(run, "iteration", where)
    exit_code = _int(run, "exit_code", where)
    env_name = _str(run, "environment", where) or env
    model_name = _str(run, "model_name", where) or model
    peak_gib = _num(run, "peak_memory", where)
    kv_gib = _num(run, "kv_cache", where)
    ok = exit_code == 0
    rec = blank_record()
    run_id = "bs-" + _SAFE.sub("_", f"{model_name}-{env_name}-{stamp}")
    rec.update({
        "run_id": run_id,
        "study_id": study_id,
        "created_at": when.isoformat(),  # local time of the study's machine; zone unknown
        "environment": env_name,
        "environment_info": {
            "name": env_name,
            "description": {"native": "chroot of the container's root filesystem",
                            "container": "Docker"}.get(env_name),
        },
        "engine": ENGINE,
        "engine_options": {"benchmark": "trtllm-bench"},
        "model": model_name,
        "status": "ok" if ok else "failed",
        "failure": None if ok else f"trtllm-bench exited with status {exit_code}",
        "engine_exit_status": exit_code,
        "request_throughput_per_s": _num(run, "throughput", where),
        "output_tokens_per_s": _num(run, "output_throughput", where),
        "source": NAME,
        "source_info": {
            "file": origin,
            "iteration": iteration,
            "timestamp_local": stamp,
            "model_id": _str(run, "model_id", where),
            "model_path": _str(run, "model_path", where),
            "start_temp_celsius": _num(run, "start_temp_celsius", where),
            "end_temp_celsius": _num(run, "end_temp_celsius", where),
            "latency": run.get("latency") if isinstance(run.get("latency"), int | float | type(None)) else None,
        },
    })
    rec["requests_ok"] = None
    rec["requests_errored"] = None
    rec["output_tokens"] = None
    rep = rec["engine_report"]
    rep["engine"] = ENGINE
    rep["peak_bytes"] = None if peak_gib is None else int(round(peak_gib * GIB))
    rep["kv_cache_bytes"] = None if kv_gib is None else int(round(kv_gib * GIB))
    rep["extra"] = {k: v for k, v in (("peak_memory_gib", peak_gib), ("kv_cache_gib", kv_gib)) if v is not None}
    return rec


def _str(run: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    v = run.get(key)
    if v is None:
        if required:
            raise UsageError(f"{where}: no {key!r}")
        return None
    if not isinstance(v, str):
        raise UsageError(f"{where}.{key}: expected a string, got {v!r}")
    return v


def _num(run: dict[str, Any], key: str, where: str) -> float | None:
    v = run.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise UsageError(f"{where}.{key}: expected a number, got {v!r}")
    return float(v)


def _int(run: dict[str, Any], key: str, where: str) -> int | None:
    v = run.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise UsageError(f"{where}.{key}: expected an integer, got {v!r}")
    return v
