"""Experiment files: a study described in TOML, validated with errors that name the key
and its line.

```toml
[study]
name = "smollm2-native-vs-sandbox"   # the study's identity: a re-run resumes it
environments = ["native", "sandbox"]
iterations = "auto"                  # or a whole number of runs per cell
max_iterations = 10                  # auto: stop here at the latest
seed = 7                             # run order (randomized blocks)
page_cache = "keep"                  # or "drop" before each run, where permitted

[cooldown]
pause_s = 2                          # and/or wait until below a temperature
max_temperature_c = 70

[engine]
ctx_size = 8192

[workload]
requests = 8

[[variants]]                         # optional: each variant is its own set of cells
name = "q8"
engine = { kv_type = "q8_0" }

[[metrics]]                          # primary metrics of iterations = "auto"
name = "kv_cache_bytes"
margin = 0                           # absolute (in the metric's unit) or "10%"
```

tomllib reports no line for a key, so ``key_lines`` finds them in the text itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memgap.envs import ENVIRONMENTS
from memgap.errors import UsageError
from memgap.report.metrics import BY_NAME
from memgap.units import parse_size

DEFAULT_PRIMARY = ({"name": "kv_cache_bytes", "margin": 0}, {"name": "output_tokens_per_s", "margin": "10%"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudySection(_Model):
    name: str = Field(min_length=1)
    environments: list[str] = Field(default_factory=lambda: ["native", "sandbox"], min_length=1)
    iterations: int | Literal["auto"] = 5
    min_iterations: int = Field(3, ge=2)
    max_iterations: int = Field(10, ge=2)
    seed: int = 0
    alpha: float = Field(0.05, gt=0, lt=1)
    boundary: Literal["pocock", "obrien-fleming"] = "pocock"
    page_cache: Literal["keep", "drop"] = "keep"
    store: str | None = None  # relative to the experiment file's folder
    label: str | None = None

    @field_validator("iterations", mode="before")
    @classmethod
    def _iterations(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f'must be a whole number >= 1 or "auto", got {v!r}')
        return v

    @field_validator("environments")
    @classmethod
    def _envs(cls, v: list[str]) -> list[str]:
        for e in v:
            if e not in ENVIRONMENTS:
                raise ValueError(f"unknown environment {e!r} (known: {', '.join(ENVIRONMENTS)})")
        if len(set(v)) != len(v):
            raise ValueError(f"each environment once, got {v}")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> StudySection:
        if self.min_iterations > self.max_iterations:
            raise ValueError(f"min_iterations ({self.min_iterations}) > max_iterations ({self.max_iterations})")
        return self


class CooldownSection(_Model):
    pause_s: float = Field(0.0, ge=0)
    max_temperature_c: float | None = None
    max_wait_s: float = Field(600.0, ge=0)
    poll_s: float = Field(5.0, gt=0)


class EngineSection(_Model):
    name: Literal["llamacpp"] = "llamacpp"
    models: list[str] = Field(default_factory=list)  # GGUF paths; empty: the embedded model
    ctx_size: int = Field(8192, ge=1)
    parallel: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    mmap: bool = True
    kv_type: str = "f16"
    kv_unified: bool = False
    server_path: str | None = None
    extra_args: list[str] = Field(default_factory=list)

    @field_validator("kv_type")
    @classmethod
    def _kv(cls, v: str) -> str:
        from memgap.engines.llamacpp import KV_TYPES

        if v not in KV_TYPES:
            raise ValueError(f"{v!r} is not one of {', '.join(KV_TYPES)}")
        return v


class EngineOverrides(_Model):
    ctx_size: int | None = Field(None, ge=1)
    parallel: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    mmap: bool | None = None
    kv_type: str | None = None
    kv_unified: bool | None = None
    extra_args: list[str] | None = None


class EnvironmentSection(_Model):
    memory_limit: str | None = None  # the sandbox's cgroup limit, e.g. "512MiB"
    container: dict[str, Any] = Field(default_factory=dict)  # docker/podman/chroot flags

    @field_validator("memory_limit")
    @classmethod
    def _limit(cls, v: str | None) -> str | None:
        if v is not None:
            parse_size(v, what="memory_limit")
        return v


class WorkloadSection(_Model):
    api: Literal["completions", "chat"] = "completions"
    requests: int = Field(32, ge=1)
    concurrency: int = Field(4, ge=1)
    request_rate_per_s: float | None = Field(None, gt=0)
    arrival: Literal["constant", "poisson"] = "constant"
    prompt_tokens: int = Field(128, ge=1)
    output_tokens: int = Field(64, ge=1)
    warmup_requests: int = Field(2, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    seed: int = 0


class Variant(_Model):
    name: str = Field(min_length=1)
    engine: EngineOverrides = EngineOverrides.model_validate({})
    environment: EnvironmentSection | None = None


class PrimaryMetric(_Model):
    name: str
    margin: float | str = 0.0  # absolute (metric's unit) or "N%" of the baseline

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in BY_NAME:
            raise ValueError(f"unknown metric {v!r} (known: {', '.join(BY_NAME)})")
        return v

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: float | str) -> float | str:
        if isinstance(v, str):
            if not re.fullmatch(r"\d+(\.\d+)?%", v.strip()):
                raise ValueError(f'a relative margin is written like "10%", got {v!r}')
        elif v < 0:
            raise ValueError(f"must be >= 0, got {v}")
        return v

    @property
    def relative(self) -> float | None:
        return float(self.margin.strip()[:-1]) / 100 if isinstance(self.margin, str) else None


class Experiment(_Model):
    study: StudySection
    cooldown: CooldownSection = CooldownSection.model_validate({})
    engine: EngineSection = EngineSection.model_validate({})
    environment: EnvironmentSection = EnvironmentSection.model_validate({})
    workload: WorkloadSection = WorkloadSection.model_validate({})
    variants: list[Variant] = Field(default_factory=list)
    metrics: list[PrimaryMetric] = Field(default_factory=lambda: [PrimaryMetric.model_validate(m) for m in DEFAULT_PRIMARY])

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self

    @property
    def study_id(self) -> str:
        return f"study:{self.study.name}"

    def plan_settings(self) -> dict[str, Any]:
        """What decides the plan and what its runs measure; a change refuses resume.
        (Cooldown, store and label are left out: changing them changes no run.)"""
        d = self.model_dump(mode="json")
        study = {k: v for k, v in d["study"].items() if k not in ("store", "label")}
        return {**{k: v for k, v in d.items() if k not in ("cooldown", "study")}, "study": study}

    def fingerprint(self) -> str:
        blob = json.dumps(self.plan_settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def updated(self, section: str, **values: Any) -> Experiment:
        """A copy with ``values`` set in ``section`` (command-line overrides), re-validated."""
        d = self.model_dump()
        d[section] = {**d[section], **values}
        try:
            return Experiment.model_validate(d)
        except ValidationError as e:
            err = e.errors()[0]
            raise UsageError(f"{_dotted(err['loc'])}: {err['msg']}") from None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_\-]+)\s*=")


def _split_key(k: str) -> list[str]:
    return [p.strip().strip("\"'") for p in k.split(".")]


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Line (1-based) of every table and key in TOML text, by its path (array-of-tables
    entries by index). Good enough for error messages; multi-line values are skipped."""
    lines: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    arrays: dict[tuple[Any, ...], int] = {}
    for no, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h:
            path = tuple(_split_key(h.group(2)))
            if h.group(1) == "[[":
                arrays[path] = arrays.get(path, -1) + 1
                table = (*path, arrays[path])
            else:
                table = path
            lines.setdefault(table, no)
            continue
        k = _KEY.match(line)
        if k and not line.lstrip().startswith("#"):
            path = (*table, *_split_key(k.group(1)))
            lines.setdefault(path, no)
            rest = line[k.end():]
            if "{" in rest:
                for ik in _INLINE_KEY.finditer(rest):
                    lines.setdefault((*path, ik.group(1)), no)
    return lines


def _line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def parse_experiment(text: str, *, origin: str = "<experiment>") -> Experiment:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{origin}: not valid TOML: {e}") from None
    if "study" not in doc:
        raise UsageError(f"{origin}: no [study] table (it needs at least: name = \"...\")")
    try:
        return Experiment.model_validate(doc)
    except ValidationError as e:
        lines = key_lines(text)
        msgs = []
        for err in e.errors():
            loc = tuple(err["loc"])
            line = _line_of(lines, loc)
            where = f"{origin}:{line}" if line else origin
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (a typo?)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            msgs.append(f"{where}: {_dotted(loc)}: {msg}")
        raise UsageError("invalid experiment file:\n  " + "\n  ".join(msgs)) from None


def load_experiment(path: Path) -> Experiment:
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read experiment file {path}: {e.strerror}") from None
    return parse_experiment(text, origin=str(path))


def plan_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """What differs between two ``plan_settings`` dicts, one line per changed key."""
    out = []
    for k in sorted(set(old) | set(new)):
        key = f"{prefix}{k}"
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += plan_changes(a, b, key + ".")
        elif a != b:
            out.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out
