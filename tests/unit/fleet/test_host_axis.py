"""The host as a study axis: [cluster] in experiment files, fair randomized blocks on each
host, a plan fingerprint that keeps one-machine studies as they were, and selectors /
compare groups that split by host."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from memgap.analysis.compare import group_name
from memgap.analysis.selectors import select_runs
from memgap.errors import UsageError
from memgap.experiment import parse_experiment
from memgap.fleet.faults import failed_record
from memgap.matrix import Cell, cells, plan_runs
from memgap.spec import RunSpec
from memgap.store import Store
from memgap.study import run_study

BASE = '[study]\nname = "s"\nenvironments = ["native", "sandbox"]\niterations = 4\nseed = 3\n'


def test_cluster_section_parses_and_is_checked() -> None:
    exp = parse_experiment(BASE + '[cluster]\naddress = "auto"\nhosts = ["spark", "gh200"]\nretry_lost = true\n')
    assert exp.cluster.address == "auto" and exp.cluster.hosts == ["spark", "gh200"] and exp.cluster.retry_lost
    with pytest.raises(UsageError, match=r"exp.toml:7: cluster.hosts: .*each host once"):
        parse_experiment(BASE + '[cluster]\nhosts = ["a", "a"]\n', origin="exp.toml")
    with pytest.raises(UsageError, match="cluster.colour"):
        parse_experiment(BASE + '[cluster]\ncolour = "red"\n')


def test_fingerprint_without_hosts_is_the_one_machine_fingerprint() -> None:
    plain = parse_experiment(BASE)
    assert "cluster" not in plain.plan_settings()
    # address and retry policy change no run: a resume may change them
    same = parse_experiment(BASE + '[cluster]\naddress = "ray://head:10001"\nretry_lost = true\n')
    assert same.fingerprint() == plain.fingerprint()
    hosts = parse_experiment(BASE + '[cluster]\nhosts = ["a", "b"]\n')
    assert hosts.fingerprint() != plain.fingerprint()
    assert hosts.plan_settings()["cluster"] == {"hosts": ["a", "b"]}
    # a stored plan reads back as an experiment (report/build.py does this)
    assert type(hosts).model_validate(hosts.plan_settings()).cluster.hosts == ["a", "b"]


def test_each_host_gets_randomized_blocks_of_its_own_cells() -> None:
    exp = parse_experiment(BASE + '[cluster]\nhosts = ["a", "b"]\n')
    assert len(cells(exp)) == 4 and {c.host for c in cells(exp)} == {"a", "b"}
    plan = plan_runs(exp)
    for host in ("a", "b"):
        mine = [p for p in plan if p.cell.host == host]
        assert len(mine) == 8
        for block in range(1, 5):  # each block: every environment of this host once
            assert sorted(p.cell.environment for p in mine if p.block == block) == ["native", "sandbox"]
        # runs of a host, in plan order, go block by block
        assert [p.block for p in mine] == sorted(p.block for p in mine)
        firsts = Counter(next(p.cell.environment for p in mine if p.block == b) for b in range(1, 5))
        assert len(firsts) == 2  # shuffled per block, not always the same environment first
    # the one-machine plan is what it was before the host axis: same cells, same shuffle
    plain = plan_runs(parse_experiment(BASE))
    rng, before = random.Random(3), []
    for _ in range(4):
        order = [Cell("embedded", "base", "native"), Cell("embedded", "base", "sandbox")]
        rng.shuffle(order)
        before += order
    assert [p.cell for p in plain] == before
    assert all("host" not in p.cell.to_dict() for p in plain)
    assert plan[0].cell.to_dict()["host"] in ("a", "b")


def test_a_host_axis_needs_a_cluster(tmp_path: Path) -> None:
    exp = parse_experiment(BASE + '[cluster]\nhosts = ["a"]\n')
    with Store(tmp_path / "s.db") as st, pytest.raises(UsageError, match="--ray ADDRESS"):
        run_study(exp, st)


def _stored(st: Store, run_id: str, host: dict[str, str], env: str = "native") -> None:
    spec = RunSpec.from_dict({"environment": {"name": env}})
    rec = failed_record(spec, run_id=run_id, failure="x", host=host, model="m.gguf")
    st.add_run(rec)


def test_host_selector_and_compare_groups_split_by_host(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as st:
        _stored(st, "r1", {"hostname": "vm", "name": "node-a"})
        _stored(st, "r2", {"hostname": "vm", "name": "node-b"})
        _stored(st, "r3", {"hostname": "spark"})  # a one-machine run: its hostname
        assert [r.run_id for r in select_runs(st, "host=node-b")] == ["r2"]
        assert [r.run_id for r in select_runs(st, "host=spark,environment=native")] == ["r3"]
        with pytest.raises(UsageError, match="host: node-a, node-b, spark"):
            select_runs(st, "host=h100")
        names = {r.run_id: group_name(r) for r in st.runs()}
    assert names == {"r1": "m.gguf @ node-a", "r2": "m.gguf @ node-b", "r3": "m.gguf"}
