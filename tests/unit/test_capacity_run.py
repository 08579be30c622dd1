"""Capacity searches through the store (memgap.capacity_run): two KV budgets, arms taking
turns, a killed search resumed, settings stored once, the diagnosis when compute breaks the
SLO first -- against a fake engine that behaves like a KV-bound llama.cpp server
(slots = ctx // tokens per request; a request beyond them waits for a whole generation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kv_bound_double import KvBoundServer
from memgap.analysis.capacity_outcome import capacities_in_store, capacity_outcome
from memgap.capacity import (
    Arm,
    CapacitySettings,
    Ladder,
    SearchSettings,
    arm_of_label,
    point_requests,
    run_label,
)
from memgap.capacity_run import new_capacity_id, open_search, run_capacity
from memgap.errors import UsageError
from memgap.load.slo import parse_slo
from memgap.spec import LlamaCppSpec, RunSpec
from memgap.store import Store, open_store

SLO_TEXT = "ttft_p99_s<=2,errors<=0%"
SLO = parse_slo(SLO_TEXT)


PER_REQUEST = 256  # prompt 64 + output 192


def make_settings(cid: str = "capacity-test", **search: Any) -> CapacitySettings:
    base = RunSpec.from_dict({"workload": {"prompt_tokens": 64, "output_tokens": 192}})
    return CapacitySettings(cid, base.to_dict(), (Arm("native", 1024), Arm("native", 3072)), SLO_TEXT,
                            SearchSettings(Ladder("concurrency", 1, 32, 1), **search))  # fmt: skip


def spec_for(settings: CapacitySettings) -> Any:
    def f(arm: Arm) -> RunSpec:
        base = RunSpec.from_dict(dict(settings.base)).with_environment(arm.environment)
        assert arm.ctx_tokens is not None
        return base.replace(engine=LlamaCppSpec(ctx_size=arm.ctx_tokens, parallel=arm.ctx_tokens // PER_REQUEST))
    return f


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "capacity.db") as st:
        yield st


def test_two_kv_budgets_three_times_apart_give_apart_boundaries(store: Store) -> None:
    settings_ = make_settings()
    server = KvBoundServer()
    seen: list[tuple[str, str]] = []
    out = run_capacity(settings_, spec_for(settings_), store, execute=server, make=lambda e: e,
                       on_point=lambda arm, step, rec: seen.append((arm.name, step.reason)))  # fmt: skip
    assert out.done
    small, large = out.arms
    assert small.estimate.to_dict()["boundary"] == 4.0 and large.estimate.to_dict()["boundary"] == 12.0
    assert (small.estimate.to_dict()["low"], small.estimate.to_dict()["high"]) == (4.0, 4.0)
    assert (large.estimate.to_dict()["low"], large.estimate.to_dict()["high"]) == (12.0, 12.0)
    # arms take turns (the one with fewer runs goes next)
    assert [a for a, _ in seen[:4]] == ["native/ctx=1024", "native/ctx=3072"] * 2
    # fewer runs than a grid of the same resolution
    d = out.to_dict()
    assert d["runs"] == len(server.specs) == len(store.runs()) < d["grid"]["once"] == 64
    # every point is a stored run of the search, its load, arm and SLO in its spec
    first = store.runs()[0]
    assert first.study_id == "capacity-test" and first.label == "capacity-test native/ctx=1024 c=1"
    assert first.record["spec"]["slo"] == SLO_TEXT and first.record["workload"]["requests"] == 4
    assert server.specs[4].workload.concurrency == 4 and server.specs[4].workload.requests == 8
    # plan's prediction from each run's own KV budget agrees, and the ratio reads both ways
    assert small.prediction is not None and small.prediction.predicted == 4 and small.prediction.binds == "kv"
    assert large.prediction is not None and large.prediction.predicted == 12
    assert small.diagnosis["agrees"] and large.diagnosis["agrees"]
    c = d["comparisons"][0]
    assert c["predicted_a_over_b"] == pytest.approx(1 / 3) and c["predicted_b_over_a"] == 3.0
    assert c["measured_a_over_b"] == pytest.approx(1 / 3) and c["measured_b_over_a"] == 3.0
    assert c["kv_tokens_b_over_a"] == 3.0 and c["intervals_overlap"] is False
    assert d["sentences"][0].startswith("native/ctx=1024 has 0.33x the KV tokens of native/ctx=3072")
    # the engine's signals at each point: the queue the small budget built at 5
    r5 = next(r for r in small.estimate.rungs if r.load == 5.0)
    assert r5.signals["engine_waiting_peak"] == 1.0 and r5.signals["preemptions"] == 0.0
    assert small.diagnosis["evidence"] == ("at load 4 (queue peak 0, KV usage 100%, 0 preempted) the SLO held; "
                                          "at 5 (queue peak 1, KV usage 100%, 0 preempted) ttft_p99_s 3.2 > 2")
    # the report rebuilds it from the store alone
    again = capacities_in_store(store, store.runs())
    assert list(again) == ["capacity-test"] and again["capacity-test"]["runs"] == d["runs"]


def test_a_killed_search_resumes_without_redoing_finished_points(store: Store) -> None:
    whole = KvBoundServer()
    with open_store(store.path.with_name("whole.db")) as other:
        s = make_settings()
        run_capacity(s, spec_for(s), other, execute=whole, make=lambda e: e)
    s = make_settings()
    killed = KvBoundServer(crash_at=7)
    with pytest.raises(KeyboardInterrupt):
        run_capacity(s, spec_for(s), store, execute=killed, make=lambda e: e)
    assert len(store.runs()) == 7
    # a run stopped by Ctrl-C is stored as failed 'interrupted': it is not a finished point
    rec = dict(store.runs()[-1].record, run_id="run-int", failure="interrupted (Ctrl-C or SIGTERM)", status="failed",
               created_at="2026-12-01T00:00:59")  # fmt: skip
    store.add_run(rec)
    resumed = KvBoundServer()
    out = run_capacity(make_settings(), spec_for(s), store, execute=resumed, make=lambda e: e)
    labels = [x.label for x in whole.specs]
    assert [x.label for x in killed.specs] + [x.label for x in resumed.specs] == labels
    assert out.runs == len(labels) and out.done


def test_a_search_is_stored_once_and_resumed_only_with_its_own_settings(store: Store) -> None:
    s = make_settings()
    assert open_search(store, s) is False and open_search(store, s) is True
    with pytest.raises(UsageError, match="stored with other settings"):
        open_search(store, make_settings(tolerance=0))
    assert capacity_outcome(store, "capacity-test").settings == s
    with pytest.raises(UsageError, match="no capacity search"):
        capacity_outcome(store, "capacity-nope")
    assert new_capacity_id("night") == "capacity-night" == new_capacity_id("capacity-night")
    assert new_capacity_id().startswith("capacity-")
    with pytest.raises(UsageError):
        new_capacity_id("a b")


def test_labels_and_point_sizes() -> None:
    s = make_settings()
    label = run_label("capacity-x", Arm("sandbox", None, 64 << 20), s.search.ladder, 3)
    assert label == "capacity-x sandbox/kv=67108864B c=4" and arm_of_label(label, "capacity-x") == "sandbox/kv=67108864B"
    assert arm_of_label(label, "capacity-y") is None and arm_of_label(None, "capacity-x") is None
    assert point_requests(s, 1) == 4 and point_requests(s, 7) == 14
    assert CapacitySettings.from_dict(s.to_dict()) == s and s.fingerprint() == CapacitySettings.from_dict(s.to_dict()).fingerprint()
    with pytest.raises(UsageError, match="distinct arms"):
        CapacitySettings("c", {}, (Arm("native", 1), Arm("native", 1)), SLO_TEXT, s.search)


def test_diagnosis_names_compute_when_the_slo_breaks_before_kv(store: Store) -> None:
    # prefill 0.4 s per request in flight: at 6 the 2 s bound breaks, though 12 fit
    slow = KvBoundServer(prefill_s=0.4)
    s = CapacitySettings("capacity-slow", make_settings().base, (Arm("native", 3072),), SLO_TEXT,
                         SearchSettings(Ladder("concurrency", 1, 32, 1)))  # fmt: skip
    out = run_capacity(s, spec_for(s), store, execute=slow, make=lambda e: e)
    arm = out.arms[0]
    assert arm.estimate.load(arm.estimate.boundary_rung) == 5.0
    assert arm.diagnosis["agrees"] is False
    why = arm.diagnosis["why"]
    assert why.startswith("compute-bound: at load 6, below the predicted 12, no request waited in the engine")
    assert "ttft_p99_s 2.4 > 2" in why


def test_a_rate_search_sets_the_rate_under_the_clients_cap() -> None:
    from memgap.capacity_run import point_spec

    base = RunSpec.from_dict({"workload": {"prompt_tokens": 64, "output_tokens": 192}})
    s = CapacitySettings("capacity-rate", base.to_dict(), (Arm("native", 1024),), SLO_TEXT,
                         SearchSettings(Ladder("rate", 0.5, 8, 0.25)), requests_per_load=5, concurrency_cap=16)  # fmt: skip
    spec = point_spec(s, base, Arm("native", 1024), 4)
    assert spec.workload.request_rate_per_s == pytest.approx(0.5 * 1.25**4)
    assert spec.workload.concurrency == 16 and spec.workload.requests == 7  # ceil(5 s x 1.22/s)
    assert spec.label == "capacity-rate native/ctx=1024 rate=1.221" and spec.study_id == "capacity-rate"
    assert spec.slo == SLO_TEXT


def test_explain_cites_the_capacity_search_its_two_sides_are_arms_of(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from memgap.analysis.capacity_outcome import capacity_citation
    from memgap.cli.main import main

    s = CapacitySettings("capacity-env", make_settings().base, (Arm("native", 3072), Arm("docker", 1024)), SLO_TEXT,
                         SearchSettings(Ladder("concurrency", 1, 32, 1)))  # fmt: skip
    run_capacity(s, spec_for(s), store, execute=KvBoundServer(), make=lambda e: e)
    native = [r for r in store.runs() if r.environment == "native"]
    docker = [r for r in store.runs() if r.environment == "docker"]
    sentence = capacity_citation(store, native, docker)
    assert sentence == ("In capacity search capacity-env, docker/ctx=1024's 3.00\u00d7 smaller KV cache cost 3.00\u00d7 in "
                        "concurrent requests at ttft_p99_s<=2,errors<=0% (boundary 4 [4-4] against 12 [12-12] for "
                        "native/ctx=3072; plan predicted 0.33\u00d7).")  # fmt: skip
    # the other way round, it reads from B's side
    assert capacity_citation(store, docker, native) == (
        "In capacity search capacity-env, native/ctx=3072's 3.00\u00d7 larger KV cache gave 3.00\u00d7 the concurrent "
        "requests at ttft_p99_s<=2,errors<=0% (boundary 12 [12-12] against 4 [4-4] for docker/ctx=1024; plan "
        "predicted 3.00\u00d7).")  # fmt: skip
    # not two arms of one search: no citation
    assert capacity_citation(store, native, native) is None
    assert capacity_citation(store, native, native + docker) is None
    # explain selects the two sides and its answer ends with the sentence
    db = str(store.path)
    sel = ["study_id=capacity-env,environment=native", "study_id=capacity-env,environment=docker"]
    capsys.readouterr()
    assert main(["explain", *sel, "--store", db, "--json"]) == 0
    ans = json.loads(capsys.readouterr().out)["answer"]
    assert ans["capacity"] == sentence and ans["text"].endswith(" " + sentence)
    assert main(["explain", *sel, "--store", db, "--no-peak"]) == 0
    assert sentence in capsys.readouterr().out.replace("\n", " ")
    # one run of each arm, by id, cites it too; two runs of one arm do not
    a_id, b_id = native[0].run_id, docker[0].run_id
    assert main(["explain", a_id, b_id, "--store", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"]["capacity"] == sentence
    assert main(["explain", a_id, native[1].run_id, "--store", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"]["capacity"] is None
    # and the report's answer for native against docker cites it
    from memgap.analysis.compare import compare_runs
    from memgap.analysis.report_data import build_report

    data = build_report(store, store.runs(), compare_runs(store.runs()))
    assert [a["answer"]["capacity"] for a in data["answers"]] == [sentence]
