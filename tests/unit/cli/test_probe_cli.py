"""``memgap probe`` through ``main(argv)``: on a fake procfs and on this machine's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memgap.cli.main import main
from memgap.collect.meminfo import read_meminfo

MiB, GiB = 1 << 20, 1 << 30
MODELS = Path(__file__).parents[2] / "fixtures" / "models"


def fake_proc(tmp_path: Path, free_kb: int = 17709676) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(
        f"MemTotal:       24684092 kB\nMemFree:        {free_kb} kB\nMemAvailable:   22551928 kB\n"
        "Buffers:           39536 kB\nCached:          4783772 kB\nShmem:              8940 kB\n"
        "Mapped:           310268 kB\n")
    return proc


def probe_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:  # type: ignore[type-arg]
    assert main(["probe", "--no-nvml", "--no-torch", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_fake_procfs_and_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = probe_json(capsys, "--proc-root", str(fake_proc(tmp_path)), "--model",
                     str(MODELS / "deepseek-r1-distill-qwen-7b"), "--weights-bytes", "15.23GiB", "-f", "0.5")
    assert out["assumed"]["bytes_per_token"] == 57344
    weights = 16_353_087_979  # 15.23 * 2**30 = 16353087979.52; a typed size drops the fraction
    assert out["assumed"]["weights_bytes"] == weights
    assert out["assumed"]["weights_source"] == "--weights-bytes"
    assert out["measured"]["meminfo"]["free_bytes"] == 17709676 * 1024
    assert out["measured"]["cgroup"] is None  # no /proc/self/cgroup in the fake tree
    uni = out["scenarios"][0]
    assert uni["name"] == "unified" and uni["measured"] is True
    trt = [b for b in uni["budgets"] if b["rule"] == "trtllm-pytorch"]
    assert [b["fraction"] for b in trt] == [0.9, 0.5]
    assert trt[0]["kv_budget_bytes"] == int((17709676 * 1024 - weights) * 0.9)


def test_text_output_says_measured_and_assumed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--no-nvml", "--no-torch", "--proc-root", str(fake_proc(tmp_path)),
                 "--weights-bytes", "1GiB"]) == 0
    out = capsys.readouterr().out
    assert "measured here:" in out and "assumed: weights 1.00 GiB (--weights-bytes)" in out
    assert "trtllm-pytorch" in out and "MemFree" in out and "MemAvailable" in out


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--no-nvml", "-f", "1.5"]) == 2
    assert main(["probe", "--no-nvml", "--kv-dtype", "q8_0"]) == 2
    assert main(["probe", "--no-nvml", "--proc-root", str(tmp_path)]) == 2
    assert "meminfo" in capsys.readouterr().err


def test_consistent_with_proc_meminfo_read_at_the_same_moment(capsys: pytest.CaptureFixture[str]) -> None:
    before = read_meminfo()
    out = probe_json(capsys, "--weights-bytes", "0")
    after = read_meminfo()
    mi = out["measured"]["meminfo"]
    assert mi["total_bytes"] == before.total_bytes == after.total_bytes
    slack = 256 * MiB  # other processes on a busy machine
    for key in ("free_bytes", "available_bytes", "cached_bytes"):
        lo = min(getattr(before, key), getattr(after, key)) - slack
        hi = max(getattr(before, key), getattr(after, key)) + slack
        assert lo <= mi[key] <= hi, key
    uni = out["scenarios"][0]
    assert uni["readings"]["free_bytes"] == mi["free_bytes"]
    assert uni["readings"]["available_bytes"] == mi["available_bytes"]


SYS = Path(__file__).parents[2] / "fixtures" / "sys"


def fake_sys(tmp_path: Path, limit_file: str = "v1-root-memory.limit_in_bytes") -> Path:
    root = tmp_path / "sys"
    (root / "devices/system/cpu/cpu0/node0").mkdir(parents=True)
    (root / "devices/system/node/node0").mkdir(parents=True)
    (root / "devices/system/node/node0/meminfo").write_text((SYS / "node0-meminfo.txt").read_text())
    (root / "fs/cgroup/memory").mkdir(parents=True)
    (root / "fs/cgroup/memory/memory.limit_in_bytes").write_text((SYS / limit_file).read_text())
    return root


def vllm_cpu(out: dict) -> dict:  # type: ignore[type-arg]
    return next(s for s in out["scenarios"] if s["name"] == "vllm-cpu")


def test_vllm_cpu_prediction_from_a_fake_sysfs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys_root = fake_sys(tmp_path)
    node_total = next(int(ln.split()[3]) for ln in (SYS / "node0-meminfo.txt").read_text().splitlines()
                      if ln.split()[2] == "MemTotal:") * 1024
    out = probe_json(capsys, "--proc-root", str(fake_proc(tmp_path)), "--sys-root", str(sys_root),
                     "--utilization", "0.12", "--worker-rss", "0.63GiB", "--engine-memory", "1.3GB",
                     "--kv-cache-memory", "256MiB", "--weights-bytes", "0")
    assert out["measured"]["cpu_node"]["node"] == 0 and out["measured"]["cpu_node"]["total_bytes"] == node_total
    assert out["measured"]["visible_cgroup_limit"]["limit_bytes"] is None  # the host's root: unlimited
    s = vllm_cpu(out)
    auto = next(b for b in s["budgets"] if b["rule"] == "vllm-cpu")
    assert auto["fraction"] == 0.12
    assert auto["kv_budget_bytes"] == -(-node_total * 12 // 100) - round(0.63 * GiB)
    explicit = next(b for b in s["budgets"] if b["rule"] == "vllm-cpu-explicit")
    assert explicit["kv_budget_bytes"] == 256 * MiB
    assert out["assumed"]["vllm_cpu"]["costs"]["source"] == "--worker-rss and --engine-memory"


def test_vllm_cpu_in_a_container_with_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = probe_json(capsys, "--proc-root", str(fake_proc(tmp_path)), "--sys-root", str(fake_sys(tmp_path)),
                     "--env", "docker", "--memory-limit", "3g", "--utilization", "0.5")
    auto = vllm_cpu(out)["budgets"][0]
    assert auto["inputs"]["total_bytes"] == 3 * GiB
    assert "visible cgroup limit" in auto["memory_source"]
    # The default estimate of the worker: measured with the tiny model, plus the weights given.
    assert out["assumed"]["vllm_cpu"]["costs"]["worker_rss_bytes"] == round(0.63 * GiB)


def test_vllm_cpu_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "--no-nvml", "--env", "kubernetes"]) == 2
    assert main(["probe", "--no-nvml", "--memory-limit", "3g"]) == 2  # native: the limit is read, not given
    assert main(["probe", "--no-nvml", "--utilization", "1.2"]) == 2
    assert "--env" in capsys.readouterr().err


def test_vllm_cpu_predicts_the_refusal_of_a_cache_too_small_for_max_model_len(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # DeepSeek-R1-Distill-Qwen-7B: 28 layers x 4 KV heads x 128 x 2 (K, V) x 2 bytes = 56 KiB a
    # token; 64 MiB hold 1,170 tokens, 9 whole blocks of 128, 8 of them usable: 1,024 tokens
    args = ["--proc-root", str(fake_proc(tmp_path)), "--sys-root", str(fake_sys(tmp_path)), "--weights-bytes", "0",
            "--model", str(MODELS / "deepseek-r1-distill-qwen-7b"), "--kv-cache-memory", "64MiB",
            "--worker-rss", "0.63GiB", "--engine-memory", "1.3GB", "--utilization", "0.12"]  # fmt: skip
    explicit = next(b for b in vllm_cpu(probe_json(capsys, *args, "--max-model-len", "2048"))["budgets"]
                    if b["rule"] == "vllm-cpu-explicit")
    assert explicit["kv_budget_bytes"] is None
    assert explicit["note"] == ("would refuse to start: the KV cache would hold 1152 tokens (9 blocks of 128, 1 kept "
                                "back), too few for one request of max_model_len 2048; at most 1024 tokens fit")
    fits = next(b for b in vllm_cpu(probe_json(capsys, *args, "--max-model-len", "1024"))["budgets"]
                if b["rule"] == "vllm-cpu-explicit")
    assert fits["kv_budget_bytes"] == 64 * MiB and fits["kv_tokens"] == 1152 and fits["note"] is None
