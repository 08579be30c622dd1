"""Identify a model (a file, or a folder of its files) by content, so runs on the same bits can be grouped."""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

from memgap.engines.base import ModelFile
from memgap.errors import EngineNotFound

# Digesting a 98 MB GGUF takes ~0.3 s; a 70 GB one minutes. Cache by identity of the
# file on disk (device, inode, size, mtime) for the life of the process.
_DIGESTS: dict[tuple[int, int, int, int], str] = {}
# A model folder's files up to this size (configs, index, tokenizer) are digested whole.
_SMALL_FILE = 16 << 20


def sha256_file(path: Path) -> str:
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    # Read with O_DIRECT where the filesystem allows it: digesting must not change the
    # page cache (whether the engine then reads its weights cold or warm is part of
    # what a run measures, and page cache is charged to whoever reads first).
    try:
        _digest_direct(path, h)
    except OSError:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(4 << 20):
                h.update(chunk)
    digest = h.hexdigest()
    _DIGESTS[key] = digest
    return digest


def _digest_direct(path: Path, h: hashlib._Hash) -> None:
    chunk = 4 << 20
    buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT requires
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        view = memoryview(buf)
        while True:
            n = os.readv(fd, [buf])
            if n <= 0:
                break
            h.update(view[:n])
            if n < chunk:
                break
        view.release()
    finally:
        os.close(fd)
        buf.close()


def model_file(path: Path) -> ModelFile:
    if not path.is_file():
        raise EngineNotFound(f"model file not found: {path}")
    return ModelFile(path=path.resolve(), size_bytes=path.stat().st_size, sha256=sha256_file(path), name=path.name)


def model_identity(path: Path) -> ModelFile:
    """A local model (a file, or a Hugging Face snapshot directory) as a ``ModelFile``.

    A file is digested whole (``model_file``). A directory's digest covers every file's
    name and size and the full text of its small files (configs, index, tokenizer):
    reading tens of GB of weights would take minutes and would fill the page cache,
    which is part of what a run measures."""
    if path.is_file():
        return model_file(path)
    if not path.is_dir():
        raise EngineNotFound(f"model not found: {path} (memgap needs the model's files locally to identify it)")
    h = hashlib.sha256(b"memgap-model-dir-v1\0")
    total = 0
    for p in sorted(q for q in path.rglob("*") if q.is_file() and ".cache" not in q.parts):
        size = p.stat().st_size
        total += size
        h.update(f"{p.relative_to(path).as_posix()}\0{size}\0".encode())
        if size <= _SMALL_FILE:
            h.update(p.read_bytes())
    return ModelFile(path=path.resolve(), size_bytes=total, sha256=h.hexdigest(), name=path.name)

