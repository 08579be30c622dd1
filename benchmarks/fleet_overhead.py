"""What a run costs to send through Ray (memgap.fleet) beside running it where the study is.

Two measurements, each printed beside its local baseline (the same call made in this
process, as ``memgap run study.toml`` without ``--ray`` makes it):

1. **dispatch**: a task with the fleet's options (``memgap_slot``, pinned to a node,
   ``num_cpus=0``, ``max_retries=0``, streaming its two items as ``run_on_node`` does: the
   actions before the run, then the outcome) whose outcome is small (a run record, no
   series): the time from ``.remote()`` to both items in the driver.
2. **a 10-minute run at 100 Hz**: the task returns an outcome of the real shape (a run
   record, 8 requests, and a memory series of 60,000 samples over every column of
   ``memgap.series.COLUMNS``, the sparse ones filled at 10 Hz as the sampler's full rate
   fills them); the driver gets it from the other node's object store.

Each process builds its outcomes once and returns the same object every time, so what is
timed is the hand-over alone: locally a function's return, through Ray the task's
dispatch, serialization, the copy between object stores and deserialization.

Bytes moved per run: the outcome as Ray serializes it (what crosses between the nodes'
object stores), beside the JSON the store writes for it either way.

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head (the driver's node,
no slot) and one memgap node, each a raylet of its own, so the outcome really moves
between two object stores (over loopback: a network between machines adds its own
transfer time, about the bytes printed divided by its bandwidth).

    .venv/bin/python benchmarks/fleet_overhead.py [--dispatch-runs 30] [--series-runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from memgap.fleet.faults import failed_record
from memgap.series import COLUMNS, SPARSE_COLUMNS
from memgap.spec import RunSpec

RATE_HZ = 100.0
DURATION_S = 600.0
FULL_RATE_HZ = 10.0


def synthetic_outcome(seconds: float = DURATION_S, rate_hz: float = RATE_HZ) -> dict[str, Any]:
    """A run's outcome (memgap.outcome.RunOutcome as plain data) of the real shape."""
    rng = random.Random(7)
    spec = RunSpec.from_dict({"environment": {"name": "sandbox"}, "study_id": "study:bench"})
    record = failed_record(spec, run_id="0123456789ab", failure="x",
                           host={"hostname": "node", "name": "node-a"}, model="m.gguf")
    record.update(status="ok", failure=None)
    n = int(seconds * rate_hz)
    every = int(rate_hz / FULL_RATE_HZ)
    columns: dict[str, list[Any]] = {}
    for c in COLUMNS:
        if c == "t_s":
            columns[c] = [round(i / rate_hz, 4) for i in range(n)]
        elif c == "kv_usage_ratio":
            columns[c] = [round(rng.random(), 4) if i % every == 0 else None for i in range(n)]
        elif c in ("process_count", "requests_running", "requests_waiting"):
            columns[c] = [rng.randint(0, 8) if (c not in SPARSE_COLUMNS or i % every == 0) else None for i in range(n)]
        else:
            base = rng.randint(1 << 30, 1 << 36)
            columns[c] = [base + rng.randint(-1 << 20, 1 << 20) if (c not in SPARSE_COLUMNS or i % every == 0) else None
                          for i in range(n)]
    series = {"rate_hz": rate_hz, "columns": columns, "marks": {"start": 0.0, "ready": 1.2, "end": seconds - 1.0},
              "host_total_bytes": 1 << 37, "kernel_cgroup_peak_bytes": 1 << 35, "kernel_process_hwm_bytes": 1 << 34,
              "errors": []}
    requests = [{"index": i, "warmup": False, "scheduled_s": i * 0.5, "sent_s": i * 0.5, "ttft_s": 0.05, "e2e_s": 2.0,
                 "itl_s": [0.013] * 128, "output_tokens": 128, "output_tokens_client": 128, "prompt_tokens": 256,
                 "http_status": 200, "error": None} for i in range(8)]
    return {"outcome": {"record": record, "engine_log": "llama_kv_cache: size = 180.00 MiB\n" * 200,
                        "requests": requests, "series": series, "interrupted": False}}


def small_outcome() -> dict[str, Any]:
    out = synthetic_outcome(seconds=0.0)
    return {"outcome": {**out["outcome"], "series": None}}


_BUILT: dict[str, dict[str, Any]] = {}  # per process (the driver, each Ray worker)


ACTIONS = {"actions": {"page_cache": {"policy": "keep"}}}


def small_task() -> Iterator[dict[str, Any]]:
    if "small" not in _BUILT:
        _BUILT["small"] = small_outcome()
    yield ACTIONS
    yield _BUILT["small"]


def big_task() -> Iterator[dict[str, Any]]:
    if "big" not in _BUILT:
        _BUILT["big"] = synthetic_outcome()
    yield ACTIONS
    yield _BUILT["big"]


def _timed(fn: Callable[[], Any], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _fmt_s(xs: list[float]) -> str:
    return f"{statistics.median(xs):.4f} s"


def _fmt_b(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dispatch-runs", type=int, default=30)
    ap.add_argument("--series-runs", type=int, default=5)
    args = ap.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from memgap.fleet import SLOT_RESOURCE
    from memgap.fleet.nodes import memgap_nodes

    store_bytes = 300 * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store_bytes,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={SLOT_RESOURCE: 1}, labels={"memgap-host": "bench"},
                         object_store_memory=store_bytes)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        (node,) = memgap_nodes(ray.nodes())
        opts = {"num_cpus": 0, "resources": {SLOT_RESOURCE: 1}, "max_retries": 0, "num_returns": "streaming",
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)}
        small = ray.remote(**opts)(small_task)
        big = ray.remote(**opts)(big_task)
        def both(task: Any) -> list[Any]:
            return [ray.get(ref) for ref in task]

        both(small.remote())  # a worker started on the node, the functions exported
        both(big.remote())  # and the outcomes built there once
        list(small_task())
        list(big_task())

        d_local = _timed(lambda: list(small_task()), args.dispatch_runs)
        d_ray = _timed(lambda: both(small.remote()), args.dispatch_runs)
        s_local = _timed(lambda: list(big_task()), args.series_runs)
        s_ray = _timed(lambda: both(big.remote()), args.series_runs)

        ctx = ray._private.worker.global_worker.get_serialization_context()
        wire_small = ctx.serialize(small_outcome()).total_bytes
        outcome = synthetic_outcome()
        wire_big = ctx.serialize(outcome).total_bytes
        o = outcome["outcome"]
        stored = sum(len(json.dumps(x)) for x in (o["record"], o["series"], o["requests"])) + len(o["engine_log"])
        samples = len(o["series"]["columns"]["t_s"])
    finally:
        ray.shutdown()
        cluster.shutdown()

    print(f"memgap fleet overhead per run: Ray {ray.__version__}, two raylets on this machine "
          f"({os.cpu_count()} cores), median of {args.dispatch_runs} / {args.series_runs} runs")
    print(f"{'':38}{'local':>14}{'through Ray':>16}{'overhead':>14}")
    print(f"{'dispatch (small outcome)':38}{_fmt_s(d_local):>14}{_fmt_s(d_ray):>16}"
          f"{statistics.median(d_ray) - statistics.median(d_local):>+12.4f} s")
    extra = statistics.median(s_ray) - statistics.median(s_local)
    print(f"{f'10-min run at 100 Hz ({samples} samples)':38}{_fmt_s(s_local):>14}{_fmt_s(s_ray):>16}"
          f"{extra:>+12.4f} s   ({100 * extra / DURATION_S:.3f}% of the run)")
    print(f"{'bytes moved, small outcome':38}{'0 B':>14}{_fmt_b(wire_small):>16}")
    print(f"{'bytes moved, 10-min 100 Hz outcome':38}{'0 B':>14}{_fmt_b(wire_big):>16}"
          f"   (the store writes {_fmt_b(stored)} of JSON for it either way)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
