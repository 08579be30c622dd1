"""OpenAI-compatible streaming load: workload specs, the client, per-request records
and the summary derived from them."""

from memgap.load.records import Percentiles, RequestRecord, WorkloadSummary, summarize
from memgap.load.spec import WorkloadSpec

__all__ = ["Percentiles", "RequestRecord", "WorkloadSpec", "WorkloadSummary", "summarize"]
