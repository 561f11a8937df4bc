"""``np.load`` that is safe to call from several threads at once on CPython 3.11.

numpy parses every ``.npy`` header with ``ast.literal_eval``. On CPython 3.11 concurrent AST construction can
corrupt the interpreter's AST recursion-depth counter and raise ``SystemError: AST constructor recursion depth
mismatch`` (python/cpython#106905); this project's CI hit it while WFLW-V annotations were loaded on a thread pool.
One process-wide lock serialises our loads. Headers are tiny and the arrays small, so the lock costs nothing
measurable; ``.npz`` archives are read in full inside the lock (their members' headers are parsed on access).
"""

from __future__ import annotations

import os
import threading
from typing import IO, Literal

import numpy as np

_LOCK = threading.Lock()
Source = str | os.PathLike[str] | IO[bytes]


def load_npy(source: Source, *, mmap_mode: Literal["r", "r+", "c"] | None = None) -> np.ndarray:
    """``np.load(source, allow_pickle=False)`` of one ``.npy`` array under the process-wide lock."""
    with _LOCK:
        arr = np.load(source, mmap_mode=mmap_mode, allow_pickle=False)
    if not isinstance(arr, np.ndarray):  # an .npz archive where one array was expected
        arr.close()
        raise ValueError("expected a single .npy array, got an .npz archive")
    return arr


def load_npz(source: Source) -> dict[str, np.ndarray]:
    """Every member of an ``.npz`` archive (no pickles), read in full under the process-wide lock."""
    with _LOCK:
        archive = np.load(source, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("expected an .npz archive, got a single .npy array")
        with archive:
            return {name: archive[name] for name in archive.files}
