import pytest

from memgap.errors import UsageError
from memgap.load.spec import WorkloadSpec


def test_defaults_round_trip_through_dict() -> None:
    spec = WorkloadSpec(api="chat", request_rate_per_s=2.5, arrival="poisson", model="m")
    d = spec.to_dict()
    assert d["api"] == "chat" and d["request_rate_per_s"] == 2.5
    assert WorkloadSpec.from_dict(d) == spec
    assert spec.path == "/v1/chat/completions"
    assert WorkloadSpec().path == "/v1/completions"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api": "responses"},
        {"arrival": "burst"},
        {"requests": 0},
        {"concurrency": 0},
        {"output_tokens": 0},
        {"prompt_tokens": -1},
        {"warmup_requests": -1},
        {"request_rate_per_s": 0.0},
        {"request_rate_per_s": float("inf")},
        {"timeout_s": 0.0},
        {"requests": True},
    ],
)
def test_invalid_specs_are_usage_errors(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        WorkloadSpec(**kwargs)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(UsageError, match="unknown keys"):
        WorkloadSpec.from_dict({**WorkloadSpec().to_dict(), "burstiness": 2})
