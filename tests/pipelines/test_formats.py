"""WFLW, WFLW-V and 300-W readers/writers, and every validation failure, on small files made here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.formats import (
    DataError,
    list_300w,
    list_wflw_splits,
    list_wflw_v,
    load_wflw_v_clip,
    read_download_ranges,
    read_id_list,
    read_pts,
    read_wflw,
    scan_300w,
    scan_wflw,
    scan_wflw_v,
    write_pts,
    write_video_clip,
    write_wflw,
)


def _need(shared_data: Path, sub: str) -> Path:
    path = shared_data / sub
    if not path.exists():
        pytest.skip(f"shared data {path} not found")
    return path


def test_data_error_carries_path_and_reason() -> None:
    err = DataError("/x/y.mp4", "broken")
    assert isinstance(err, ValueError)
    assert (err.path, err.reason, str(err)) == ("/x/y.mp4", "broken", "/x/y.mp4: broken")


# ----------------------------------------------------------------------------------------------- WFLW


def _crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (256, 256, 3), dtype=np.uint8)


def _pts98(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 259, (98, 2))


def test_wflw_round_trip(tmp_path: Path) -> None:
    smooth = cv2.GaussianBlur(_crop(1), (0, 0), 6)
    items = [("a/one.png", _crop(0), _pts98(0)), ("b/two.jpg", smooth, _pts98(1))]
    assert write_wflw(tmp_path, "test", items) == 2
    first = (tmp_path / "test.txt").read_text().splitlines()[0].split()
    assert first[0] == "a/one.png" and len(first) == 197
    assert float(first[1]) == items[0][2][0, 0] / 256 and float(first[2]) == items[0][2][0, 1] / 256
    got = read_wflw(tmp_path, "test")
    assert [g.relpath for g in got] == ["a/one.png", "b/two.jpg"]
    np.testing.assert_array_equal(got[0].landmarks, items[0][2])  # bit-exact through the text file
    np.testing.assert_array_equal(got[0].load_rgb(), items[0][1])  # PNG is lossless
    assert np.abs(got[1].load_rgb().astype(int) - items[1][1]).mean() < 3  # JPEG q95
    assert got[1].image_path == tmp_path / "test" / "b" / "two.jpg"
    assert got[0].image_path.read_bytes()[:4] == b"\x89PNG"
    assert got[1].image_path.read_bytes()[:2] == b"\xff\xd8"  # JPEG


def test_wflw_writer_rejects_bad_items(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="256, 256, 3"):
        write_wflw(tmp_path, "t", [("x.png", np.zeros((10, 10, 3), np.uint8), _pts98(0))])
    with pytest.raises(ValueError, match="98, 2"):
        write_wflw(tmp_path, "t", [("x.png", _crop(0), np.zeros((68, 2)))])
    with pytest.raises(ValueError, match="relpath"):
        write_wflw(tmp_path, "t", [("../x.png", _crop(0), _pts98(0))])


def test_list_wflw_splits(tmp_path: Path) -> None:
    write_wflw(tmp_path, "train", [("a.png", _crop(0), _pts98(0))])
    write_wflw(tmp_path, "test_blur", [("a.png", _crop(0), _pts98(0))])
    write_wflw(tmp_path, "test", [("a.png", _crop(0), _pts98(0))])
    write_wflw(tmp_path, "extra", [("a.png", _crop(0), _pts98(0))])
    (tmp_path / "notes.txt").write_text("not an annotation file\n")
    assert list_wflw_splits(tmp_path) == ["test", "test_blur", "train", "extra"]


def test_wflw_bad_cases(tmp_path: Path) -> None:
    write_wflw(tmp_path, "test", [(f"{i}.png", _crop(i), _pts98(i)) for i in range(5)])
    txt = tmp_path / "test.txt"
    lines = txt.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:-2])  # 97 landmarks
    lines[2] = lines[2].rsplit(" ", 1)[0] + " nan"
    cv2.imwrite(str(tmp_path / "test" / "3.png"), np.zeros((200, 256, 3), np.uint8))  # wrong size
    (tmp_path / "test" / "4.png").unlink()
    txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="expected 196 coordinates") as err:
        read_wflw(tmp_path, "test")
    assert err.value.path == str(txt)
    good, bad = scan_wflw(tmp_path, "test")
    assert [g.relpath for g in good] == ["0.png"]
    reasons = {b.item: b.reason for b in bad}
    assert "got 194" in reasons["test:2"]
    assert "NaN or inf" in reasons["test:3"]
    assert "256x256" in reasons["test:4"] and bad[2].path == str(tmp_path / "test" / "3.png")
    assert "unreadable" in reasons["test:5"]
    # without decoding images only existence is checked
    assert len(scan_wflw(tmp_path, "test", check_images=False)[0]) == 2
    with pytest.raises(DataError, match="does not exist"):
        read_wflw(tmp_path, "test_makeup")


# ------------------------------------------------------------------------------------------- WFLW-V


def _clip(t: int = 6, n_points: int = 98, w: int = 64, h: int = 48) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(t)
    frames = np.full((t, h, w, 3), 90, np.uint8)
    frames[:, :, : w // 2] = np.arange(t, dtype=np.uint8)[:, None, None, None] * 30
    lms = rng.uniform(10, 40, (t, n_points, 2))
    boxes = np.concatenate([lms.min(1), lms.max(1)], axis=1)
    return frames, lms, boxes


def test_wflw_v_round_trip(tmp_path: Path) -> None:
    frames, lms, boxes = _clip()
    write_video_clip(tmp_path, "-abc_DEF123", frames, lms, boxes, fps=30)
    assert list_wflw_v(tmp_path) == ["-abc_DEF123"]
    clip = load_wflw_v_clip(tmp_path, "-abc_DEF123")
    assert (clip.n_frames, clip.frame_size, clip.id) == (6, (64, 48), "-abc_DEF123")
    assert clip.fps == pytest.approx(30)
    np.testing.assert_array_equal(clip.landmarks, lms)
    np.testing.assert_array_equal(clip.boxes, boxes)
    decoded = np.stack(list(clip.frames()))[..., ::-1]
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    # extra box columns (e.g. scores) are accepted and dropped
    np.save(tmp_path / "bboxes" / "-abc_DEF123.npy", np.concatenate([boxes, np.ones((6, 1))], 1))
    assert load_wflw_v_clip(tmp_path, "-abc_DEF123").boxes.shape == (6, 4)


def test_wflw_v_missing_boxes_are_an_error_unless_allowed(tmp_path: Path) -> None:
    frames, lms, boxes = _clip()
    write_video_clip(tmp_path, "nobox", frames, lms, boxes, fps=30)
    bx = tmp_path / "bboxes" / "nobox.npy"
    bx.unlink()
    with pytest.raises(DataError, match="does not exist") as err:
        load_wflw_v_clip(tmp_path, "nobox")
    assert err.value.path == str(bx)
    clip = load_wflw_v_clip(tmp_path, "nobox", require_boxes=False)
    assert not clip.boxes_given
    # by hand: the tight landmark box of each frame grown by 1.1 about its centre
    lo, hi = lms.min(1), lms.max(1)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.1
    np.testing.assert_allclose(clip.boxes, np.concatenate([centre - half, centre + half], 1), rtol=0, atol=1e-9)
    assert [c.id for c in scan_wflw_v(tmp_path, require_boxes=False)[0]] == ["nobox"]
    assert [b.item for b in scan_wflw_v(tmp_path)[1]] == ["nobox"]
    write_video_clip(tmp_path, "withbox", frames, lms, boxes, fps=30)
    assert load_wflw_v_clip(tmp_path, "withbox", require_boxes=False).boxes_given


def test_wflw_v_landmark_count_parameter(tmp_path: Path) -> None:
    write_video_clip(tmp_path, "v68", *_clip(n_points=68), fps=30)
    assert load_wflw_v_clip(tmp_path, "v68", n_points=68).landmarks.shape == (6, 68, 2)
    with pytest.raises(DataError, match="wrong landmark count: 68, expected 98"):
        load_wflw_v_clip(tmp_path, "v68")


def _corrupt(root: Path, vid: str, case: str) -> tuple[str, str]:
    """Damage one clip; return (the file the error must name, a fragment of the reason)."""
    video, lm, bx = (root / "videos" / f"{vid}.mp4", root / "landmarks" / f"{vid}.npy", root / "bboxes" / f"{vid}.npy")
    boxes, lms = np.load(bx), np.load(lm)
    if case == "text_as_mp4":
        video.write_text("definitely not an mp4\n")
        return str(video), "cannot open"
    if case == "truncated_half":
        data = video.read_bytes()
        video.write_bytes(data[: len(data) // 2])
        return str(video), "cannot open"
    if case == "nan_boxes":
        boxes[2, 1] = np.nan
        np.save(bx, boxes)
        return str(bx), "NaN or inf box in frame 2"
    if case == "inverted_box":
        boxes[3, [0, 2]] = boxes[3, [2, 0]]
        np.save(bx, boxes)
        return str(bx), "empty or inverted box in frame 3"
    if case == "box_outside":
        boxes[1] = [100, 10, 120, 20]  # frame is 64 wide
        np.save(bx, boxes)
        return str(bx), "entirely outside the 64x48 frame"
    if case == "inf_landmarks":
        lms[4, 7, 0] = np.inf
        np.save(lm, lms)
        return str(lm), "NaN or inf landmarks in frame 4"
    if case == "wrong_landmark_count":
        np.save(lm, lms[:, :97])
        return str(lm), "wrong landmark count: 97"
    if case == "mismatched_T":
        np.save(lm, np.concatenate([lms, lms[:1]]))
        np.save(bx, np.concatenate([boxes, boxes[:1]]))
        return str(video), "video has 6 frames but the annotations have 7"
    if case == "boxes_T":
        np.save(bx, boxes[:-1])
        return str(bx), "5 boxes but 6 landmark frames"
    if case == "missing_landmarks":
        lm.unlink()
        return str(lm), "does not exist"
    if case == "pickled_npy":
        np.save(lm, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return str(lm), "cannot load"
    raise AssertionError(case)


BAD_CASES = [
    "text_as_mp4",
    "truncated_half",
    "nan_boxes",
    "inverted_box",
    "box_outside",
    "inf_landmarks",
    "wrong_landmark_count",
    "mismatched_T",
    "boxes_T",
    "missing_landmarks",
    "pickled_npy",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_wflw_v_bad_case_raises_naming_file(tmp_path: Path, case: str) -> None:
    write_video_clip(tmp_path, "vid", *_clip(), fps=30)
    path, reason = _corrupt(tmp_path, "vid", case)
    with pytest.raises(DataError, match=reason.replace("(", r"\(")) as err:
        load_wflw_v_clip(tmp_path, "vid")
    assert err.value.path == path


def test_scan_wflw_v_reports_and_skips(tmp_path: Path) -> None:
    for i, case in enumerate(["ok", "nan_boxes", "ok", "truncated_half", "mismatched_T"]):
        write_video_clip(tmp_path, f"v{i}", *_clip(), fps=30)
        if case != "ok":
            _corrupt(tmp_path, f"v{i}", case)
    (tmp_path / "videos" / "v5.mp4").write_bytes(b"")  # a video without annotations
    good, bad = scan_wflw_v(tmp_path)
    assert [c.id for c in good] == ["v0", "v2"]
    assert [b.item for b in bad] == ["v1", "v3", "v4", "v5"]
    assert "NaN" in bad[0].reason and "cannot open" in bad[1].reason and "does not exist" in bad[3].reason


def test_write_video_clip_validates(tmp_path: Path) -> None:
    frames, lms, boxes = _clip()
    with pytest.raises(ValueError, match="differ"):
        write_video_clip(tmp_path, "v", frames, lms[:-1], boxes[:-1], fps=30)
    bad = boxes.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        write_video_clip(tmp_path, "v", frames, lms, bad, fps=30)
    with pytest.raises(ValueError, match="invalid video id"):
        write_video_clip(tmp_path, "a/b", frames, lms, boxes, fps=30)
    assert list_wflw_v(tmp_path) == []


@pytest.mark.shared_data
def test_wflw_v_id_lists_from_shared_data(shared_data: Path) -> None:
    root = _need(shared_data, "wflw_v")
    easy, hard = read_id_list(root / "easy_video_IDs.txt"), read_id_list(root / "hard_video_IDs.txt")
    ranges = read_download_ranges(root / "download_ranges.txt")
    assert len(easy) == len(hard) == 500 and not set(easy) & set(hard)
    assert set(easy) | set(hard) == set(ranges)
    lengths = [e - s + 1 for s, e in ranges.values()]
    assert sum(lengths) == 137_730 and (min(lengths), max(lengths)) == (120, 151)


def test_download_ranges_rejects_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "r.txt"
    f.write_text("abc 0 10\nxyz 5\n")
    with pytest.raises(DataError, match="line 2"):
        read_download_ranges(f)
    f.write_text("abc 10 5\n")
    with pytest.raises(DataError, match="line 1"):
        read_download_ranges(f)


# -------------------------------------------------------------------------------------------- 300-W


def test_read_pts_by_hand(tmp_path: Path) -> None:
    body = "\n".join(f"{i}.5 {2 * i}.25" for i in range(68))
    (tmp_path / "a.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    pts = read_pts(tmp_path / "a.pts")
    assert pts.shape == (68, 2) and pts[3].tolist() == [3.5, 6.25] and pts[67].tolist() == [67.5, 134.25]


def test_pts_round_trip(tmp_path: Path) -> None:
    pts = np.random.default_rng(0).uniform(0, 300, (68, 2))
    write_pts(tmp_path / "b.pts", pts)
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), pts, atol=5e-4)
    assert (tmp_path / "b.pts").read_text().startswith("version: 1\nn_points: 68\n{\n")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version: 1\nn_points: 3\n{\n1 2\n3 4\n5 6\n}\n", "wrong landmark count: 3, expected 68"),
        ("version: 1\nn_points: 68\n{\n1 2\n}\n", "declares 68 points but the block has 1"),
        ("version: 1\nn_points: 1\n1 2\n", "enclosed"),
        ("hello\n", "not a .pts file"),
        ("version: 1\nn_points: 1\n{\n1 nan\n}\n", "NaN"),
        ("version: 1\nn_points: 1\n{\n1 x\n}\n", "non-numeric"),
        ("version: 1\nn_points: 1\n{\n1 2 3\n}\n", "exactly two numbers"),
    ],
)
def test_read_pts_bad(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "c.pts").write_text(text)
    with pytest.raises(DataError, match=reason) as err:
        read_pts(tmp_path / "c.pts")
    assert err.value.path == str(tmp_path / "c.pts")


def test_list_300w_subsets_and_scan(tmp_path: Path) -> None:
    pts = np.random.default_rng(0).uniform(10, 50, (68, 2))
    for sub, names in [("helen_train", ["h1", "h2"]), ("afw", ["a1"])]:
        for n in names:
            write_pts(tmp_path / sub / f"{n}.pts", pts)
            cv2.imwrite(str(tmp_path / sub / f"{n}.jpg"), np.zeros((64, 64, 3), np.uint8))
    assert [i.name for i in list_300w(tmp_path)] == ["afw/a1", "helen_train/h1", "helen_train/h2"]
    assert [i.name for i in list_300w(tmp_path / "afw")] == ["a1"]
    assert [i.name for i in list_300w(tmp_path, ["helen_train"])][-1] == "helen_train/h2"
    (tmp_path / "afw" / "a1.jpg").unlink()
    write_pts(tmp_path / "afw" / "far.pts", pts + 1000)  # every point off the image
    cv2.imwrite(str(tmp_path / "afw" / "far.jpg"), np.zeros((64, 64, 3), np.uint8))
    good, bad = scan_300w(tmp_path)
    assert [g.name for g in good] == ["helen_train/h1", "helen_train/h2"]
    assert {b.item: b.reason.split(" (")[0] for b in bad} == {
        "afw/a1": "no image",
        "afw/far": "all landmarks lie outside the 64x64 image",
    }
    with pytest.raises(DataError, match="no image"):
        list_300w(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        list_300w(tmp_path, ["lfpw"])


@pytest.mark.shared_data
def test_300w_shared_data(shared_data: Path) -> None:
    root = _need(shared_data, "300w")
    items = list_300w(root, ["helen_train", "afw"])
    assert len(items) == 870 + 337
    first_afw = next(i for i in items if i.name == "afw/1051618982_1")
    first_line = first_afw.pts_path.read_text().splitlines()[3].split()
    assert first_afw.landmarks[0].tolist() == [float(first_line[0]), float(first_line[1])]
    # the outer corner 36 is on the image-left of corner 45 for (nearly) every face
    left = np.mean([i.landmarks[36, 0] < i.landmarks[45, 0] for i in items])
    assert left > 0.97
