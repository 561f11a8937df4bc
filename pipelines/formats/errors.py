"""Deprecated shim: the data errors live in :mod:`ldeq_shared.errors` (the same classes, re-exported).

Kept only while ``ldeq_cli/track.py`` and ``ldeq_cli/track_commands.py`` still import this path; import
:mod:`ldeq_shared.errors` instead.
"""

from ldeq_shared.errors import BadItem, DataError

__all__ = ["BadItem", "DataError"]
