"""Study orchestration with a test double in place of the runner: resume after a kill,
after Ctrl-C, refusal when the plan changed, and early stopping with iterations = "auto"."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pytest

from memgap.errors import UsageError
from memgap.experiment import Experiment, parse_experiment
from memgap.matrix import Cell, CooldownRecord
from memgap.spec import RunSpec
from memgap.store import Store
from memgap.study import run_study


class EngineDouble:
    def __init__(self, path: Path) -> None:
        self.path = path

    def model(self) -> Any:
        class M:
            path = self.path
        return M()


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


class ExecuteDouble:
    """Writes a run record the way memgap.runner.execute_run does; values per environment
    come from ``values``; can die before or after committing a chosen call."""

    def __init__(self, values: dict[str, Any], *, die_at: int | None = None, commit_before_dying: bool = False,
                 interrupt_at: int | None = None) -> None:
        self.values = values
        self.calls = 0
        self.die_at, self.commit_before_dying, self.interrupt_at = die_at, commit_before_dying, interrupt_at
        self.ids = (f"r{i:04d}" for i in itertools.count())

    def __call__(self, cfg: RunSpec, store: Store, **kw: Any) -> dict[str, Any]:
        self.calls += 1
        run_id = next(self.ids)
        v = self.values[cfg.environment.name]
        val = v(self.calls) if callable(v) else v
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        rec = {"run_id": run_id, "study_id": cfg.study_id, "created_at": now, "finished_at": now,
               "environment": cfg.environment.name, "engine": "double", "model": "m", "status": "ok",
               "failure": None, "output_tokens_per_s": val["tps"],
               "engine_report": {"kv_cache_bytes": val["kv"]}}
        if self.calls == self.die_at:
            if self.commit_before_dying:
                store.add_run(rec)
            raise Killed
        if self.calls == self.interrupt_at:
            store.add_run({**rec, "status": "failed", "failure": "interrupted (Ctrl-C or SIGTERM)"})
            raise KeyboardInterrupt
        store.add_run(rec)
        return rec


def _exp(extra: str = "", iterations: str = "3") -> Experiment:
    return parse_experiment(f'[study]\nname = "t"\nenvironments = ["native", "sandbox"]\n'
                            f"iterations = {iterations}\nseed = 4\n{extra}")


def _run(exp: Experiment, st: Store, ex: ExecuteDouble, tmp: Path) -> Any:
    model = tmp / "model.gguf"
    model.write_bytes(b"x")
    return run_study(exp, st, execute=ex, engine_factory=lambda e, m, v: EngineDouble(model),  # type: ignore[arg-type, return-value]
                     env_factory=lambda e, c: c.environment,  # type: ignore[arg-type, return-value]
                     cooldown=lambda cfg: CooldownRecord(0, 0, None, None, None, None, None))


STEADY = {"native": {"tps": 100.0, "kv": 1000}, "sandbox": {"tps": 100.0, "kv": 1000}}


def _counts(st: Store) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in st.study_runs("study:t"):
        if r["status"] == "finished":
            out[r["plan_index"]] = out.get(r["plan_index"], 0) + 1
    return out


@pytest.mark.parametrize("commit_before_dying", [False, True])
def test_killed_study_resumes_without_losing_or_doubling(tmp_path: Path, commit_before_dying: bool) -> None:
    exp = _exp()
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(Killed):
            _run(exp, st, ExecuteDouble(STEADY, die_at=4, commit_before_dying=commit_before_dying), tmp_path)
        assert len(_counts(st)) == 3
        rows_before = st.study_runs("study:t")
        assert rows_before[-1]["status"] == "started"  # the kill left it open
        ex = ExecuteDouble(STEADY)
        ex.ids = (f"s{i:04d}" for i in itertools.count())
        out = _run(exp, st, ex, tmp_path)
        counts = _counts(st)
        assert counts == {i: 1 for i in range(6)}  # every planned run finished exactly once
        assert out.resumed and out.notes
        if commit_before_dying:
            # the runner had committed run 4: it is adopted, not redone
            assert ex.calls == 2
            assert "stored" in out.notes[0]
        else:
            assert ex.calls == 3
            assert [r["status"] for r in st.study_runs("study:t") if r["plan_index"] == 3] == ["interrupted", "finished"]
        assert len([r for r in st.runs() if r.status == "ok"]) == 6


def test_ctrl_c_run_is_recorded_interrupted_and_redone(tmp_path: Path) -> None:
    exp = _exp()
    with Store(tmp_path / "s.db") as st:
        with pytest.raises(KeyboardInterrupt):
            _run(exp, st, ExecuteDouble(STEADY, interrupt_at=2), tmp_path)
        rows = st.study_runs("study:t")
        assert rows[-1]["status"] == "interrupted" and rows[-1]["run_id"] == "r0001"
        ex = ExecuteDouble(STEADY)
        ex.ids = (f"s{i:04d}" for i in itertools.count())
        _run(exp, st, ex, tmp_path)
        assert ex.calls == 5 and _counts(st) == {i: 1 for i in range(6)}
        # a finished study run again does nothing
        again = ExecuteDouble(STEADY)
        _run(exp, st, again, tmp_path)
        assert again.calls == 0


def test_changed_plan_is_refused_naming_the_change(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        _run(_exp(), st, ExecuteDouble(STEADY), tmp_path)
        with pytest.raises(UsageError, match=r"study\.iterations: 3 -> 4"):
            _run(_exp(iterations="4"), st, ExecuteDouble(STEADY), tmp_path)
        # cooldown is not part of the plan: changing it resumes
        _run(_exp("[cooldown]\npause_s = 1\n"), st, ExecuteDouble(STEADY), tmp_path)


def test_runs_alternate_environments_in_blocks(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        _run(_exp(), st, ExecuteDouble(STEADY), tmp_path)
        rows = st.study_runs("study:t")
        for block in (1, 2, 3):
            assert sorted(r["cell"]["environment"] for r in rows if r["block"] == block) == ["native", "sandbox"]


def test_auto_stops_early_when_verdicts_settle(tmp_path: Path) -> None:
    noise = itertools.cycle([0.0, 0.4, -0.3, 0.2, -0.5, 0.1])
    values = {"native": lambda i: {"tps": 100.0 + next(noise), "kv": 1000},
              "sandbox": lambda i: {"tps": 100.0 + next(noise), "kv": 1000}}
    exp = _exp('max_iterations = 10\n[[metrics]]\nname = "kv_cache_bytes"\nmargin = 0\n'
               '[[metrics]]\nname = "output_tokens_per_s"\nmargin = "5%"\n', iterations='"auto"')
    with Store(tmp_path / "s.db") as st:
        out = _run(exp, st, ExecuteDouble(values), tmp_path)
    g = out.groups[0]
    assert g.settled
    assert {v["verdict"] for v in g.verdicts.values()} == {"equivalent"}
    assert out.runs_finished < out.runs_planned_fixed == 20
    assert out.runs_finished == 2 * g.blocks_run
    import json

    assert json.loads(json.dumps(out.to_dict()))["groups"][0]["settled"] is True


def test_auto_detects_a_real_difference(tmp_path: Path) -> None:
    values = {"native": {"tps": 100.0, "kv": 1000}, "sandbox": {"tps": 100.0, "kv": 600}}
    exp = _exp('[[metrics]]\nname = "kv_cache_bytes"\nmargin = 0\n', iterations='"auto"')
    with Store(tmp_path / "s.db") as st:
        out = _run(exp, st, ExecuteDouble(values), tmp_path)
    (v,) = out.groups[0].verdicts.values()
    assert v["verdict"] == "different" and out.runs_finished == 6  # min_iterations = 3 blocks


def test_cell_is_hashable_group() -> None:
    assert Cell("m", "base", "native").group == ("m", "base")


def test_command_line_overrides_the_file() -> None:
    from memgap.cli.run_study import apply_overrides

    exp = _exp("[workload]\nrequests = 8\n[environment]\ncontainer = { network = \"host\" }\n")
    given = {"requests": 3, "env": ["native"], "model": Path("/m.gguf"), "memory": "1g", "sample_rate": 20.0,
             "ready_timeout": 30.0, "slo": "ttft_s=1", "dataset": Path("/d.jsonl")}
    out = apply_overrides(exp, given)
    spec = out.cell_spec(environment="native", model=out.models[0])
    assert spec.workload.requests == 3 and spec.workload.output_tokens == 64
    assert out.study.environments == ["native"] and out.models == ["/m.gguf"]
    assert spec.environment.container.network == "host" and spec.environment.container.memory == "1g"
    # the four options an experiment file used to ignore
    assert spec.sampler.rate_hz == 20.0 and spec.timeouts.ready_s == 30.0
    assert spec.slo == "ttft_s=1" and spec.workload.dataset == "/d.jsonl"
    assert out.fingerprint() != exp.fingerprint()


def test_run_with_a_bad_experiment_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from memgap.cli.main import main

    bad = tmp_path / "e.toml"
    bad.write_text('[study]\nname = "x"\niterations = 0\n')
    assert main(["run", str(bad), "--store", str(tmp_path / "s.db")]) == 2
    assert f"{bad}:3: study.iterations" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2


def test_engines_left_running_by_a_killed_run_are_named(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from memgap.study import leftover_engines

    fake = tmp_path / "llama-server"
    fake.symlink_to(shutil.which("sleep") or "/bin/sleep")
    before = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)).isoformat()
    p = subprocess.Popen([str(fake), "30"])
    try:
        notes = leftover_engines(before)
        assert any(f"pid {p.pid}" in n for n in notes)
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)).isoformat()
        assert not any(f"pid {p.pid}" in n for n in leftover_engines(later))
    finally:
        p.kill()
        p.wait()


def test_variants_are_compared_apart(tmp_path: Path) -> None:
    from memgap.analysis.compare import build_comparison
    from memgap.analysis.metrics import METRICS

    exp = _exp('[[variants]]\nname = "small"\nengine = { ctx_size = 1024 }\n[[variants]]\nname = "big"\n')
    labels: list[str | None] = []
    ex = ExecuteDouble(STEADY)
    orig = ex.__call__

    def spy(cfg: RunSpec, *a: Any, **kw: Any) -> dict[str, Any]:
        labels.append(cfg.label)
        return orig(cfg, *a, **kw)

    with Store(tmp_path / "s.db") as st:
        model = tmp_path / "model.gguf"
        model.write_bytes(b"x")
        run_study(exp, st, execute=spy, engine_factory=lambda e, m, v: EngineDouble(model),  # type: ignore[arg-type, return-value]
                  env_factory=lambda e, c: c.environment,  # type: ignore[arg-type, return-value]
                  cooldown=lambda cfg: CooldownRecord(0, 0, None, None, None, None, None))
        out = build_comparison(st, [], metrics=list(METRICS), margin=0.05, alpha=0.05, seed=0)
    assert sorted(labels) == ["big"] * 6 + ["small"] * 6
    assert sorted(g["model"] for g in out["groups"]) == ["m [big]", "m [small]"]
    assert all(m["a"]["n"] == 3 for g in out["groups"] for m in g["metrics"])


def test_version_one_store_is_read_and_gains_the_study_tables(tmp_path: Path) -> None:
    import sqlite3

    from memgap.store import SCHEMA_VERSION

    db = tmp_path / "v1.db"
    with Store(db) as st:
        st.add_run({"run_id": "old", "created_at": "2026-01-01T00:00:00", "status": "ok",
                    "environment": "native", "engine": "e"})
    con = sqlite3.connect(db)
    con.executescript("DROP TABLE study_runs; DROP TABLE studies; UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    con.close()
    with Store(db) as st:
        assert st.schema_version == SCHEMA_VERSION
        assert [r.run_id for r in st.runs()] == ["old"] and st.study_runs() == []
        st.add_study("study:x", created_at="t", experiment_path=None, fingerprint="f", plan={"a": 1})
        assert st.study("study:x")["plan"] == {"a": 1}  # type: ignore[index]
