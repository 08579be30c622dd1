"""From command-line flags to a RunSpec, and back to the flag in an error.

Each flag of ``memgap run`` (and ``sweep``) names one field of the run spec; only the
flags a user actually gave become overrides, so every default stays in
:mod:`memgap.spec`. ``--set PATH=VALUE`` reaches any field by its dotted path. An error
from the spec names the field and the flag it came from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from memgap.errors import UsageError
from memgap.spec import RunSpec, dotted, validation_errors

# flag parameter name -> spec path; "engine.model" is the engine's own model field
FLAG_PATHS: dict[str, str] = {
    "engine": "engine.kind",
    "requests": "workload.requests",
    "concurrency": "workload.concurrency",
    "rate": "workload.request_rate_per_s",
    "arrival": "workload.arrival",
    "prompt_tokens": "workload.prompt_tokens",
    "output_tokens": "workload.output_tokens",
    "dataset": "workload.dataset",
    "warmup": "workload.warmup_requests",
    "api": "workload.api",
    "request_timeout": "workload.timeout_s",
    "seed": "workload.seed",
    "slo": "slo",
    "model": "engine.model",
    "ctx_size": "engine.ctx_size",
    "parallel": "engine.parallel",
    "threads": "engine.threads",
    "mmap": "engine.mmap",
    "kv_type": "engine.kv_type",
    "kv_unified": "engine.kv_unified",
    "server_path": "engine.server_path",
    "engine_arg": "engine.extra_args",
    "engine_python": "engine.python",
    "device": "engine.device",
    "gpu_memory_utilization": "engine.gpu_memory_utilization",
    "kv_cache_memory": "engine.kv_cache_memory_bytes",
    "max_model_len": "engine.max_model_len",
    "max_num_seqs": "engine.max_num_seqs",
    "enforce_eager": "engine.enforce_eager",
    "memory_limit": "environment.memory_limit_bytes",
    "image": "environment.container.image",
    "rootfs": "environment.container.rootfs",
    "memory": "environment.container.memory",
    "memory_swap": "environment.container.memory_swap",
    "cgroup_parent": "environment.container.cgroup_parent",
    "network": "environment.container.network",
    "cpuset_cpus": "environment.container.cpuset_cpus",
    "privileged": "environment.container.privileged",
    "shm_size": "environment.container.shm_size",
    "ipc": "environment.container.ipc",
    "ulimit": "environment.container.ulimits",
    "gpus": "environment.container.gpus",
    "seed_flags": "environment.container.seed_flags",
    "container_flag": "environment.container.extra_flags",
    "attach": "environment.attach.url",
    "pid": "environment.attach.pid",
    "container": "environment.attach.container",
    "cgroup": "environment.attach.cgroup",
    "engine_log": "environment.attach.engine_log",
    "sample_rate": "sampler.rate_hz",
    "ready_timeout": "timeouts.ready_s",
    "label": "label",
}


def flag_name(param: str) -> str:
    return "--" + param.replace("_", "-")


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``--set engine.max_model_len=512`` -> {path: value}; the value is read as JSON
    where it is JSON (numbers, true/false, null, lists), as text otherwise."""
    out: dict[str, Any] = {}
    for item in items:
        path, eq, raw = item.partition("=")
        if not eq or not path.strip():
            raise UsageError(f"--set {item!r}: expected PATH=VALUE, e.g. engine.max_model_len=512")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[path.strip()] = value
    return out


def overrides_from_flags(given: Mapping[str, Any], sets: Iterable[str] = ()) -> dict[str, tuple[Any, str]]:
    """{spec path: (value, where it came from)} for the flags given (param name -> value)
    and each --set."""
    out: dict[str, tuple[Any, str]] = {}
    for param, value in given.items():
        if param in FLAG_PATHS:
            out[FLAG_PATHS[param]] = (_plain(value), flag_name(param))
    for path, value in parse_set(sets).items():
        out[path] = (value, f"--set {path}")
    return out


def apply_overrides(base: Mapping[str, Any], overrides: Mapping[str, tuple[Any, str]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec document with the overrides applied, and {spec path: flag} for errors."""
    doc = json.loads(json.dumps(base))
    old_kind = (doc.get("engine") or {}).get("kind", "llamacpp")
    kind = overrides["engine.kind"][0] if "engine.kind" in overrides else old_kind
    if kind != old_kind:
        doc["engine"] = {}  # another engine: the base's options were the other engine's
    where: dict[str, str] = {}
    for path, (value, flag) in overrides.items():
        if path == "engine.model" and kind == "llamacpp":
            path = "engine.model_path"
        if path.startswith("environment.attach."):
            doc.setdefault("environment", {})["name"] = "attached"
        set_path(doc, path, value)
        where[path] = flag
    return doc, where


def build_spec(doc: Mapping[str, Any], where: Mapping[str, str] | None = None, origin: str = "spec") -> RunSpec:
    """Validate; an error names the field and, where a flag set it, the flag."""
    where = where or {}
    try:
        return RunSpec.model_validate(doc)
    except ValidationError as e:
        msgs = []
        for loc, msg in validation_errors(e):
            path = dotted(loc)
            parts = path.split(".")
            flag = next((where[p] for p in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in where), None)
            msgs.append(f"{flag} ({path}): {msg}" if flag else f"{origin}: {path}: {msg}")
        raise UsageError(msgs[0] if len(msgs) == 1 else "invalid run spec:\n  " + "\n  ".join(msgs)) from None
