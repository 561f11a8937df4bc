"""Errors raised by the dataset and video readers and writers (pipelines, the service and the CLI)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class BadItem:
    """One item a ``scan_*`` function skipped: its identifier, the offending file and the reason."""

    item: str
    path: str
    reason: str

    @classmethod
    def from_error(cls, item: str, err: DataError) -> BadItem:
        return cls(item=item, path=err.path, reason=err.reason)
