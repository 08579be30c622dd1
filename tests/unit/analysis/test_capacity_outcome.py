"""A capacity search read back (memgap.analysis.capacity_outcome): plan's prediction from a
run's own record, the diagnosis and the comparison of arms, preemptions from the series."""

from __future__ import annotations

from memgap.analysis.capacity_outcome import (
    ArmOutcome,
    compare_arms,
    diagnose,
    predict,
    preemptions,
)
from memgap.capacity import Arm, Ladder, SearchSettings, Trial, estimate, next_step
from memgap.load.records import RequestRecord
from memgap.load.slo import parse_slo

SLO = parse_slo("ttft_p99_s<=2,errors<=0%")


def req(i: int, ttft: float) -> RequestRecord:
    return RequestRecord(i, False, 0.0, 0.0, ttft, (0.02,) * 7, ttft + 1.0, 8, 8, 64, 200, None)


def test_prediction_reads_the_runs_own_budget() -> None:
    llama = {"status": "ok", "engine_report": {"kv_cache_tokens": 3072}, "engine_options": {"parallel": 12},
             "spec": {"engine": {"kind": "llamacpp"}}}  # fmt: skip
    p = predict(llama, 256)
    assert (p.kv_sequences, p.slots, p.predicted, p.binds) == (12, 12, 12, "kv")
    assert predict({**llama, "engine_options": {"parallel": 4}}, 256).binds == "slots"
    vllm = {"status": "ok", "engine_report": {"kv_cache_tokens": 4096, "kv_cache_blocks": 256},
            "spec": {"engine": {"kind": "vllm", "max_num_seqs": None}}}  # fmt: skip
    v = predict(vllm, 200)
    assert (v.block_size, v.kv_sequences, v.predicted, v.binds) == (16, 19, 19, "kv")
    assert predict({"engine_report": {}}, 256).predicted is None


def test_comparison_of_arms_without_a_boundary() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 8, 1))
    # every load on the ladder met the SLO: the boundary is at its top or above
    trials = [Trial(r, f"r{r}", tuple(req(i, 0.5) for i in range(4))) for r in (0, 1, 3, 7)]
    est = estimate(trials, SLO, s)
    step = next_step(est, s)
    a = ArmOutcome(Arm("native", 1024), step, est, predict({"status": "ok", "engine_report": {"kv_cache_tokens": 1024},
                   "engine_options": {"parallel": 4}}, 256), {})  # fmt: skip
    b = ArmOutcome(Arm("native", 3072), step, est, None, {})
    c = compare_arms(a, b)
    assert c["predicted_a_over_b"] is None and c["measured_a_over_b"] == 1.0
    d = diagnose(est, a.prediction, SLO)
    assert d["why"].startswith("the SLO held up to the top of the ladder (8)")
    assert diagnose(est, None, SLO)["why"].startswith("no prediction")


def test_preemptions_rise_over_the_workload() -> None:
    series = {"marks": {"ready": 1.0, "end": 3.0},
              "columns": {"t_s": [0.0, 1.0, 2.0, 3.0, 4.0], "preemptions_total": [9.0, 10.0, None, 14.0, 20.0]}}
    assert preemptions(series) == 4.0 and preemptions(None) is None
    assert preemptions({"columns": {"t_s": [0.0]}, "marks": {}}) is None


def test_a_run_that_failed_at_the_lowest_load_is_the_why() -> None:
    s = SearchSettings(Ladder("concurrency", 1, 4, 1))
    trial = Trial(0, "r0", (), "engine exited with status 1 before it was ready",
                  {"failure": "engine exited with status 1 before it was ready"})
    est = estimate([trial], SLO, s)
    pred = predict({"status": "ok", "engine_report": {"kv_cache_tokens": 1024}, "engine_options": {"parallel": 4}}, 256)
    d = diagnose(est, pred, SLO)
    assert d["agrees"] is False
    assert d["why"] == "the SLO failed at the lowest load (1): the run failed: engine exited with status 1 before it was ready"


def test_a_boundary_beyond_the_prediction_names_what_the_engine_did_there() -> None:
    # vLLM admits requests on their prompt's blocks and preempts when decoding runs out:
    # the SLO can hold past the count whose whole KV fits
    s = SearchSettings(Ladder("concurrency", 1, 8, 1))
    signals = {"engine_waiting_peak": 1.0, "kv_usage_peak": 1.0, "preemptions": 2.0}
    trials = [Trial(r, f"r{r}-{k}", tuple(req(i, 0.5 if r < 5 else 5.0) for i in range(4)), None, signals)
              for r in (0, 1, 3, 4, 5) for k in range(2)]  # fmt: skip
    est = estimate(trials, SLO, s)
    assert est.load(est.boundary_rung) == 5.0
    pred = predict({"status": "ok", "engine_report": {"kv_cache_tokens": 640}, "spec": {"engine": {"kind": "vllm"}}}, 256)
    assert pred.predicted == 2 and pred.slots is None
    d = diagnose(est, pred, SLO)
    assert d["agrees"] is False
    assert d["why"].startswith("the SLO held beyond the predicted 2 up to load 5 (queue peak 1, KV usage 100%, 2 preempted)")


def test_the_cost_sentence_says_when_a_smaller_kv_cache_cost_nothing() -> None:
    from memgap.analysis.capacity_outcome import cost_sentence

    s = SearchSettings(Ladder("concurrency", 1, 8, 1))
    # both arms met the SLO up to 4 and missed it at 5: the same boundary
    trials = [Trial(r, f"r{r}-{k}", tuple(req(i, 0.5 if r < 4 else 5.0) for i in range(4)))
              for r in (0, 1, 3, 4) for k in range(2)]  # fmt: skip
    est = estimate(trials, SLO, s)
    step = next_step(est, s)

    def arm(env: str, tokens: int | None) -> ArmOutcome:
        rec = {"status": "ok", "engine_report": {"kv_cache_tokens": tokens}, "engine_options": {"parallel": 8}}
        return ArmOutcome(Arm(env, tokens), step, est, predict(rec, 256) if tokens else None, {})

    big, small = arm("native", 2048), arm("docker", 1024)
    assert cost_sentence(big, small, "ttft_p99_s<=2", "capacity-x") == (
        "In capacity search capacity-x, docker/ctx=1024's 2.00\u00d7 smaller KV cache cost nothing: it served "
        "1.00\u00d7 the concurrent requests at ttft_p99_s<=2 (boundary 4 [4-4] against 4 [4-4] for native/ctx=2048; "
        "plan predicted 0.50\u00d7).")  # fmt: skip
    same = cost_sentence(big, arm("sandbox", 2048), "ttft_p99_s<=2", "capacity-x")
    assert same is not None and "sandbox/ctx=2048 has the same KV cache and served 1.00\u00d7 the concurrent requests" in same
    assert "plan predicted 1.00\u00d7)" in same
    # no KV size on one side: nothing to cite
    assert cost_sentence(big, arm("docker", None), "ttft_p99_s<=2", "capacity-x") is None
