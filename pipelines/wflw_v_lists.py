"""The WFLW-V split lists and frame windows (spec §4.5), shipped as package data.

Three plain-text files describe the benchmark: ``easy_video_IDs.txt`` and ``hard_video_IDs.txt`` (one
YouTube id per line) and ``download_ranges.txt`` (``<id> <start> <end>`` per line, 0-based frame numbers,
inclusive on both ends). :func:`load_shipped_lists` reads the copies under ``pipelines/resources/wflw_v``;
:func:`load_lists_from_dir` and :func:`lists_from_entries` build the same object from other files or from
values (tests use tiny custom lists).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal

EASY_FILE = "easy_video_IDs.txt"
HARD_FILE = "hard_video_IDs.txt"
RANGES_FILE = "download_ranges.txt"

Split = Literal["easy", "hard"]
SPLITS: tuple[Split, ...] = ("easy", "hard")

# YouTube ids use the URL-safe base64 alphabet; the pattern also keeps ids safe as file names.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class FrameRange:
    """Inclusive, 0-based frame window ``[start, end]`` of one clip inside its source video."""

    start: int
    end: int

    @property
    def n_frames(self) -> int:
        """Number of frames in the window (``end - start + 1``)."""
        return self.end - self.start + 1


def _check_id(vid: str, source: str) -> None:
    if not _ID_PATTERN.fullmatch(vid):
        raise ValueError(f"{source}: invalid video id {vid!r} (expected letters, digits, '-' or '_')")


@dataclass(frozen=True, eq=False)
class WflwVLists:
    """Validated WFLW-V lists: the easy and hard ids (file order) and each id's frame window.

    Construction checks that the ids are well formed and unique, the splits are disjoint, their union is
    exactly the set of ids with a range, and every range has ``0 <= start <= end``.
    """

    easy: tuple[str, ...]
    hard: tuple[str, ...]
    ranges: Mapping[str, FrameRange]
    source: str = field(default="<in-memory lists>")
    _split_index: Mapping[str, Split] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "easy", tuple(self.easy))
        object.__setattr__(self, "hard", tuple(self.hard))
        object.__setattr__(self, "ranges", MappingProxyType(dict(self.ranges)))
        for split, ids in (("easy", self.easy), ("hard", self.hard)):
            seen: set[str] = set()
            for vid in ids:
                _check_id(vid, f"{self.source} ({split} list)")
                if vid in seen:
                    raise ValueError(f"{self.source}: id {vid!r} appears twice in the {split} list")
                seen.add(vid)
        overlap = sorted(set(self.easy) & set(self.hard))
        if overlap:
            raise ValueError(f"{self.source}: easy and hard lists overlap on {len(overlap)} id(s): {overlap[:5]}")
        listed = set(self.easy) | set(self.hard)
        ranged = set(self.ranges)
        if listed != ranged:
            no_range = sorted(listed - ranged)
            no_split = sorted(ranged - listed)
            raise ValueError(
                f"{self.source}: split lists and ranges disagree: {len(no_range)} listed id(s) without a "
                f"range {no_range[:5]}, {len(no_split)} ranged id(s) in no split {no_split[:5]}"
            )
        for vid, rng in self.ranges.items():
            where = f"{self.source}: range of {vid!r}"
            _check_id(vid, f"{self.source} (ranges)")
            if not isinstance(rng, FrameRange):
                raise ValueError(f"{where} must be a FrameRange, got {type(rng).__name__}")
            if rng.start < 0 or rng.end < rng.start:
                raise ValueError(f"{where} is invalid: start={rng.start}, end={rng.end}")
        index: dict[str, Split] = {vid: "easy" for vid in self.easy}
        index.update({vid: "hard" for vid in self.hard})
        object.__setattr__(self, "_split_index", MappingProxyType(index))

    @property
    def ids(self) -> tuple[str, ...]:
        """All ids: the easy list, then the hard list, each in file order."""
        return self.easy + self.hard

    def ids_in(self, split: Split | Literal["all"] = "all") -> tuple[str, ...]:
        """Ids of one split (``"easy"``, ``"hard"``) or of both (``"all"``)."""
        if split == "all":
            return self.ids
        if split == "easy":
            return self.easy
        if split == "hard":
            return self.hard
        raise ValueError(f"unknown WFLW-V split {split!r} (expected 'easy', 'hard' or 'all')")

    def split_of(self, vid: str) -> Split:
        """Split (``"easy"`` or ``"hard"``) containing ``vid``."""
        try:
            return self._split_index[vid]
        except KeyError:
            raise ValueError(f"{self.source}: video id {vid!r} is in neither split") from None

    def range_of(self, vid: str) -> FrameRange:
        """Inclusive frame window of ``vid``."""
        try:
            return self.ranges[vid]
        except KeyError:
            raise ValueError(f"{self.source}: video id {vid!r} has no frame range") from None

    def total_frames(self, split: Split | Literal["all"] = "all") -> int:
        """Sum of the window lengths over a split."""
        return sum(self.ranges[vid].n_frames for vid in self.ids_in(split))

    def __contains__(self, vid: object) -> bool:
        return vid in self.ranges

    def __len__(self) -> int:
        return len(self.ranges)


def parse_id_list(text: str, source: str) -> tuple[str, ...]:
    """Parse one id per line (blank lines ignored); ``source`` names the input in error messages."""
    ids: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        vid = line.strip()
        if not vid:
            continue
        if len(vid.split()) != 1:
            raise ValueError(f"{source}:{lineno}: expected one video id per line, got {line!r}")
        _check_id(vid, f"{source}:{lineno}")
        ids.append(vid)
    return tuple(ids)


def parse_ranges(text: str, source: str) -> dict[str, FrameRange]:
    """Parse ``<id> <start> <end>`` lines (0-based, inclusive); rejects duplicates and bad ranges."""
    ranges: dict[str, FrameRange] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{source}:{lineno}"
        if len(parts) != 3:
            raise ValueError(f"{where}: expected '<id> <start> <end>', got {line!r}")
        vid, start_s, end_s = parts
        _check_id(vid, where)
        try:
            start, end = int(start_s), int(end_s)
        except ValueError:
            raise ValueError(f"{where}: start and end must be integers, got {line!r}") from None
        if start < 0 or end < start:
            raise ValueError(f"{where}: invalid frame range for {vid!r}: start={start}, end={end}")
        if vid in ranges:
            raise ValueError(f"{where}: duplicate range for id {vid!r}")
        ranges[vid] = FrameRange(start, end)
    return ranges


def lists_from_entries(
    easy: Iterable[str],
    hard: Iterable[str],
    ranges: Mapping[str, tuple[int, int] | FrameRange],
    *,
    source: str = "<in-memory lists>",
) -> WflwVLists:
    """Build validated lists from values; ``ranges`` maps id to an inclusive ``(start, end)``."""
    conv: dict[str, FrameRange] = {}
    for vid, rng in ranges.items():
        if isinstance(rng, FrameRange):
            conv[vid] = rng
        else:
            start, end = rng
            conv[vid] = FrameRange(int(start), int(end))
    return WflwVLists(tuple(easy), tuple(hard), conv, source=source)


def load_lists_from_dir(directory: str | Path) -> WflwVLists:
    """Read the three list files from ``directory`` (same names as the shipped ones)."""
    directory = Path(directory)
    texts = {}
    for name in (EASY_FILE, HARD_FILE, RANGES_FILE):
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{path}: WFLW-V list file not found")
        texts[name] = path.read_text(encoding="utf-8")
    return WflwVLists(
        parse_id_list(texts[EASY_FILE], str(directory / EASY_FILE)),
        parse_id_list(texts[HARD_FILE], str(directory / HARD_FILE)),
        parse_ranges(texts[RANGES_FILE], str(directory / RANGES_FILE)),
        source=str(directory),
    )


@cache
def load_shipped_lists() -> WflwVLists:
    """The WFLW-V lists shipped with the package (500 easy + 500 hard ids, 137,730 frames)."""
    root = resources.files("pipelines").joinpath("resources", "wflw_v")
    source = "pipelines/resources/wflw_v"
    return WflwVLists(
        parse_id_list(root.joinpath(EASY_FILE).read_text(encoding="utf-8"), f"{source}/{EASY_FILE}"),
        parse_id_list(root.joinpath(HARD_FILE).read_text(encoding="utf-8"), f"{source}/{HARD_FILE}"),
        parse_ranges(root.joinpath(RANGES_FILE).read_text(encoding="utf-8"), f"{source}/{RANGES_FILE}"),
        source=source,
    )
