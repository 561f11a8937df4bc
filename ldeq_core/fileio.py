"""File I/O used everywhere in ldeq: atomic writes and the sha256 of a file.

An atomic write goes to a temporary file in the target's folder (same file system), which then replaces the target
with ``os.replace``: readers see the old file or the new one, never a partial one, and a failed write leaves nothing
behind. Temporary files are hidden (their names start with ``.``) and keep the target's suffix, so that writers that
pick a format from the extension (OpenCV, NumPy) work on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

PathLike = str | os.PathLike[str]
CHUNK = 1 << 20  # bytes read at a time when hashing

_UMASK = os.umask(0)
os.umask(_UMASK)


class Hasher(Protocol):
    """What :func:`update_from_file` needs of a ``hashlib`` object."""

    def update(self, data: bytes, /) -> None: ...


@contextlib.contextmanager
def atomic_path(path: PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path`` (same suffix); it replaces ``path`` on success, else is removed.

    The temp file exists (empty) when the block starts. With ``fsync`` its contents are flushed to disk before the
    rename (for files that must survive a power loss intact, e.g. downloads and registries). The file gets the
    usual permissions (``0o666`` less the umask), not the ``0o600`` of ``mkstemp``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fsync:
            fd = os.open(tmp_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        tmp_path.chmod(0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: PathLike, text: str, *, fsync: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (no newline translation)."""
    write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def save_npy_atomic(path: PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (no pickles)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)


def update_from_file(h: Hasher, path: PathLike, chunk: int = CHUNK) -> None:
    """Feed the bytes of ``path`` to the hash object ``h``, ``chunk`` bytes at a time."""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)


def file_sha256(path: PathLike, chunk: int = CHUNK) -> str:
    """Hex sha256 of the bytes of ``path`` (read in chunks: any file size)."""
    h = hashlib.sha256()
    update_from_file(h, path, chunk)
    return h.hexdigest()
