"""Every option of ``memgap run`` works the same way from the command line and from a
spec file: the two give the same RunSpec, field by field (``--print-spec`` runs nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memgap.cli.main import main
from memgap.cli.spec_flags import FLAG_PATHS, build_spec, parse_set
from memgap.errors import UsageError
from memgap.spec import RunSpec

# flag parameter -> (command-line arguments, the same in a spec file, field path, expected value)
CASES: dict[str, tuple[list[str], dict[str, Any], str, Any]] = {
    "engine": (["--engine", "vllm"], {"engine": {"kind": "vllm"}}, "engine.kind", "vllm"),
    "requests": (["--requests", "7"], {"workload": {"requests": 7}}, "workload.requests", 7),
    "concurrency": (["--concurrency", "3"], {"workload": {"concurrency": 3}}, "workload.concurrency", 3),
    "rate": (["--rate", "2.5"], {"workload": {"request_rate_per_s": 2.5}}, "workload.request_rate_per_s", 2.5),
    "arrival": (["--arrival", "poisson"], {"workload": {"arrival": "poisson"}}, "workload.arrival", "poisson"),
    "prompt_tokens": (["--prompt-tokens", "33"], {"workload": {"prompt_tokens": 33}}, "workload.prompt_tokens", 33),
    "output_tokens": (["--output-tokens", "9"], {"workload": {"output_tokens": 9}}, "workload.output_tokens", 9),
    "dataset": (["--dataset", "/d.jsonl"], {"workload": {"dataset": "/d.jsonl"}}, "workload.dataset", "/d.jsonl"),
    "warmup": (["--warmup", "0"], {"workload": {"warmup_requests": 0}}, "workload.warmup_requests", 0),
    "api": (["--api", "chat"], {"workload": {"api": "chat"}}, "workload.api", "chat"),
    "request_timeout": (["--request-timeout", "9"], {"workload": {"timeout_s": 9}}, "workload.timeout_s", 9.0),
    "seed": (["--seed", "5"], {"workload": {"seed": 5}}, "workload.seed", 5),
    "slo": (["--slo", "ttft_s=0.5"], {"slo": "ttft_s=0.5"}, "slo", "ttft_s=0.5"),
    "model": (["--model", "/m.gguf"], {"engine": {"model_path": "/m.gguf"}}, "engine.model_path", "/m.gguf"),
    "ctx_size": (["--ctx-size", "4096"], {"engine": {"ctx_size": 4096}}, "engine.ctx_size", 4096),
    "parallel": (["--parallel", "2"], {"engine": {"parallel": 2}}, "engine.parallel", 2),
    "threads": (["--threads", "1"], {"engine": {"threads": 1}}, "engine.threads", 1),
    "mmap": (["--no-mmap"], {"engine": {"mmap": False}}, "engine.mmap", False),
    "kv_type": (["--kv-type", "q8_0"], {"engine": {"kv_type": "q8_0"}}, "engine.kv_type", "q8_0"),
    "kv_unified": (["--kv-unified"], {"engine": {"kv_unified": True}}, "engine.kv_unified", True),
    "server_path": (["--server-path", "/s"], {"engine": {"server_path": "/s"}}, "engine.server_path", "/s"),
    "engine_arg": (["--engine-arg=--flash-attn=on"], {"engine": {"extra_args": ["--flash-attn=on"]}},
                   "engine.extra_args", ["--flash-attn=on"]),
    "engine_python": (["--engine", "vllm", "--engine-python", "/p"], {"engine": {"kind": "vllm", "python": "/p"}},
                      "engine.python", "/p"),
    "device": (["--engine", "vllm", "--device", "cpu"], {"engine": {"kind": "vllm", "device": "cpu"}},
               "engine.device", "cpu"),
    "gpu_memory_utilization": (["--engine", "vllm", "--gpu-memory-utilization", "0.3"],
                               {"engine": {"kind": "vllm", "gpu_memory_utilization": 0.3}},
                               "engine.gpu_memory_utilization", 0.3),
    "kv_cache_memory": (["--engine", "vllm", "--kv-cache-memory", "256m"],
                        {"engine": {"kind": "vllm", "kv_cache_memory_bytes": "256m"}},
                        "engine.kv_cache_memory_bytes", 256 * 2**20),
    "max_model_len": (["--engine", "vllm", "--max-model-len", "512"],
                      {"engine": {"kind": "vllm", "max_model_len": 512}}, "engine.max_model_len", 512),
    "max_num_seqs": (["--engine", "vllm", "--max-num-seqs", "4"],
                     {"engine": {"kind": "vllm", "max_num_seqs": 4}}, "engine.max_num_seqs", 4),
    "enforce_eager": (["--engine", "vllm", "--enforce-eager"], {"engine": {"kind": "vllm", "enforce_eager": True}},
                      "engine.enforce_eager", True),
    "memory_limit": (["--env", "sandbox", "--memory-limit", "512m"],
                     {"environment": {"name": "sandbox", "memory_limit_bytes": "512m"}},
                     "environment.memory_limit_bytes", 512 * 2**20),
    "image": (["--image", "img:1"], {"environment": {"container": {"image": "img:1"}}},
              "environment.container.image", "img:1"),
    "rootfs": (["--rootfs", "/r"], {"environment": {"container": {"rootfs": "/r"}}},
               "environment.container.rootfs", "/r"),
    "memory": (["--memory", "1g"], {"environment": {"container": {"memory": "1g"}}},
               "environment.container.memory", "1g"),
    "memory_swap": (["--memory-swap", "-1"], {"environment": {"container": {"memory_swap": "-1"}}},
                    "environment.container.memory_swap", "-1"),
    "cgroup_parent": (["--cgroup-parent", "/p"], {"environment": {"container": {"cgroup_parent": "/p"}}},
                      "environment.container.cgroup_parent", "/p"),
    "network": (["--network", "bridge"], {"environment": {"container": {"network": "bridge"}}},
                "environment.container.network", "bridge"),
    "cpuset_cpus": (["--cpuset-cpus", "0"], {"environment": {"container": {"cpuset_cpus": "0"}}},
                    "environment.container.cpuset_cpus", "0"),
    "privileged": (["--privileged"], {"environment": {"container": {"privileged": True}}},
                   "environment.container.privileged", True),
    "shm_size": (["--shm-size", "64m"], {"environment": {"container": {"shm_size": "64m"}}},
                 "environment.container.shm_size", "64m"),
    "ipc": (["--ipc", "host"], {"environment": {"container": {"ipc": "host"}}}, "environment.container.ipc", "host"),
    "ulimit": (["--ulimit", "memlock=-1"], {"environment": {"container": {"ulimits": ["memlock=-1"]}}},
               "environment.container.ulimits", ["memlock=-1"]),
    "gpus": (["--gpus", "all"], {"environment": {"container": {"gpus": "all"}}}, "environment.container.gpus", "all"),
    "seed_flags": (["--seed-flags"], {"environment": {"container": {"seed_flags": True}}},
                   "environment.container.seed_flags", True),
    "container_flag": (["--container-flag=--pids-limit=5"], {"environment": {"container": {"extra_flags": ["--pids-limit=5"]}}},
                       "environment.container.extra_flags", ["--pids-limit=5"]),
    "attach": (["--attach", "http://127.0.0.1:9"], {"environment": {"name": "attached", "attach": {"url": "http://127.0.0.1:9"}}},
               "environment.attach.url", "http://127.0.0.1:9"),
    "pid": (["--attach", "http://h:1", "--pid", "42"], {"environment": {"name": "attached", "attach": {"url": "http://h:1", "pid": 42}}},
            "environment.attach.pid", 42),
    "container": (["--attach", "http://h:1", "--container", "c1"],
                  {"environment": {"name": "attached", "attach": {"url": "http://h:1", "container": "c1"}}},
                  "environment.attach.container", "c1"),
    "cgroup": (["--attach", "http://h:1", "--cgroup", "/sys/fs/cgroup/x"],
               {"environment": {"name": "attached", "attach": {"url": "http://h:1", "cgroup": "/sys/fs/cgroup/x"}}},
               "environment.attach.cgroup", "/sys/fs/cgroup/x"),
    "engine_log": (["--attach", "http://h:1", "--engine-log", "/l.log"],
                   {"environment": {"name": "attached", "attach": {"url": "http://h:1", "engine_log": "/l.log"}}},
                   "environment.attach.engine_log", "/l.log"),
    "sample_rate": (["--sample-rate", "20"], {"sampler": {"rate_hz": 20}}, "sampler.rate_hz", 20.0),
    "ready_timeout": (["--ready-timeout", "30"], {"timeouts": {"ready_s": 30}}, "timeouts.ready_s", 30.0),
    "label": (["--label", "x"], {"label": "x"}, "label", "x"),
}


def test_every_flag_has_a_case() -> None:
    assert set(CASES) == set(FLAG_PATHS)


def _print_spec(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["run", "--print-spec", *args]) == 0, capsys.readouterr().err
    out: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return out


def _at(d: dict[str, Any], path: str) -> Any:
    for k in path.split("."):
        d = d[k]
    return d


def _env_of(args: list[str], doc: dict[str, Any]) -> list[str]:
    if "--env" in args or "--attach" in args:
        return []
    name = doc.get("environment", {}).get("name", "native")
    return ["--env", name]


@pytest.mark.parametrize("param", sorted(CASES))
def test_flag_and_file_give_the_same_spec(param: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args, doc, path, expected = CASES[param]
    from_cli = _print_spec([*args, *_env_of(args, doc)], capsys)
    spec_file = tmp_path / "run.json"
    spec_file.write_text(json.dumps(doc))
    from_file = _print_spec(["--spec", str(spec_file), *(["--env", "sandbox"] if "memory_limit" == param else [])],
                            capsys)
    assert from_cli == from_file
    assert _at(from_cli[0], path) == expected
    # and a TOML file says the same
    toml = tmp_path / "run.toml"
    toml.write_text(_toml(doc))
    assert _print_spec(["--spec", str(toml), *(["--env", "sandbox"] if "memory_limit" == param else [])],
                       capsys) == from_cli


def _toml(doc: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for the cases above (tables, strings, numbers, booleans, lists)."""
    scalars, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append(_toml(v, f"{prefix}{k}."))
        else:
            scalars.append(f"{k} = {json.dumps(v)}")
    head = f"[{prefix[:-1]}]\n" if prefix else ""
    return head + "\n".join(scalars) + "\n" + "".join(tables)


def test_flags_override_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "run.toml"
    f.write_text('[workload]\nrequests = 7\nconcurrency = 2\n[engine]\nctx_size = 1024\n')
    (spec,) = _print_spec(["--spec", str(f), "--requests", "3"], capsys)
    assert spec["workload"]["requests"] == 3 and spec["workload"]["concurrency"] == 2
    assert spec["engine"]["ctx_size"] == 1024


def test_default_environments_are_native_and_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    specs = _print_spec([], capsys)
    assert [s["environment"]["name"] for s in specs] == ["native", "sandbox"]
    assert RunSpec.from_dict(specs[0]) == RunSpec()  # the spec's defaults, nowhere else


@pytest.mark.parametrize(("args", "needle"), [
    (["--ctx-size", "0"], "--ctx-size (engine.ctx_size)"),
    (["--engine", "vllm", "--ctx-size", "10"], "--ctx-size (engine.ctx_size): unknown key"),
    (["--engine", "bogus"], "engine.kind"),
    (["--set", "engine.block_sise=16", "--engine", "vllm"], "--set engine.block_sise (engine.block_sise): unknown key"),
    (["--set", "nonsense"], "expected PATH=VALUE"),
    (["--kv-cache-memory", "lots", "--engine", "vllm"], "--kv-cache-memory (engine.kv_cache_memory_bytes)"),
])
def test_errors_name_the_flag_and_the_field(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--print-spec", "--env", "native", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_a_malformed_attach_url_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--print-spec", "--attach", "localhost:8000"]) == 2
    err = capsys.readouterr().err
    assert "--attach (environment.attach.url): 'localhost:8000': expected http://HOST:PORT" in err, err
    doc = {"environment": {"name": "attached", "attach": {"url": "ftp://h:1"}}}
    with pytest.raises(UsageError, match=r"^spec: environment\.attach\.url: 'ftp://h:1': expected http://HOST:PORT$"):
        build_spec(doc)


def test_bad_spec_file_names_the_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[workload]\nrequests = 0\n")
    assert main(["run", "--print-spec", "--spec", str(f)]) == 2
    assert f"{f}: workload.requests: must be a whole number >= 1" in capsys.readouterr().err


def test_set_reads_json_values() -> None:
    assert parse_set(["engine.block_size=16", "label=a=b", "engine.extra_args=[\"-x\"]"]) == {
        "engine.block_size": 16, "label": "a=b", "engine.extra_args": ["-x"]}
    with pytest.raises(UsageError):
        parse_set(["=1"])
