"""Tests of the shipped WFLW-V lists and their parser/validation (spec §4.5)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from pipelines.wflw_v_lists import (
    EASY_FILE,
    HARD_FILE,
    RANGES_FILE,
    FrameRange,
    lists_from_entries,
    load_lists_from_dir,
    load_shipped_lists,
    parse_id_list,
    parse_ranges,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("LDEQ_SHARED_DATA", REPO.parent / "shared" / "data"))


def test_shipped_lists_match_published_facts() -> None:
    lists = load_shipped_lists()
    assert len(lists.easy) == 500 and len(lists.hard) == 500
    assert not set(lists.easy) & set(lists.hard)
    assert len(lists.ranges) == 1000 and set(lists.ranges) == set(lists.ids)
    assert lists.total_frames() == 137_730
    assert lists.total_frames("easy") == 69_183
    assert lists.total_frames("hard") == 68_547
    assert all(len(v) == 11 for v in lists.ids)
    assert any(v.startswith("-") for v in lists.easy) and any(v.startswith("-") for v in lists.hard)
    lengths = Counter(r.n_frames for r in lists.ranges.values())
    assert lengths == {
        120: 110,
        121: 42,
        125: 7,
        126: 323,
        142: 1,
        146: 1,
        147: 1,
        149: 9,
        150: 307,
        151: 199,
    }
    assert min(r.start for r in lists.ranges.values()) == 0
    assert max(r.start for r in lists.ranges.values()) == 6494
    assert max(r.end for r in lists.ranges.values()) == 6643
    # First line of download_ranges.txt: "eEbMsJPwPEM 3329 3454" (inclusive: 126 frames).
    assert lists.range_of("eEbMsJPwPEM") == FrameRange(3329, 3454)
    assert lists.range_of("eEbMsJPwPEM").n_frames == 126
    assert lists.split_of("eEbMsJPwPEM") == "easy" and lists.split_of("KLWvilm5hE4") == "hard"
    assert lists.ids[:1] == ("eEbMsJPwPEM",) and lists.ids[500] == "KLWvilm5hE4"


def test_shipped_lists_are_exact_copies_of_shared_data() -> None:
    src = SHARED / "wflw_v"
    if not src.is_dir():
        pytest.skip(f"shared data not found at {src} (set LDEQ_SHARED_DATA)")
    shipped = REPO / "pipelines" / "resources" / "wflw_v"
    for name in (EASY_FILE, HARD_FILE, RANGES_FILE):
        assert (shipped / name).read_bytes() == (src / name).read_bytes(), name


def test_lookup_errors_name_the_id() -> None:
    lists = load_shipped_lists()
    with pytest.raises(ValueError, match="notAnId"):
        lists.split_of("notAnId")
    with pytest.raises(ValueError, match="notAnId"):
        lists.range_of("notAnId")
    with pytest.raises(ValueError, match="unknown WFLW-V split"):
        lists.ids_in("medium")  # type: ignore[arg-type]


def _write_lists(d: Path, easy: str, hard: str, ranges: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / EASY_FILE).write_text(easy)
    (d / HARD_FILE).write_text(hard)
    (d / RANGES_FILE).write_text(ranges)
    return d


def test_load_from_dir_roundtrip(tmp_path: Path) -> None:
    d = _write_lists(tmp_path, "-aa\nbb\n\n", "cc\n", "cc 5 9\n-aa 0 0\nbb 3 4\n")
    lists = load_lists_from_dir(d)
    assert lists.easy == ("-aa", "bb") and lists.hard == ("cc",)
    assert lists.range_of("-aa") == FrameRange(0, 0) and lists.range_of("-aa").n_frames == 1
    assert lists.total_frames() == 1 + 2 + 5
    assert lists.ids_in("hard") == ("cc",)
    assert "-aa" in lists and "zz" not in lists and len(lists) == 3


@pytest.mark.parametrize(
    ("easy", "hard", "ranges", "message"),
    [
        ("aa\nbb\n", "bb\n", "aa 0 1\nbb 0 1\n", "overlap"),
        ("aa\n", "bb\n", "aa 0 1\n", "without a range"),
        ("aa\n", "bb\n", "aa 0 1\nbb 0 1\ncc 0 1\n", "in no split"),
        ("aa\n", "bb\n", "aa 5 4\nbb 0 1\n", "invalid frame range"),
        ("aa\n", "bb\n", "aa -1 4\nbb 0 1\n", "invalid frame range"),
        ("aa\n", "bb\n", "aa 0 x\nbb 0 1\n", "must be integers"),
        ("aa\n", "bb\n", "aa 0\nbb 0 1\n", "expected '<id> <start> <end>'"),
        ("aa\n", "bb\n", "aa 0 1\naa 0 2\nbb 0 1\n", "duplicate range"),
        ("aa\naa\n", "bb\n", "aa 0 1\nbb 0 1\n", "appears twice"),
        ("a/b\n", "bb\n", "a/b 0 1\nbb 0 1\n", "invalid video id"),
        ("aa bb\n", "cc\n", "aa 0 1\n", "one video id per line"),
    ],
)
def test_invalid_lists_raise_with_file_name(tmp_path: Path, easy: str, hard: str, ranges: str, message: str) -> None:
    d = _write_lists(tmp_path / "lists", easy, hard, ranges)
    with pytest.raises(ValueError, match=message) as info:
        load_lists_from_dir(d)
    assert str(d) in str(info.value)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / EASY_FILE).write_text("aa\n")
    with pytest.raises(ValueError, match=HARD_FILE):
        load_lists_from_dir(tmp_path)


def test_parsers_report_line_numbers() -> None:
    with pytest.raises(ValueError, match=r"src\.txt:3"):
        parse_ranges("a 0 1\nb 0 1\nc 9 2\n", "src.txt")
    with pytest.raises(ValueError, match=r"ids\.txt:2"):
        parse_id_list("ok\nbad id!\n", "ids.txt")


def test_lists_from_entries_accepts_tuples() -> None:
    lists = lists_from_entries(["-x1"], ["y2"], {"-x1": (2, 6), "y2": FrameRange(0, 9)})
    assert lists.range_of("-x1") == FrameRange(2, 6)
    assert lists.total_frames("easy") == 5 and lists.total_frames("hard") == 10
    with pytest.raises(ValueError, match="overlap"):
        lists_from_entries(["a"], ["a"], {"a": (0, 1)})
