"""trtllm-bench (and trtllm-serve) logs: one run per file, from the memory lines
TensorRT-LLM prints while sizing its KV cache and the report trtllm-bench prints at the
end (peak, KV budget and cache, fraction, device total, throughput).

A log does not say where it ran: the environment is taken from the file's path (a
directory or name part ``native``, ``container``, ``docker``, ``podman``, ``chroot``,
``sandbox``), else ``unknown``. The start time is the first ``[MM/DD/YYYY-HH:MM:SS]``
stamp of TensorRT-LLM's Python logger (local time of that machine, zone unknown); a log
without one gets an empty ``created_at`` and says so in ``source_info``. The run id is
derived from the log's content, so importing the same file twice finds the run there."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import PurePath
from typing import Any

from memgap.engines.logs import parse_engine_log
from memgap.engines.logs._text import iter_lines
from memgap.importers import ImportedRun, blank_record

NAME = "trtllm-log"
DESCRIPTION = "trtllm-bench / trtllm-serve logs (peak, KV cache, fraction, throughput)"
ENGINE = "trtllm"
ENVIRONMENTS = ("native", "container", "docker", "podman", "chroot", "sandbox")

_STAMP_RE = re.compile(r"\[(\d{2}/\d{2}/\d{4}-\d{2}:\d{2}:\d{2})\]")
_MODEL_RE = re.compile(r"^Model:\s+(\S+)")
_OOM_RE = re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory", re.IGNORECASE)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parse(text: str, *, origin: str = "<input>") -> list[ImportedRun]:
    report = parse_engine_log(ENGINE, text)
    extra = dict(report.extra)
    stamp = _first_stamp(text)
    model = _model(text)
    digest = hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()
    env = environment_from_path(origin)
    finished = "request_throughput" in extra or "output_throughput" in extra
    failure = None
    if not finished:
        failure = ("out of memory (see the log's tail)" if _OOM_RE.search(text)
                   else "no trtllm-bench report in the log: the run did not finish, or this is a server log")
    rec = blank_record()
    stem = _SAFE.sub("_", PurePath(origin).stem)[:40] if origin != "<input>" else "log"
    rec.update({
        "run_id": f"tl-{stem}-{digest[:12]}",
        "study_id": NAME,
        "created_at": stamp.isoformat() if stamp else "",
        "environment": env,
        "environment_info": {"name": env, "from": "file path" if env != "unknown" else None},
        "engine": ENGINE,
        "engine_version": _str(extra.get("trtllm_version")),
        "engine_options": {"benchmark": "trtllm-bench" if finished else None,
                           "free_gpu_memory_fraction": report.kv_fraction},
        "model": model,
        "status": "ok" if finished else "failed",
        "failure": failure,
        "request_throughput_per_s": _num(extra.get("request_throughput")),
        "output_tokens_per_s": _num(extra.get("output_throughput")),
        "workload_duration_s": _num(extra.get("total_latency_s")),
        "engine_report": report.to_dict(),
        "source": NAME,
        "source_info": {
            "file": origin,
            "sha256": digest,
            "timestamp_local": stamp.isoformat() if stamp else None,
            "created_at_unknown": stamp is None,
            "num_requests": extra.get("num_requests"),
        },
    })
    if not finished:
        rec["failure_log_tail"] = "\n".join(list(iter_lines(text))[-20:])
    return [ImportedRun(record=rec, engine_log=text)]


def environment_from_path(origin: str) -> str:
    parts = [p.lower() for p in PurePath(origin).parts]
    words = {w for p in parts for w in re.split(r"[^a-z0-9]+", p) if w}
    for env in ENVIRONMENTS:
        if env in words:
            return env
    return "unknown"


def _first_stamp(text: str) -> dt.datetime | None:
    for m in _STAMP_RE.finditer(text[: 4 << 20]):
        try:
            return dt.datetime.strptime(m.group(1), "%m/%d/%Y-%H:%M:%S")
        except ValueError:
            continue
    return None


def _model(text: str) -> str | None:
    for line in iter_lines(text):
        if m := _MODEL_RE.match(line.strip()):
            return m.group(1)
    return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None
