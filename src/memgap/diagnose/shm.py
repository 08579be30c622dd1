"""Case 5: a container's /dev/shm is 64 MiB unless the run says otherwise, and engines
that pass tensors or messages through shared memory fail there (or slow down).

The shared-memory signatures, each cited from the code that prints it:

- vLLM 0.32.0, vllm/distributed/device_communicators/shm_broadcast.py
  ``check_shm_free_space``: ``Insufficient space in {shm_path} for {allocation_name}:
  {required:.0f} MiB required, {free:.0f} MiB free. Increase {shm_path} (e.g.
  --shm-size or --ipc=host).`` (its worker queue, ``MessageQueue``, takes 160 MiB);
- NCCL misc/shmutils.cc: ``NCCL WARN Error: failed to extend {path} to {n} bytes`` and
  ``Error while creating shared memory segment {path} (size {n})`` (with ``, error: No
  space left on device (28)`` where PyTorch re-raises it as ``ncclSystemError``);
- PyTorch's DataLoader (torch/csrc/DataLoader.cpp): ``ERROR: Unexpected bus error
  encountered in worker. This might be caused by insufficient shared memory (shm).``;
- any ``No space left on device`` or ``Bus error`` naming ``/dev/shm``, and an engine
  killed by SIGBUS (exit status 135 or -7) in a container with a small /dev/shm.

Docker and Podman mount a 64 MiB tmpfs at /dev/shm unless ``--shm-size`` or
``--ipc=host`` says otherwise (docker run reference, "--shm-size"; podman's
containers.conf ``shm_size = "65536k"``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memgap.diagnose.base import SMALL_SHM, Diagnosis, size
from memgap.units import parse_size

CONTAINER_DEFAULT_SHM_BYTES = 64 << 20
CONTAINER_TOOLS = ("docker", "podman")

_VLLM_RE = re.compile(r"Insufficient space in (\S+) for [^:]+: (\d+) MiB required, (\d+) MiB free")
_NCCL_EXTEND_RE = re.compile(r"failed to extend (/dev/shm/\S+) to (\d+) bytes")
_NCCL_CREATE_RE = re.compile(r"Error while creating shared memory segment (/dev/shm/\S+) \(size (\d+)\)")
_TORCH_BUS_RE = re.compile(r"Unexpected bus error encountered in worker\. This might be caused by insufficient "
                           r"shared memory")
_NO_SPACE_RE = re.compile(r"(?:No space left on device|Bus error)[^\n]*/dev/shm|/dev/shm[^\n]*(?:No space left on "
                          r"device|Bus error)")
SIGBUS_STATUSES = (135, -7)


@dataclass(frozen=True)
class ShmSignature:
    line: str  # the engine's own words
    needed_bytes: int | None  # what it wanted in /dev/shm, where it said
    free_bytes: int | None  # what it found free there, where it said


def find_signature(log_text: str) -> ShmSignature | None:
    """The last shared-memory failure line of a log, or None."""
    found: ShmSignature | None = None
    for line in log_text.splitlines()[-5000:]:
        if m := _VLLM_RE.search(line):
            found = ShmSignature(_tail(line, m.start()), int(m.group(2)) << 20, int(m.group(3)) << 20)
        elif m := _NCCL_EXTEND_RE.search(line) or _NCCL_CREATE_RE.search(line):
            found = ShmSignature(_tail(line, m.start()), int(m.group(2)), None)
        elif m := _TORCH_BUS_RE.search(line) or _NO_SPACE_RE.search(line):
            found = ShmSignature(_tail(line, m.start()), None, None)
    return found


def _tail(line: str, start: int) -> str:
    # The message itself, not the logger prefix, traceback frame or exception class.
    return line[start:].strip()


@dataclass(frozen=True)
class ShmSetup:
    """The /dev/shm an environment gave the engine, from the run's flags."""

    dev_shm_bytes: int | None  # None: the host's /dev/shm (--ipc=host, or not a container)
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"dev_shm_bytes": self.dev_shm_bytes, "source": self.source}


def container_shm(env_info: Mapping[str, Any]) -> ShmSetup | None:
    """The container's /dev/shm size from the flags memgap passed (environment_info);
    None when the run was not in a container."""
    # The runner calls before the environment's description joins the record: then the
    # container's own facts (tool, run command) are what there is.
    container = env_info.get("container") or {}
    tool = env_info.get("tool") or container.get("tool") or env_info.get("name")
    if tool not in CONTAINER_TOOLS:
        return None
    flags = [str(f) for f in env_info.get("flags") or ()]
    run_cmd = container.get("run_command") or ()
    flags += [str(f) for f in run_cmd]
    shm = ipc = None
    for i, f in enumerate(flags):
        if f.startswith("--shm-size"):
            shm = f.partition("=")[2] or (flags[i + 1] if i + 1 < len(flags) else None)
        elif f.startswith("--ipc"):
            ipc = f.partition("=")[2] or (flags[i + 1] if i + 1 < len(flags) else None)
    if ipc in ("host",):
        return ShmSetup(None, "--ipc=host: the host's /dev/shm")
    if shm:
        try:
            return ShmSetup(parse_size(shm, what="--shm-size"), f"--shm-size={shm}")
        except Exception:  # noqa: BLE001 - an unreadable flag is an unknown size, not a crash
            return ShmSetup(None, f"--shm-size={shm} (not read)")
    return ShmSetup(CONTAINER_DEFAULT_SHM_BYTES, f"{tool}'s default (no --shm-size, no --ipc)")


def shm_use(columns: Mapping[str, Sequence[Any]]) -> dict[str, int | None]:
    """The engine's shared memory over the run, from the series' columns: RssShmem
    summed over its processes and the cgroup's shmem charge (memory.stat), at their
    peaks (None where never read)."""
    def peak(key: str) -> int | None:
        vals = [int(v) for v in columns.get(key) or () if v is not None]
        return max(vals) if vals else None

    return {"engine_rss_shmem_peak_bytes": peak("process_shmem_bytes"),
            "cgroup_shmem_peak_bytes": peak("cgroup_shmem_bytes")}


def shm_cause(log_text: str, setup: ShmSetup | None, *, exit_status: int | None = None,
              engine: str = "the engine") -> Diagnosis | None:
    """A failure with a shared-memory signature, or a SIGBUS death where /dev/shm was
    small; None otherwise."""
    sig = find_signature(log_text)
    where = "/dev/shm" if setup is None else (
        f"/dev/shm in the container was {size(setup.dev_shm_bytes)} ({setup.source})"
        if setup.dev_shm_bytes is not None else f"/dev/shm was the host's ({setup.source})")
    numbers: dict[str, Any] = {"dev_shm_bytes": setup.dev_shm_bytes if setup else None,
                               "dev_shm_source": setup.source if setup else None}
    if sig is None:
        small = setup is not None and setup.dev_shm_bytes is not None and setup.dev_shm_bytes <= 256 << 20
        if exit_status in SIGBUS_STATUSES and small:
            return Diagnosis(5, SMALL_SHM, f"{engine} died of SIGBUS (exit status {exit_status}) and {where}: a "
                             "process touching shared memory beyond a full tmpfs gets SIGBUS.", numbers, _REMEDY)
        return None
    numbers.update(needed_bytes=sig.needed_bytes, free_bytes=sig.free_bytes, line=sig.line)
    need = f", and {engine} needed {size(sig.needed_bytes)} there" if sig.needed_bytes else ""
    if setup is None:
        sentence = f"{engine} ran out of shared memory (/dev/shm){need}: \"{sig.line}\""
    else:
        sentence = f"{where}{need}: \"{sig.line}\""
    remedy = _REMEDY
    if sig.needed_bytes:
        remedy = (f"Give it --shm-size of at least {-(-sig.needed_bytes // (1 << 20))}m, or --ipc=host (memgap "
                  "gives an engine the /dev/shm it declares when the run sets neither).")
    return Diagnosis(5, SMALL_SHM, sentence, numbers, remedy)


_REMEDY = ("Give the container a larger --shm-size, or --ipc=host (memgap gives an engine the /dev/shm it declares "
           "when the run sets neither).")
