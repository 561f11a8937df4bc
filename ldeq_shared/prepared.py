"""The prepared-data manifest ``prepared.json``: what the ``prepare`` stage made, read by every later consumer.

The ``prepare`` stage (:mod:`pipelines.prepare`) writes it into the raw-data folder (``data/raw``); preprocessing,
evaluation and the service's smoke test read it with :func:`load_prepared`. It lists the still datasets (format,
root relative to the file's folder, splits -> item names), the video datasets in the WFLW-V layout
(:mod:`ldeq_shared.wflw_v`; root, splits -> ids), ``n_landmarks``, a content fingerprint of referenced inputs and
every bad item skipped with its reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PREPARED_NAME = "prepared.json"
PREPARED_VERSION = 1
PathLike = str | os.PathLike[str]


@dataclass
class StillSet:
    """A still dataset: ``format`` is ``wflw`` (precropped, identity crop) or ``300w`` (crop from landmarks)."""

    dataset: str
    format: str
    root: str  # relative to the prepared.json folder (or absolute)
    splits: dict[str, dict[str, Any]]  # shard split -> {"items": [...], "source_split": str | None}


@dataclass
class VideoSet:
    """A WFLW-V-layout video dataset; ``splits`` maps shard split -> {"items": [video ids]}."""

    dataset: str
    root: str
    splits: dict[str, dict[str, Any]]
    format: str = "wflw_v"


@dataclass
class Prepared:
    """Contents of ``prepared.json``; ``path`` is where it was read from (roots resolve against its folder)."""

    source: str
    n_landmarks: int
    stills: list[StillSet]
    videos: list[VideoSet]
    bad_items: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    settings_sha256: str = ""
    inputs: dict[str, str] = field(default_factory=dict)  # referenced root -> content fingerprint
    counts: dict[str, int] = field(default_factory=dict)
    path: Path | None = None

    def resolve(self, root: str) -> Path:
        """Absolute path of a dataset root recorded relative to the prepared.json folder."""
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / root).resolve()

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("path")
        return json.dumps({"version": PREPARED_VERSION, **d}, indent=1) + "\n"


def load_prepared(path: PathLike) -> Prepared:
    """Read ``prepared.json`` (or the ``data/raw`` folder holding it); ``ValueError`` if absent or malformed."""
    p = Path(path)
    if p.is_dir():
        p = p / PREPARED_NAME
    if not p.is_file():
        raise ValueError(f"{p}: prepared.json not found (run `ldeq data prepare`)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if d.pop("version") != PREPARED_VERSION:
            raise ValueError(f"unsupported version, expected {PREPARED_VERSION}")
        prep = Prepared(
            **{**d, "stills": [StillSet(**s) for s in d["stills"]], "videos": [VideoSet(**v) for v in d["videos"]]}
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{p}: malformed prepared.json ({err})") from None
    prep.path = p.resolve()
    return prep
