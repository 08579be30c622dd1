"""Sweeps: one run per load point and KV budget, the curves they make, and where they part.

A sweep varies the load (concurrency, or request rate) and the engine's KV budget
(llama.cpp's ``--ctx-size``: KV cells in total) and makes one ordinary run per point with
:func:`memgap.runner.execute_run`, stored like any run, sharing a sweep id as its study id
and naming its point in its label. Points are ordered load-major with the KV budgets
interleaved, so every budget sees the machine in the same state at each load (runs
ordered budget by budget confound budget with time). Each run starts a fresh engine, so
no prompt (prefix) cache carries over from one point to the next.

How a KV budget limits llama.cpp, measured here (SmolLM2, build of 2026-11): with
``--kv-unified`` all slots share the cells, and when they fill up the server does *not*
queue -- it purges other slots' cache and then fails every active request ("Context size
has been exceeded", HTTP 500 or an error event). Without it each of ``--parallel`` slots
gets ``ctx / parallel`` cells, and a request longer than that fails. Either way the
budget caps how many requests can hold KV at once; ``parallel="fit"`` makes that cap
explicit as ``ctx // tokens per request`` slots, and requests beyond it wait in the
server's queue (``llamacpp:requests_deferred``), as they would for lack of KV blocks
in vLLM or SGLang.

Everything here but the running part is pure; what a sweep's stored runs show (rows,
curves, knees) is :mod:`memgap.analysis.sweep_curves`, which reads only the store.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from memgap.analysis.sweep_curves import SweepPoint, point_row, request_from_row
from memgap.engines.registry import engine_for_run
from memgap.envs.base import Environment
from memgap.errors import UsageError
from memgap.load.slo import SLO
from memgap.load.spec import WorkloadSpec
from memgap.nested import value_at
from memgap.outcome import RunObserver
from memgap.runner import execute_run
from memgap.spec import RunSpec
from memgap.store import Store

# How many requests a point sends per unit of concurrency when the caller sets no count:
# enough for every slot to turn over a few times.
REQUESTS_PER_SLOT = 3
MIN_REQUESTS = 4


def plan_points(
    concurrency: Sequence[int], rates: Sequence[float] = (), ctx_sizes: Sequence[int | None] = (None,)
) -> list[SweepPoint]:
    """Load-major, KV budgets interleaved. With rates, each rate runs at the largest
    concurrency given (the client's cap on requests in flight)."""
    if not concurrency:
        raise UsageError("a sweep needs at least one concurrency")
    if any(c < 1 for c in concurrency):
        raise UsageError(f"concurrency must be >= 1, got {list(concurrency)}")
    if any(not (math.isfinite(r) and r > 0) for r in rates):
        raise UsageError(f"request rates must be > 0, got {list(rates)}")
    if any(c is not None and c < 1 for c in ctx_sizes):
        raise UsageError(f"context sizes must be >= 1, got {list(ctx_sizes)}")
    budgets = list(dict.fromkeys(ctx_sizes)) or [None]
    if rates:
        cap = max(concurrency)
        return [SweepPoint(cap, float(r), c) for r in sorted(set(rates)) for c in budgets]
    return [SweepPoint(n, None, c) for n in sorted(set(concurrency)) for c in budgets]


def parse_list(text: str, kind: type[int] | type[float], what: str) -> list[Any]:
    """``"1,2,4"`` -> [1, 2, 4]; refuses anything else as a UsageError naming ``what``."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(kind(part))
        except ValueError:
            raise UsageError(f"{what}: {part!r} is not a {kind.__name__}") from None
    if not out:
        raise UsageError(f"{what}: no values in {text!r}")
    return out


def tokens_per_request(spec: WorkloadSpec) -> int:
    """KV cells one request needs at most: its longest prompt plus its longest output."""
    return (spec.prompt_tokens_max or spec.prompt_tokens) + (spec.output_tokens_max or spec.output_tokens)


def fit_parallel(ctx_size: int, per_request_tokens: int) -> int:
    """Slots whose per-slot share of ``ctx_size`` cells holds a whole request."""
    if per_request_tokens < 1:
        raise UsageError("tokens per request must be >= 1")
    slots = ctx_size // per_request_tokens
    if slots < 1:
        raise UsageError(
            f"--ctx-size {ctx_size} holds no request of {per_request_tokens} tokens (prompt + output)"
        )
    return slots


def kv_budget_of(record: Mapping[str, Any]) -> int | None:
    """The KV capacity in tokens a run's engine reported (what it sized from the memory
    it saw), to sweep another run's budget on this machine."""
    tokens = value_at(record, "engine_report.kv_cache_tokens")
    return tokens if isinstance(tokens, int) and tokens > 0 else None


def workload_for(
    point: SweepPoint, base: WorkloadSpec, requests: int | None, per_concurrency: int = REQUESTS_PER_SLOT
) -> WorkloadSpec:
    """The point's workload: ``requests`` when set, else ``per_concurrency`` requests for
    each unit of concurrency (at least MIN_REQUESTS)."""
    if per_concurrency < 1:
        raise UsageError(f"requests per unit of concurrency must be >= 1, got {per_concurrency}")
    n = requests if requests is not None else max(MIN_REQUESTS, per_concurrency * point.concurrency)
    return replace(base, concurrency=point.concurrency, request_rate_per_s=point.request_rate_per_s, requests=n)


# -- saturation search ----------------------------------------------------------------------


@dataclass(frozen=True)
class SaturationResult:
    best_rate_per_s: float | None  # highest rate tried that met the SLOs; None: not even the lowest
    bounded: bool  # False: the highest rate tried still met them, the limit is above it
    trials: list[dict[str, Any]] = field(default_factory=list)  # rate, met_fraction, meets, run_id

    def to_dict(self) -> dict[str, Any]:
        return {"best_rate_per_s": self.best_rate_per_s, "bounded": self.bounded, "trials": list(self.trials)}


def saturation_search(
    measure: Callable[[float], tuple[bool, dict[str, Any]]], lo: float, hi: float, steps: int
) -> SaturationResult:
    """Highest rate in [lo, hi] at which ``measure(rate)`` says the SLOs hold, by bisection
    on a log scale (``steps`` runs after the two bounds). ``measure`` returns whether the
    rate met the SLOs and what to keep of the trial."""
    if not (0 < lo < hi) or not (math.isfinite(lo) and math.isfinite(hi)):
        raise UsageError(f"saturation search needs 0 < low rate < high rate, got {lo}, {hi}")
    if steps < 0:
        raise UsageError(f"saturation steps must be >= 0, got {steps}")
    trials: list[dict[str, Any]] = []

    def trial(rate: float) -> bool:
        ok, info = measure(rate)
        trials.append({"rate_per_s": rate, "meets": ok, **info})
        return ok

    if trial(hi):
        return SaturationResult(hi, False, trials)
    if not trial(lo):
        return SaturationResult(None, True, trials)
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return SaturationResult(lo, True, trials)


def new_sweep_id() -> str:
    return "sweep-" + uuid.uuid4().hex[:10]


# -- running (I/O) --------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSettings:
    base: RunSpec  # engine, environment, sampler, limits; its workload is the base of every point's
    slo: SLO = field(default_factory=SLO)
    requests: int | None = None  # per point; None: requests_per_concurrency x concurrency
    requests_per_concurrency: int = REQUESTS_PER_SLOT
    sweep_id: str = field(default_factory=new_sweep_id)


def run_point(
    point: SweepPoint,
    settings: SweepSettings,
    spec_for: Callable[[SweepPoint], RunSpec],
    store: Store,
    *,
    environment: Environment | None = None,
    observer: RunObserver | None = None,
    execute: Callable[..., dict[str, Any]] = execute_run,
    make: Callable[[RunSpec], Any] = engine_for_run,
) -> dict[str, Any]:
    """One run at ``point``, stored like any run (study id = sweep id, point in the label);
    returns its row, read back from the store. Its engine is made as ``memgap run`` makes
    it (``make``, registry.engine_for_run): an attached one, or a self-driven one with the
    point's workload."""
    spec = spec_for(point)
    spec = spec.replace(
        workload=workload_for(point, spec.workload, settings.requests, settings.requests_per_concurrency).to_dict(),
        label=f"{settings.sweep_id} {point.label}",
        study_id=settings.sweep_id,
        slo=settings.slo.describe(),
    )
    record = execute(spec, store, engine=make(spec), environment=environment, observer=observer)
    run_id = record["run_id"]
    requests = [request_from_row(r) for r in store.requests(run_id)]
    return point_row(point, record, requests, store.series(run_id), settings.slo)


def run_sweep(
    points: Sequence[SweepPoint],
    settings: SweepSettings,
    spec_for: Callable[[SweepPoint], RunSpec],
    store: Store,
    *,
    environment: Environment | None = None,
    observer: RunObserver | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    execute: Callable[..., dict[str, Any]] = execute_run,
    make: Callable[[RunSpec], Any] = engine_for_run,
) -> list[dict[str, Any]]:
    """Every point in order; each run is committed when it ends, so an interrupted sweep
    keeps the points it finished."""
    rows = []
    for point in points:
        row = run_point(point, settings, spec_for, store, environment=environment, observer=observer, execute=execute,
                        make=make)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def search_saturation(
    settings: SweepSettings,
    spec_for: Callable[[SweepPoint], RunSpec],
    store: Store,
    *,
    concurrency: int,
    ctx_size: int | None,
    lo: float,
    hi: float,
    steps: int,
    attainment: float,
    environment: Environment | None = None,
    observer: RunObserver | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    execute: Callable[..., dict[str, Any]] = execute_run,
    make: Callable[[RunSpec], Any] = engine_for_run,
) -> tuple[SaturationResult, list[dict[str, Any]]]:
    """The highest request rate at which at least ``attainment`` of the requests meet the
    SLOs, one stored run per rate tried."""
    if settings.slo.empty:
        raise UsageError("a saturation search needs an SLO (--slo ttft_s=...,e2e_s=...)")
    if not (0 < attainment <= 1):
        raise UsageError(f"SLO attainment must be in (0, 1], got {attainment}")
    rows: list[dict[str, Any]] = []

    def measure(rate: float) -> tuple[bool, dict[str, Any]]:
        row = run_point(SweepPoint(concurrency, rate, ctx_size), settings, spec_for, store,
                        environment=environment, observer=observer, execute=execute, make=make)  # fmt: skip
        rows.append(row)
        if on_row is not None:
            on_row(row)
        met = row["slo_met_fraction"]
        return met is not None and met >= attainment, {"met_fraction": met, "run_id": row["run_id"]}

    return saturation_search(measure, lo, hi, steps), rows
