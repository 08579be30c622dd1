"""The engine's process tree as the sampler follows it: walked again every
``tree_refresh_s`` (and at each mark), with /proc/PID/status -- and, for the native loop,
statm -- kept open for each of its processes."""

from __future__ import annotations

from pathlib import Path

from memgap.collect.fastread import FileReader
from memgap.collect.keyed import STATUS_KEYS, lookup
from memgap.collect.process import ProcessKey, process_key, process_tree


class ProcessTree:
    def __init__(self, pid: int, proc_root: Path, refresh_s: float, *, statm: bool) -> None:
        self.pid = pid
        self.proc_root = proc_root
        self.refresh_s = refresh_s
        self.keys: list[ProcessKey] = []
        self._walked_at = -1e9
        self._status: dict[ProcessKey, FileReader] = {}
        self._statm: dict[ProcessKey, FileReader] | None = {} if statm else None
        self._hwm: dict[ProcessKey, int] = {}  # VmHWM by process (the Python loop's reads)
        self._hwm_max: int | None = None  # the largest VmHWM the native loop's rows gave

    def walk_at_next_refresh(self) -> None:
        """A mark's sample walks the tree afresh: an engine forked since the last walk counts."""
        self._walked_at = -1e9

    def refresh(self, t: float) -> bool:
        """Walk the tree when ``refresh_s`` has passed; True when it was walked. Also
        when it is empty: a gone tree is not walked again at every tick."""
        if t - self._walked_at < self.refresh_s:
            return False
        self.keys = process_tree(self.pid, self.proc_root)
        self._walked_at = t
        self._sync_readers()
        return True

    def native_group(self) -> list[tuple[int, int]]:
        """(status fd, statm fd) of each process, -1 where it is not open."""
        statm = self._statm or {}
        return [(_fd(self._status.get(k)), _fd(statm.get(k))) for k in self.keys]

    def read_status(self) -> tuple[dict[str, int], int]:
        """The status sums over the tree (VmRSS, RssAnon, RssFile, RssShmem; bytes) and how
        many processes gave them; each process's VmHWM is kept."""
        totals = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
        seen = 0
        for key in self.keys:
            reader = self._status.get(key)
            text = reader.read_text() if reader is not None else None
            if text is None:
                continue
            kb = lookup(text, STATUS_KEYS, kb=True)
            if not kb:  # a kernel thread (no Vm* lines), or not a status file
                continue
            seen += 1
            for name in totals:
                totals[name] += kb.get(name, 0)
            if "VmHWM" in kb:
                self._hwm[key] = kb["VmHWM"]
        return totals, seen

    def note_hwm(self, hwm_bytes: int) -> None:
        """A VmHWM from a native row (summed over the tree's processes by the loop's MAX)."""
        self._hwm_max = max(self._hwm_max or 0, hwm_bytes)

    def kernel_hwm_bytes(self) -> int | None:
        hwm = [*self._hwm.values(), *([] if self._hwm_max is None else [self._hwm_max])]
        return max(hwm) if hwm else None

    def close(self) -> None:
        for readers in (self._status, self._statm or {}):
            for r in readers.values():
                r.close()
            readers.clear()

    def _sync_readers(self) -> None:
        """Keep /proc/PID/status open for each process of the tree. The descriptor is bound
        to the process it was opened for: once that process exits, reads fail (ESRCH) and
        ``reopen=False`` keeps a reused PID from being read as the same process. The start
        time is checked after opening, so a PID reused before the open is refused too."""
        keep = set(self.keys)
        files = [(self._status, "status")] + ([(self._statm, "statm")] if self._statm is not None else [])
        for readers, name in files:
            for key in [k for k in readers if k not in keep]:
                readers.pop(key).close()
            for key in self.keys:
                if key in readers:
                    continue
                reader = FileReader(self.proc_root / str(key.pid) / name, reopen=False)
                if reader.read_text() is None or process_key(key.pid, self.proc_root) != key:
                    reader.close()
                    continue
                readers[key] = reader


def _fd(reader: FileReader | None) -> int:
    fd = reader.fileno() if reader is not None else None
    return -1 if fd is None else fd
