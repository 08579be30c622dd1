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

[engine]                             # the base run spec: engine, environment, workload,
kind = "llamacpp"                    # sampler, timeouts and slo, as in a spec file
ctx_size = 8192
models = ["a.gguf", "b.gguf"]        # optional: an axis (llamacpp: model_path; others: model)

[workload]
requests = 8

[[variants]]                         # optional: each variant is its own set of cells
name = "q8"
engine = { kv_type = "q8_0" }

[[metrics]]                          # primary metrics of iterations = "auto"
name = "kv_cache_bytes"
margin = 0                           # absolute (in the metric's unit) or "10%"

[cluster]                            # optional: run on a Ray cluster (memgap.fleet)
address = "auto"                     # or "HOST:6379", "ray://HOST:10001"; --ray overrides it
hosts = ["spark", "gh200"]           # node labels (memgap-host) or hostnames: the host axis;
                                     # none: every node that declares a memgap_slot
retry_lost = true                    # a run whose node died is retried once on another node
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

from memgap.analysis.metrics import BY_NAME
from memgap.errors import UsageError
from memgap.spec import ENVIRONMENTS as SPEC_ENVIRONMENTS
from memgap.spec import RunSpec, dotted, validation_errors

# What a study starts its engines in: a run spec's environments but an attached engine,
# which someone else started (the same names as memgap.envs.ENVIRONMENTS, which this
# module does not import: reading a stored plan must not load the launch code).
ENVIRONMENTS = tuple(e for e in SPEC_ENVIRONMENTS if e != "attached")
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


class ClusterSection(_Model):
    """Where a study runs on a Ray cluster (memgap.fleet). Only ``hosts`` is part of the
    plan: the address and the retry policy change no run, so they may change on resume."""

    address: str | None = None
    hosts: list[str] = Field(default_factory=list)
    retry_lost: bool = False

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        if any(not h.strip() for h in v):
            raise ValueError("a host name may not be empty")
        if len(set(v)) != len(v):
            raise ValueError(f"each host once, got {v}")
        return v


class Variant(_Model):
    """One set of cells: the base spec's engine and environment with these keys changed."""

    name: str = Field(min_length=1)
    engine: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] | None = None


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
    """A study: a base run spec (the sections ``engine``, ``environment``, ``workload``,
    ``sampler``, ``timeouts`` and the key ``slo``, exactly as in a spec file) plus the axes
    that vary: ``study.environments``, ``engine.models`` and ``[[variants]]``."""

    study: StudySection
    cooldown: CooldownSection = CooldownSection.model_validate({})
    cluster: ClusterSection = ClusterSection.model_validate({})
    slo: str = ""
    engine: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    workload: dict[str, Any] = Field(default_factory=dict)
    sampler: dict[str, Any] = Field(default_factory=dict)
    timeouts: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    metrics: list[PrimaryMetric] = Field(default_factory=lambda: [PrimaryMetric.model_validate(m) for m in DEFAULT_PRIMARY])

    @model_validator(mode="after")
    def _unique_variants(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self

    @property
    def models(self) -> list[str]:
        """The model axis (``engine.models``); empty: the engine's default model."""
        return [str(m) for m in self.engine.get("models") or []]

    def spec_dict(self, *, environment: str, variant: str | None = None, model: str | None = None) -> dict[str, Any]:
        """The run spec of one cell, as a dict (``RunSpec.from_dict`` validates it)."""
        engine = {k: v for k, v in self.engine.items() if k != "models"}
        env = _environment_keys(self.environment)
        for v in self.variants:
            if v.name == variant:
                engine.update(v.engine)
                if v.environment is not None:
                    env = {**env, **_environment_keys(v.environment)}
        if model is not None:
            kind = engine.get("kind", "llamacpp")
            engine["model_path" if kind == "llamacpp" else "model"] = model
        env["name"] = environment
        if environment != "sandbox":  # the limit is the sandbox's own cgroup's
            env.pop("memory_limit_bytes", None)
        label = "/".join(p for p in (self.study.label, variant if self.variants else None) if p) or None
        return {"engine": engine, "environment": env, "workload": self.workload, "sampler": self.sampler,
                "timeouts": self.timeouts, "slo": self.slo, "label": label, "study_id": self.study_id}

    def cell_spec(self, *, environment: str, variant: str | None = None, model: str | None = None) -> RunSpec:
        return RunSpec.from_dict(self.spec_dict(environment=environment, variant=variant, model=model),
                                 origin="experiment")

    @property
    def study_id(self) -> str:
        return f"study:{self.study.name}"

    def plan_settings(self) -> dict[str, Any]:
        """What decides the plan and what its runs measure; a change refuses resume.
        (Cooldown, store, label and the cluster's address are left out: changing them
        changes no run. The host axis is in, only when there is one, so a study planned
        before [cluster] existed keeps its fingerprint.)"""
        d = self.model_dump(mode="json")
        study = {k: v for k, v in d["study"].items() if k not in ("store", "label")}
        out = {**{k: v for k, v in d.items() if k not in ("cooldown", "study", "cluster")}, "study": study}
        if self.cluster.hosts:
            out["cluster"] = {"hosts": list(self.cluster.hosts)}
        # The base spec with every default filled in, so a changed default is a change too.
        spec = self.cell_spec(environment="sandbox").to_dict()
        for section in ("engine", "environment", "workload", "sampler", "timeouts", "slo"):
            out[section] = spec[section]
        out["environment"] = {k: v for k, v in spec["environment"].items() if k != "name"}
        if self.models:
            out["engine"]["models"] = self.models
        return out

    def fingerprint(self) -> str:
        blob = json.dumps(self.plan_settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def updated(self, section: str, **values: Any) -> Experiment:
        """A copy with ``values`` set in ``section`` (command-line overrides), re-validated."""
        d = self.model_dump()
        d[section] = {**d[section], **values}
        try:
            exp = Experiment.model_validate(d)
        except ValidationError as e:
            loc, msg = validation_errors(e)[0]
            raise UsageError(f"{_dotted(loc)}: {msg}") from None
        errs = spec_errors(d)
        if errs:
            raise UsageError(f"{_dotted(errs[0][0])}: {errs[0][1]}")
        return exp


def _environment_keys(section: dict[str, Any]) -> dict[str, Any]:
    env = dict(section)
    if "memory_limit" in env:  # the older spelling
        env["memory_limit_bytes"] = env.pop("memory_limit")
    return env


def _dotted(loc: tuple[Any, ...]) -> str:
    return dotted(loc)


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
    lines = key_lines(text)

    def fail(errors: list[tuple[tuple[Any, ...], str]]) -> UsageError:
        msgs = []
        for loc, msg in errors:
            line = _line_of(lines, loc)
            msgs.append(f"{f'{origin}:{line}' if line else origin}: {_dotted(loc)}: {msg}")
        return UsageError("invalid experiment file:\n  " + "\n  ".join(msgs))

    errors: list[tuple[tuple[Any, ...], str]] = []
    try:
        Experiment.model_validate(doc)
    except ValidationError as e:
        errors += validation_errors(e)
    errors += spec_errors(doc, {_dotted(loc) for loc, _ in errors})
    if errors:
        raise fail(errors)
    return Experiment.model_validate(doc)


_SPEC_KEYS = ("engine", "environment", "workload", "sampler", "timeouts", "slo")


def spec_errors(doc: dict[str, Any], seen: set[str] = frozenset()) -> list[tuple[tuple[Any, ...], str]]:  # type: ignore[assignment]
    """The errors of every cell's run spec in an experiment document (not yet validated),
    each at the key where it was written: the base sections, or the variant that changed it."""
    errors: list[tuple[tuple[Any, ...], str]] = []
    bare = {k: v for k, v in doc.items() if k in _SPEC_KEYS}
    bare["study"] = {"name": "check"}
    raw = doc.get("variants")
    raw_variants: list[Any] = raw if isinstance(raw, list) else []
    bare["variants"] = [{k: v for k, v in rv.items() if k in ("engine", "environment")} | {"name": f"v{i}"}
                        for i, rv in enumerate(raw_variants) if isinstance(rv, dict)]
    try:
        check = Experiment.model_validate(bare)
    except ValidationError:
        return errors  # a section's own type is wrong: reported by the model's validation
    for i, v in [(None, None), *enumerate(check.variants)]:
        try:
            RunSpec.model_validate(check.spec_dict(environment="sandbox", variant=v.name if v else None))
        except ValidationError as e:
            errs = validation_errors(e)
            if i is not None:
                errs = [(("variants", i, *loc) if loc[:1] in (("engine",), ("environment",)) else loc, m)
                        for loc, m in errs]
                errs = [(loc, m) for loc, m in errs if loc[:1] == ("variants",)]  # base errors: once
            errors += [(_unspell(loc), m) for loc, m in errs if _dotted(_unspell(loc)) not in seen]
    return errors




def _unspell(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A spec path back to how an experiment file may spell it (``memory_limit``)."""
    return tuple("memory_limit" if p == "memory_limit_bytes" else p for p in loc)


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
