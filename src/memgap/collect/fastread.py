"""Re-reading one small kernel file many times a second (10-100 Hz sampling).

Opening a procfs or cgroupfs file costs a path walk and a file allocation each time;
keeping the descriptor and re-reading it with ``pread(fd, n, 0)`` costs one syscall.
Verified on Linux 6.18 (this project's machines): pread at offset 0 on an fd already
read to the end returns fresh contents for /proc/meminfo, /proc/PID/status,
/proc/PID/smaps_rollup (seq_file) and for cgroup v1 memory.usage_in_bytes and
memory.stat (kernfs). Files that refuse positional reads (ESPIPE) fall back to
``lseek(0)`` + ``read``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import TracebackType

# The descriptor is dead for good: the process exited (ESRCH), the cgroup was removed
# (ENODEV), or the file was unlinked. Reopening by path may find a new file.
_GONE_ERRNOS = {errno.ESRCH, errno.ENODEV, errno.ENOENT, errno.EBADF, errno.ENXIO}


class FileReader:
    """Keeps ``path`` open and returns its current text on each ``read_text()``.

    ``reopen=False`` is for /proc/PID files: a reopen by path after the process died
    could open the same PID's file of an unrelated new process. With it, a dead
    descriptor reads as None forever."""

    def __init__(
        self, path: Path | str, *, reopen: bool = True, initial_size_bytes: int = 4096
    ) -> None:
        self.path = Path(path)
        self.reopen = reopen
        self._size = max(initial_size_bytes, 64)
        self._fd: int | None = None
        self._opened_once = False
        self._positional = True
        self._closed = False

    def _open(self) -> bool:
        if self._opened_once and not self.reopen:
            return False
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        self._opened_once = True
        return True

    def _drop_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _read_whole(self, fd: int) -> bytes:
        while True:
            if self._positional:
                try:
                    data = os.pread(fd, self._size, 0)
                except OSError as e:
                    if e.errno not in (errno.ESPIPE, errno.EINVAL):
                        raise
                    self._positional = False
                    continue
            else:
                os.lseek(fd, 0, os.SEEK_SET)
                data = os.read(fd, self._size)
            if len(data) < self._size:
                return data
            # Filled the buffer: the file may be longer. Grow and read again from 0
            # so the text is one consistent snapshot, not two reads glued together.
            self._size *= 2

    def read_text(self) -> str | None:
        """Current contents, or None when the file (or its process/cgroup) is gone."""
        if self._closed:
            raise ValueError(f"read from closed FileReader({self.path})")
        for _attempt in range(2):
            if self._fd is None and not self._open():
                return None
            assert self._fd is not None
            try:
                return self._read_whole(self._fd).decode("utf-8", errors="replace")
            except OSError as e:
                self._drop_fd()
                if e.errno not in _GONE_ERRNOS:
                    return None
        return None

    def fileno(self) -> int | None:
        """The open descriptor (opening it first if it never was), or None when the file
        cannot be opened or its descriptor died (``reopen=False``)."""
        if self._closed:
            return None
        if self._fd is None:
            self._open()
        return self._fd

    def close(self) -> None:
        self._drop_fd()
        self._closed = True

    def __enter__(self) -> FileReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self._drop_fd()
