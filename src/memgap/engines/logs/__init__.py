"""Read what an engine's own log says about its memory.

``parse_engine_log(engine, text)`` never raises, whatever the text: an unreadable or
unrelated log gives a report whose figures are all ``None``, with ``found_any`` False
and ``missing`` naming every figure the engine's log should have given (a visible
miss, never an empty success). One module per engine holds its format strings, cited
from the engine's sources, and may declare ``EXPECTED`` (variant -> figure names) and
``DEFAULT_VARIANT``; for a module that does not, ``found_any`` is "any evidence"."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from memgap.engines.logs import llamacpp, sglang, trtllm, vllm
from memgap.engines.logs._text import iter_lines
from memgap.engines.report import EngineReport

_MODULES: dict[str, ModuleType] = {m.ENGINE: m for m in (llamacpp, vllm, sglang, trtllm)}

ENGINES: tuple[str, ...] = tuple(_MODULES)
ALIASES: dict[str, str] = {
    "llama.cpp": "llamacpp",
    "llama-cpp": "llamacpp",
    "llama_cpp": "llamacpp",
    "llama-server": "llamacpp",
    "tensorrt-llm": "trtllm",
    "tensorrt_llm": "trtllm",
    "trt-llm": "trtllm",
    "trtllm-bench": "trtllm",
    "trtllm-serve": "trtllm",
}

# Reading a few thousand lines is enough to tell engines apart.
_DETECT_LINES = 5000


def canonical_engine(name: str) -> str | None:
    """``'llama.cpp'`` -> ``'llamacpp'``; ``None`` for a name memgap does not know."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    return key if key in _MODULES or key == "auto" else None


def detect_engine(text: str) -> str | None:
    """The engine whose characteristic lines the text holds most of, or ``None``."""
    try:
        scores = dict.fromkeys(_MODULES, 0)
        for n, line in enumerate(iter_lines(text)):
            if n >= _DETECT_LINES:
                break
            for name, mod in _MODULES.items():
                scores[name] += sum(1 for sig in mod.SIGNATURES if sig.search(line))
        best = max(scores.items(), key=lambda kv: kv[1])
        return best[0] if best[1] > 0 else None
    except Exception:  # noqa: BLE001 - contract: never raise on any text
        return None


def parse_engine_log(engine: str, text: str) -> EngineReport:
    """Parse ``text`` as ``engine``'s log (``"auto"`` guesses). Never raises: an unknown
    engine or unreadable text gives an empty report (engine ``"unknown"`` when even the
    engine cannot be told)."""
    name = canonical_engine(engine) if isinstance(engine, str) else None
    if not isinstance(text, str):
        text = ""
    if name == "auto":
        name = detect_engine(text)
    if name is None:
        return EngineReport(engine="unknown")
    module = _MODULES[name]
    parse: Callable[[str], EngineReport] = module.parse
    try:
        report = parse(text)
    except Exception:  # noqa: BLE001 - a parser bug must not stop a study; report nothing
        return EngineReport(engine=name).with_coverage(_default_expected(module))
    if not hasattr(module, "EXPECTED"):
        report = report.with_coverage(())
    return report


def _default_expected(module: ModuleType) -> tuple[str, ...]:
    expected: dict[str, tuple[str, ...]] = getattr(module, "EXPECTED", {})
    return expected.get(getattr(module, "DEFAULT_VARIANT", ""), ())


__all__ = ["ENGINES", "EngineReport", "canonical_engine", "detect_engine", "parse_engine_log"]
