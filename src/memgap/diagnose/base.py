"""What a diagnosis is: the case it belongs to, the mechanism it names, one sentence
for people, the numbers it was decided from and, where there is one, the remedy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from memgap.units import format_bytes

# Mechanism keys, one per case of issue 14 (a case may name more than one).
HELD_BY_PROCESSES = "memory_held_by_processes"  # 1
HELD_BY_ENGINE = "memory_held_by_another_engine"  # 2
PAGE_CACHE_AS_USED = "page_cache_counted_as_used"  # 3
LIMIT_READ = "memory_limit_read_by_engine"  # 4
LIMIT_NOT_READ = "memory_limit_not_read_oom"  # 4
SMALL_SHM = "dev_shm_too_small"  # 5
KERNEL_RESERVE = "kernel_reserve"  # 6
GPU_OUTSIDE_CGROUP = "gpu_memory_outside_cgroup"  # 7
KV_BELOW_MAX_LEN = "kv_cache_below_max_model_len"  # 8
NO_MEMORY_FOR_KV = "no_memory_left_for_kv_cache"  # 8


def _frozen() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Diagnosis:
    case: int
    mechanism: str
    sentence: str
    numbers: Mapping[str, Any] = field(default_factory=_frozen)
    remedy: str | None = None

    def text(self) -> str:
        """The sentence and its remedy, as a cause or a note prints them."""
        return self.sentence + (f" {self.remedy}" if self.remedy else "")

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "mechanism": self.mechanism, "sentence": self.sentence,
                "remedy": self.remedy, "numbers": dict(self.numbers)}


def gib(n: int | float | None) -> str:
    """Sizes as the engines print them (GiB, two decimals), so a number in a cause can be
    found in the engine's own line."""
    if n is None:
        return "-"
    return f"{n / (1 << 30):.2f} GiB"


def size(n: int | float | None) -> str:
    return format_bytes(n, precision=2)
