"""Samples every memory layer of one run at a fixed rate, in a thread of its own.

High-rate readings are the O(1) counters (/proc/meminfo, the cgroup's usage and
memory.stat, /proc/PID/status of each process in the engine's tree).
``smaps_rollup`` walks page tables -- its cost grows with resident memory -- so it is read
at a low rate. The kernel's own watermarks (cgroup peak, VmHWM) are kept too, so a spike
between two samples is not missed.

Where memgap._fastsample was built (scripts/setup.sh), the high-rate loop runs in its
native thread: every tick reads the totals (the cgroup's usage, each process's resident
memory from /proc/PID/statm), and at most ``full_rate_hz`` (10 Hz) ticks -- plus every
mark -- also read the breakdown (meminfo, memory.stat, status); the other columns of the
ticks between are None. A Python thread drains its rows twice a second and reads the
sparse columns (PSS, engine metrics, NVML). At 100 Hz this costs under 1% of a core where
a Python loop costs 3% (benchmarks/sampler_cost.py). Without the module, or with
``SamplerConfig(native=False)``, a Python thread reads everything at every tick.

The parts: ``sampler`` (the Sampler: its life cycle and one tick), ``tree`` (the engine's
process tree and its open /proc files), ``python_loop`` (the high-rate reads and timing
of the Python thread), ``native`` (the native loop's set-up and the decoding of its
rows), ``sparse`` (PSS, engine metrics, NVML) and ``rows`` (readings into columns, for
both loops)."""

from memgap.sampler.sampler import Sampler
from memgap.sampler.sparse import GpuProcessReader, nvidia_driver_present
from memgap.spec import SamplerConfig

__all__ = ["GpuProcessReader", "Sampler", "SamplerConfig", "nvidia_driver_present"]
