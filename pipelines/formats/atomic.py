"""Deprecated shim: atomic writes live in :mod:`ldeq_core.fileio`.

Kept only while ``ldeq_cli/track.py`` still imports this path; import :mod:`ldeq_core.fileio` instead.
"""

from ldeq_core.fileio import atomic_path, save_npy_atomic, write_bytes_atomic, write_text_atomic

__all__ = ["atomic_path", "save_npy_atomic", "write_bytes_atomic", "write_text_atomic"]
