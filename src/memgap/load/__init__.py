"""OpenAI-compatible streaming load: workload specs, the client, per-request records
and the summary derived from them."""

from memgap.load.client import WorkloadResult, run_workload, run_workload_sync
from memgap.load.prompts import build_prompt
from memgap.load.records import Percentiles, RequestRecord, WorkloadSummary, summarize
from memgap.load.spec import WorkloadSpec

__all__ = [
    "Percentiles",
    "RequestRecord",
    "WorkloadResult",
    "WorkloadSpec",
    "WorkloadSummary",
    "build_prompt",
    "run_workload",
    "run_workload_sync",
    "summarize",
]
