"""An engine someone else started (``memgap run --attach URL``): what memgap knows of it
is what the registry declares for its kind -- the health and metrics endpoints and the
log parser -- and what the server says about itself. Nothing is launched, so nothing of
the adapter's launch needs (a binary, a local model file) is required."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from memgap.engines.base import EngineCommand, ModelFile
from memgap.engines.modelfile import model_identity
from memgap.engines.registry import engine_info
from memgap.errors import EngineNotFound, UsageError
from memgap.spec import EngineSpec

if TYPE_CHECKING:
    from memgap.engines.report import EngineReport

# Where each server says which build it is (path, JSON key). llama-server: /props
# build_info (tools/server/server.cpp); vLLM: GET /version (entrypoints/openai/api_server.py);
# SGLang: /get_server_info carries "version". trtllm-serve has no such endpoint.
VERSION_ENDPOINTS: dict[str, tuple[str, str]] = {
    "llamacpp": ("/props", "build_info"),
    "vllm": ("/version", "version"),
    "sglang": ("/get_server_info", "version"),
}


def given_model(spec: EngineSpec) -> str | None:
    """The model the user named for the attached engine, if any (llama.cpp: a GGUF path)."""
    if spec.kind == "llamacpp":
        return str(spec.model_path) if spec.model_path is not None else None
    return spec.model or None


class AttachedEngine:
    """The engine behind ``url``, of kind ``spec.kind``; its options are not known (memgap
    did not start it), so only what the user gave is recorded, marked as such."""

    def __init__(self, spec: EngineSpec, url: str) -> None:
        self.spec = spec
        self.url = url.rstrip("/")
        self.name: str = spec.kind
        self.info = engine_info(spec.kind)
        self._version: str | None = None
        self._version_asked = False

    def command(self, host: str, port: int, scratch: Path | None = None) -> EngineCommand:
        raise UsageError("an attached engine is started by someone else, not by memgap")

    def health_path(self) -> str:
        return self.info.health_path

    def metrics_path(self) -> str | None:
        return self.info.metrics_path

    def version(self) -> str | None:
        """What the server says it is (asked once); None where it has no such endpoint or
        does not answer."""
        if not self._version_asked:
            self._version_asked = True
            self._version = served_version(self.name, self.url)
        return self._version

    def model(self) -> ModelFile:
        """The model's identity when the user named a local file or folder; raises
        EngineNotFound otherwise (the runner records the model as unknown)."""
        given = given_model(self.spec)
        if given is None:
            raise EngineNotFound("the attached engine's model was not given (--model)")
        if not Path(given).exists():
            raise EngineNotFound(f"the attached engine's model {given!r} is not a local path")
        return model_identity(Path(given))

    def options(self) -> dict[str, Any]:
        return {"started_by": "someone else (attached)", "options": "unknown",
                "model_given": given_model(self.spec)}

    def parse_log(self, text: str) -> EngineReport:
        from memgap.engines.logs import parse_engine_log

        return parse_engine_log(self.name, text)


def served_version(kind: str, base_url: str, timeout_s: float = 2.0) -> str | None:
    where = VERSION_ENDPOINTS.get(kind)
    if where is None:
        return None
    path, key = where
    try:
        r = httpx.get(base_url + path, timeout=timeout_s)
        value = r.json().get(key) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return f"{kind} {value} (from {path})" if isinstance(value, (str, int)) and str(value) else None
