"""``memgap capacity`` with the engine runs replaced by a fake KV-bound llama.cpp server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import memgap.cli.capacity as cli_capacity
from kv_bound_double import KvBoundServer
from memgap import capacity_run
from memgap.cli.main import main
from memgap.store import open_store


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[KvBoundServer]:
    """The runs the command makes go to the last KvBoundServer in the list."""
    runs = [KvBoundServer()]
    real = capacity_run.run_capacity
    monkeypatch.setattr(cli_capacity, "run_capacity",
                        lambda *a, **k: real(*a, **k, execute=runs[-1], make=lambda e: e))  # fmt: skip
    return runs


ARGS = ["capacity", "--ctx-size", "1024", "--ctx-size", "3072", "--prompt-tokens", "64", "--output-tokens", "192",
        "--slo", "ttft_p99_s<=2"]  # fmt: skip


def test_two_budgets_json(fake: list[KvBoundServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    assert main([*ARGS, "--store", str(db), "--json", "--name", "kv3x"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["capacity_id"] == "capacity-kv3x" and out["done"] and out["runs_before"] == 0
    assert out["slo"] == "ttft_p99_s<=2,errors<=0%"  # a load where requests fail is past capacity
    small, large = out["arms"]
    assert (small["arm"], large["arm"]) == ("native/ctx=1024", "native/ctx=3072")
    assert [(a["estimate"]["boundary"], a["estimate"]["low"], a["estimate"]["high"]) for a in out["arms"]] == [
        (4.0, 4.0, 4.0), (12.0, 12.0, 12.0)]
    assert [a["prediction"]["predicted"] for a in out["arms"]] == [4, 12]
    assert all(a["diagnosis"]["agrees"] for a in out["arms"]) and all(a["reason"] == "converged" for a in out["arms"])
    assert out["runs"] == len(fake[0].specs) < out["grid"]["once"] == 64
    # 'fit' slots: the budget over 256 tokens per request
    assert {(s.engine.ctx_size, s.engine.parallel) for s in fake[0].specs} == {(1024, 4), (3072, 12)}  # type: ignore[union-attr]
    with open_store(db) as st:
        assert st.capacity_search("capacity-kv3x") is not None
        assert len(st.runs(where={"study_id": "capacity-kv3x"})) == out["runs"]
    # the same name and settings again: nothing left to run
    fake.append(KvBoundServer())
    assert main([*ARGS, "--store", str(db), "--json", "--name", "kv3x"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert fake[-1].specs == [] and again["runs_before"] == again["runs"] == out["runs"]
    # other settings under the same name are refused
    assert main([*ARGS, "--store", str(db), "--name", "kv3x", "--tolerance", "0"]) == 2
    assert "stored with other settings" in capsys.readouterr().err


def test_killed_search_resumes_by_id(fake: list[KvBoundServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    fake[0] = KvBoundServer(crash_at=5)
    assert main([*ARGS, "--store", str(db), "--name", "k"]) == 130
    assert "resume with memgap capacity --resume capacity-k" in capsys.readouterr().err
    done = [s.label for s in fake[0].specs]
    fake.append(KvBoundServer())
    assert main(["capacity", "--resume", "capacity-k", "--store", str(db)]) == 0
    printed = capsys.readouterr()
    assert "resuming after 5 runs" in printed.err
    labels = done + [s.label for s in fake[-1].specs]
    assert len(labels) == len(set(labels)) + 2 * 2  # the only labels seen twice: the repeats beside each boundary
    assert "native/ctx=1024" in printed.out and "a fixed grid of the same resolution (32 loads per arm): 64" in printed.out
    assert "plan predicts 0.33x the concurrent requests, measured 0.33x (0.33-0.33)" in printed.out


def test_dry_run_and_refusals(fake: list[KvBoundServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    assert main([*ARGS, "--store", str(db), "--dry-run", "--high", "16"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["rungs_per_arm"] == 16 and [a["predicted"] for a in plan["arms"]] == [4, 12]
    assert fake[0].specs == [] and not db.exists()
    for bad, why in ((["--slo", ""], "needs an SLO"), (["--start", "2.5"], "not a load on the ladder"),
                     (["--kv-cache-memory", "64MiB"], "vLLM's KV size"), (["--load", "users"], "concurrency or rate"),
                     (["--low", "0"], "0 < low <= high")):  # fmt: skip
        assert main([*ARGS, *bad, "--store", str(db)]) == 2, bad
        assert why in capsys.readouterr().err
    assert main(["capacity", "--resume", "capacity-nope", "--store", str(db)]) == 2


def test_arms_named_one_by_one() -> None:
    from memgap.capacity import Arm
    from memgap.cli.capacity import parse_arm
    from memgap.errors import UsageError

    assert parse_arm("native") == Arm("native")
    assert parse_arm("sandbox:1024") == Arm("sandbox", ctx_tokens=1024)
    assert parse_arm("docker:2MiB") == Arm("docker", kv_cache_bytes=2 << 20)
    for bad in ("moon:1024", "native:lots"):
        with pytest.raises(UsageError):
            parse_arm(bad)


def test_arm_pairs_an_environment_with_its_own_budget(fake: list[KvBoundServer], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = ["capacity", "--arm", "native:1024", "--arm", "sandbox:3072", *ARGS[5:], "--store", str(tmp_path / "c.db")]
    assert main([*args, "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(a["arm"], a["predicted"]) for a in plan["arms"]] == [("native/ctx=1024", 4), ("sandbox/ctx=3072", 12)]
    assert main([*args, "--ctx-size", "2048"]) == 2
    assert "--arm names each arm" in capsys.readouterr().err


def test_a_rate_search_plan(fake: list[KvBoundServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--load", "rate", "--low", "0.5", "--high", "8", "--store", str(tmp_path / "c.db"),
                 "--dry-run"]) == 0  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    s = plan["settings"]
    assert s["search"]["ladder"] == {"kind": "rate", "low": 0.5, "high": 8.0, "step": 0.1}
    assert plan["rungs_per_arm"] == 30 and s["concurrency_cap"] == 8
    assert s["base"]["workload"]["arrival"] == "poisson"
    assert main([*ARGS, "--load", "rate", "--arrival", "bursty", "--store", str(tmp_path / "c.db")]) == 2


def test_a_vllm_budget_too_small_for_max_model_len_is_refused_before_any_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from memgap.capacity import CapacitySettings
    from memgap.cli.capacity import arm_spec

    db = tmp_path / "c.db"
    base = ["capacity", "--engine", "vllm", "--slo", "ttft_p99_s<=1", "--set", "engine.max_model_len=512",
            "--store", str(db), "--dry-run"]  # fmt: skip
    # vLLM's default block: 128 tokens on a CPU, 16 on a GPU; it keeps one block back, so a
    # request of 512 needs 5 blocks of 128 (640 tokens) or 33 of 16 (528)
    for device, small, enough, blocks, block in (("cpu", 512, 640, 5, 128), ("cuda", 512, 528, 33, 16)):
        args = [*base, "--set", f"engine.device={device}"]
        assert main([*args, "--arm", f"native:{small}"]) == 2
        err = capsys.readouterr().err
        assert (f"KV budget {small} tokens: vLLM would get {small // block} blocks of {block} and keeps 1 back, so "
                "one request of engine.max_model_len 512 would not fit and it would refuse to start; give at least "
                f"{enough} tokens") in err, err
        assert main([*args, "--arm", f"native:{enough}"]) == 0
        settings = CapacitySettings.from_dict(json.loads(capsys.readouterr().out)["settings"])
        spec = arm_spec(settings, settings.arms[0])
        assert spec.engine.kind == "vllm" and spec.engine.block_size == block
        assert f"--num-gpu-blocks-override={blocks}" in spec.engine.extra_args
    assert not db.exists()
