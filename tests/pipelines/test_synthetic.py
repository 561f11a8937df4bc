"""Tests of the synthetic face dataset: layout, rendering correspondence, formats, videos, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ldeq_core.layouts import WFLW98
from ldeq_shared.video_io import read_frames
from ldeq_shared.wflw_v import load_wflw_v_clip
from pipelines.formats.wflw import read_wflw
from pipelines.synthetic import face_model as fm
from pipelines.synthetic import render as rd
from pipelines.synthetic.generate import (
    BOX_EXPAND,
    detector_box,
    generate_dataset,
    item_rng,
    mean_shape_baseline,
    render_still,
    render_video,
    smooth_signal,
)

# --- face model ----------------------------------------------------------------------------------------

_IDN = fm.Identity(
    face_width=1.08,
    face_height=0.93,
    jaw_square=0.8,
    eye_size=1.1,
    eye_spacing=0.03,
    eye_tilt=0.05,
    eye_open=0.9,
    nose_length=1.1,
    nose_width=1.2,
    mouth_width=0.9,
    mouth_y=0.02,
    lip_thickness=1.3,
    brow_height=-0.03,
    brow_thickness=1.3,
    brow_arch=1.5,
    depth=1.1,
)
_EX = fm.Expression(mouth_open=0.4, smile=0.6, brow_raise=0.5, blink_l=0.2, blink_r=0.2)


def _mirror(pts: np.ndarray) -> np.ndarray:
    return pts * np.array([-1.0, 1.0])


def test_flip_permutation_maps_mirrored_face_onto_itself() -> None:
    pts = fm.landmarks_3d(_IDN, _EX)[:, :2]
    flipped = _mirror(pts)[WFLW98.flip_perm]
    np.testing.assert_allclose(flipped, pts, atol=1e-9)
    # without the permutation the mirrored face is far from the original (the check has teeth)
    assert np.abs(_mirror(pts) - pts).max() > 0.5


def test_flip_swaps_asymmetric_expressions() -> None:
    wink_l = fm.landmarks_3d(_IDN, fm.Expression(blink_l=1.0, gaze_x=0.6))[:, :2]
    wink_r = fm.landmarks_3d(_IDN, fm.Expression(blink_r=1.0, gaze_x=-0.6))[:, :2]
    np.testing.assert_allclose(_mirror(wink_l)[WFLW98.flip_perm], wink_r, atol=1e-9)
    assert not np.allclose(wink_l, wink_r, atol=1e-3)


def test_mean_face_semantic_layout() -> None:
    p3 = fm.landmarks_3d()
    p = p3[:, :2]
    # contour runs image-left -> chin -> image-right
    assert p[0, 0] < p[16, 0] < p[32, 0]
    assert np.argmax(p[:33, 1]) == 16
    # outer eye corners: symmetric, 2 * (0.47 + 0.19) = 1.32 apart, and the extreme x of their eyes
    np.testing.assert_allclose(np.linalg.norm(p[60] - p[72]), 1.32, atol=1e-12)
    assert p[60, 0] == p[60:68, 0].min() and p[72, 0] == p[68:76, 0].max()
    assert p[64, 0] == p[60:68, 0].max() and p[68, 0] == p[68:76, 0].min()
    # brows above the eyes, upper lid above lower lid, nose tip is the most forward point
    assert p[33:51, 1].max() < p[60:76, 1].min()
    assert np.all(p[[61, 62, 63], 1] < p[[67, 66, 65], 1])
    assert int(np.argmax(p3[:, 2])) == fm.NOSE_TIP
    # mouth: 79 top centre above 85 bottom centre, corners 76 left of 82
    assert p[79, 1] < p[90, 1] <= p[94, 1] < p[85, 1]
    assert p[76, 0] < p[88, 0] < p[92, 0] < p[82, 0]
    # pupils sit between their eye corners
    assert p[60, 0] < p[96, 0] < p[64, 0] and p[68, 0] < p[97, 0] < p[72, 0]


def test_blink_closes_the_lids_and_mouth_open_drops_the_jaw() -> None:
    closed = fm.landmarks_3d(ex=fm.Expression(blink_l=1.0, blink_r=1.0))
    np.testing.assert_allclose(closed[[61, 62, 63], 1], closed[[67, 66, 65], 1], atol=1e-12)
    open_ = fm.landmarks_3d(ex=fm.Expression(mouth_open=1.0))
    neutral = fm.landmarks_3d()
    assert open_[16, 1] - neutral[16, 1] == pytest.approx(0.24, abs=1e-9)  # chin travel
    assert open_[94, 1] - open_[90, 1] > 0.25


def test_expression_lerp_is_linear() -> None:
    a = fm.Expression(mouth_open=0.2, smile=-0.4, blink_l=1.0)
    b = fm.Expression(mouth_open=0.6, smile=0.4, gaze_x=1.0)
    mid = a.lerp(b, 0.5)
    assert (mid.mouth_open, mid.smile, mid.blink_l, mid.gaze_x) == pytest.approx((0.4, 0.0, 0.5, 0.5))
    assert a.lerp(b, 0.0) == a and a.lerp(b, 1.0) == b


def test_projection_hand_cases() -> None:
    pts = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    # yaw 90 deg: the nose (towards the camera) goes to the image right, +x goes behind the head
    out = fm.project(pts, fm.Pose(yaw=np.pi / 2, scale=10.0, tx=5.0, ty=7.0))
    np.testing.assert_allclose(out, [[15.0, 7.0], [5.0, 7.0]], atol=1e-9)
    # roll 90 deg: +x (image right) turns to +y (down), i.e. clockwise on screen
    out = fm.project(pts, fm.Pose(roll=np.pi / 2, scale=2.0, tx=0.0, ty=0.0))
    np.testing.assert_allclose(out[1], [0.0, 2.0], atol=1e-9)
    # pitch 90 deg: the face tilts down, the nose goes down (positive y)
    out = fm.project(pts, fm.Pose(pitch=np.pi / 2, scale=1.0, tx=0.0, ty=0.0))
    np.testing.assert_allclose(out[0], [0.0, 1.0], atol=1e-9)


# --- renderer correspondence ---------------------------------------------------------------------------

_BG = (0, 140, 0)


def _controlled_render() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frontal face on a flat green background, fixed colours, no noise/blur/occluder."""
    app = rd.Appearance(
        skin=np.array([205, 150, 120], np.float32),
        lip_upper=np.array([150, 25, 45], np.float32),
        lip_lower=np.array([165, 30, 50], np.float32),
        hair=np.array([40, 30, 20], np.float32),
        brow=np.array([30, 20, 15], np.float32),
        iris=np.array([70, 45, 25], np.float32),
        sclera=np.array([240, 240, 235], np.float32),
        clothes=np.array([20, 20, 200], np.float32),
        hair_style=1,
        hair_volume=0.5,
        hairline_height=0.5,
        hairline_part=0.0,
        lash=1.0,
        texture=np.ones((16, 16), np.float32),
    )
    light = rd.Lighting(direction=np.array([0.0, 0.0, 1.0]), ambient=0.6, diffuse=0.45)
    pose = fm.Pose(0.0, 0.0, 0.0, scale=90.0, tx=128.0, ty=100.0)
    geo = rd.build_geometry(fm.Identity(), fm.Expression(), pose, app)
    bg = np.empty((256, 256, 3), np.uint8)
    bg[:] = _BG
    img = bg.copy()
    rd.render_head(img, geo, app, light)
    return img, bg, geo.landmarks


def _px(img: np.ndarray, p: np.ndarray) -> np.ndarray:
    return img[round(float(p[1])), round(float(p[0]))].astype(np.float64)


def test_pupils_on_dark_iris_and_sclera_around() -> None:
    img, _, lm = _controlled_render()
    for pupil, outer in ((96, 60), (97, 72)):
        assert _px(img, lm[pupil]).max() < 40, "pupil landmark must sit on the dark pupil"
        sclera = lm[pupil] + 0.65 * (lm[outer] - lm[pupil])
        assert _px(img, sclera)[2] > 180, "between pupil and outer corner lies the white sclera"


def test_eye_corners_on_eye_structure_not_skin() -> None:
    img, _, lm = _controlled_render()
    cheek = _px(img, (lm[2] + lm[54]) / 2)  # a plain skin pixel
    for corner, other in ((60, 64), (64, 60), (68, 72), (72, 68)):
        inside = lm[corner] + 2.0 * (lm[other] - lm[corner]) / np.linalg.norm(lm[other] - lm[corner])
        assert np.abs(_px(img, inside) - cheek).max() > 40, f"landmark {corner}: no eye drawn next to it"
        outside = lm[corner] - 4.0 * (lm[other] - lm[corner]) / np.linalg.norm(lm[other] - lm[corner])
        assert np.abs(_px(img, outside) - cheek).max() < 25, f"landmark {corner}: skin expected outside"


def test_face_skin_lips_brows_at_their_landmarks() -> None:
    img, bg, lm = _controlled_render()
    assert np.abs(_px(img, lm[fm.NOSE_TIP]) - _px(bg, lm[fm.NOSE_TIP])).max() > 60
    upper_lip = _px(img, (lm[79] + lm[90]) / 2)
    lower_lip = _px(img, (lm[85] + lm[94]) / 2)
    for lip in (upper_lip, lower_lip):
        assert lip[0] - lip[1] > 90, "lip colour expected between the outer and inner lip contours"
    brow = _px(img, (lm[35] + lm[39]) / 2)
    assert brow.max() < 60
    centre = lm[54]
    for i in (4, 6, 8, 24, 26, 28):  # cheeks and jaw sides: background just outside (neck is lower)
        inward = lm[i] + 4.0 * (centre - lm[i]) / np.linalg.norm(centre - lm[i])
        outward = lm[i] - 4.0 * (centre - lm[i]) / np.linalg.norm(centre - lm[i])
        assert np.abs(_px(img, inward) - _px(bg, inward)).max() > 60, f"contour {i}: skin inside"
        np.testing.assert_array_equal(_px(img, outward), _px(bg, outward), err_msg=f"contour {i}: bg outside")


def test_render_still_is_in_crop_and_fast_enough() -> None:
    rd.add_noise(np.zeros((4, 4, 3), np.uint8), 1.0, np.random.default_rng(0))  # build the noise bank
    for i in range(5):
        img, lm = render_still(item_rng(0, "train", i))
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert lm.shape == (98, 2) and lm.dtype == np.float32
        assert lm.min() >= 2.0 - 1e-4 and lm.max() <= 253.0 + 1e-4
        side = float(np.max(lm.max(0) - lm.min(0)))
        assert 256 / (1.2 * BOX_EXPAND) * 0.8 < side < 256 / (1.2 * BOX_EXPAND) * 1.2


def test_detector_box_hand_case() -> None:
    lm = np.array([[10.0, 30.0], [20.0, 50.0], [15.0, 40.0]])
    np.testing.assert_allclose(detector_box(lm), [9.5, 29.0, 20.5, 51.0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = detector_box(lm, rng, jitter=0.05)
        assert b[0] <= 10 and b[1] <= 30 and b[2] >= 20 and b[3] >= 50


def test_mean_shape_baseline_hand_case() -> None:
    base = np.zeros((98, 2))
    base[60], base[72] = (0.0, 0.0), (4.0, 0.0)
    train = np.stack([base + 1.0, base - 1.0])  # mean = base
    test = (base + np.array([0.3, 0.4]))[None]  # every point off by 0.5; inter-ocular 4
    assert mean_shape_baseline(train, test) == pytest.approx(0.5 / 4.0)


def test_smooth_signal_bounded_and_smooth() -> None:
    x = smooth_signal(np.random.default_rng(1), 300, 30.0, 0.1, 0.5)
    assert np.abs(x).max() <= 1.0
    # |dx/dt| <= 2 pi f_hi for a normalised sum of sinusoids
    assert np.abs(np.diff(x)).max() <= 2 * np.pi * 0.5 / 30.0 + 1e-12


# --- videos --------------------------------------------------------------------------------------------


def _speed(lm: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(lm, axis=0), axis=-1).mean(-1)


def test_video_easy_is_smooth_and_consistent() -> None:
    clip = render_video(item_rng(5, "video", 0), 40, False, size=(192, 144))
    assert clip.frames.shape == (40, 144, 192, 3) and clip.landmarks.shape == (40, 98, 2)
    assert clip.boxes.shape == (40, 4) and clip.segments == []
    face = np.max(clip.landmarks.max(1) - clip.landmarks.min(1), axis=-1)
    assert np.all(_speed(clip.landmarks) < 0.03 * face[1:])
    assert np.all(clip.boxes[:, :2] <= clip.landmarks.min(1)) and np.all(clip.boxes[:, 2:] >= clip.landmarks.max(1))
    assert clip.landmarks[..., 0].min() >= 0 and clip.landmarks[..., 0].max() <= 191
    assert clip.landmarks[..., 1].min() >= 0 and clip.landmarks[..., 1].max() <= 143


def test_video_fast_motion_segment_is_faster() -> None:
    clip = render_video(item_rng(5, "video", 1), 60, True, size=(192, 144), kinds=("fast_motion",))
    (seg,) = clip.segments
    a, b = int(seg["start"]), int(seg["end"])
    sp = _speed(clip.landmarks)  # sp[t] = displacement t -> t + 1
    inside = sp[a - 1 : b]
    outside = np.concatenate([sp[: a - 1], sp[b:]])
    assert inside.max() > 3 * outside.max()


def test_video_low_light_and_blur_segments_change_pixels() -> None:
    clip = render_video(item_rng(5, "video", 2), 60, True, size=(192, 144), kinds=("low_light", "motion_blur"))
    segs = {str(s["type"]): (int(s["start"]), int(s["end"])) for s in clip.segments}
    mean = clip.frames.reshape(60, -1).mean(1)
    a, b = segs["low_light"]
    other = np.ones(60, bool)
    other[a:b] = False
    assert mean[a:b].max() < 0.6 * mean[other].min()
    a, b = segs["motion_blur"]
    sharp = [cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in clip.frames]
    ok = [i for i in range(60) if other[i] and not (a <= i < b)]
    # blur removes high frequencies (noise included): much lower Laplacian variance than normal frames
    assert max(sharp[a:b]) < 0.7 * min(sharp[i] for i in ok)


def test_video_occluder_covers_face_mid_segment() -> None:
    clip = render_video(item_rng(5, "video", 3), 60, True, size=(192, 144), kinds=("occlusion",))
    (seg,) = clip.segments
    a, b = int(seg["start"]), int(seg["end"])
    changed = []
    for t in range(a, b):
        ref = a - 1 if a > 0 else b
        pts = np.round(clip.landmarks[t]).astype(int)
        ref_pts = np.round(clip.landmarks[ref]).astype(int)
        cur = clip.frames[t][pts[:, 1], pts[:, 0]].astype(int)
        old = clip.frames[ref][ref_pts[:, 1], ref_pts[:, 0]].astype(int)
        changed.append(np.mean(np.abs(cur - old).max(-1) > 40))
    assert max(changed) > 0.2  # a sizeable part of the landmarks hidden at some point


def test_render_video_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        render_video(np.random.default_rng(0), 1, False)
    with pytest.raises(ValueError, match="kinds"):
        render_video(np.random.default_rng(0), 10, True, kinds=("rain",))
    with pytest.raises(ValueError, match="size"):
        render_video(np.random.default_rng(0), 10, False, size=(101, 80))


# --- dataset: formats and determinism ------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".txt", ".png", ".npy", ".json"):
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(root, n_train=8, n_test=4, n_videos=2, n_frames=16, seed=11, progress=False)
    return root, summary


def test_stills_format(tiny: tuple[Path, dict[str, Any]]) -> None:
    root, summary = tiny
    for split, n in (("train", 8), ("test", 4)):
        lines = (root / "wflw" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        for ln in lines:
            parts = ln.split()
            assert len(parts) == 197
            vals = np.array(parts[1:], float)
            assert vals.min() >= 0.0 and vals.max() <= 1.0
            img = cv2.imread(str(root / "wflw" / split / parts[0]))
            assert img.shape == (256, 256, 3)
        items = read_wflw(root / "wflw", split)
        assert [it.landmarks.shape for it in items] == [(98, 2)] * n
    assert 0.02 < float(summary["mean_shape_nme"]) < 0.5
    on_disk = json.loads((root / "summary.json").read_text())
    assert on_disk["mean_shape_nme"] == summary["mean_shape_nme"] and "total_seconds" not in on_disk


def test_videos_format_and_index(tiny: tuple[Path, dict[str, Any]]) -> None:
    root, _ = tiny
    v = root / "wflw_v"
    index = json.loads((v / "index.json").read_text())["videos"]
    easy = (v / "easy_video_IDs.txt").read_text().split()
    hard = (v / "hard_video_IDs.txt").read_text().split()
    assert len(index) == 2 and easy == [index[0]["id"]] and hard == [index[1]["id"]]
    assert index[0]["segments"] == [] and len(index[1]["segments"]) >= 1
    for rec in index:
        clip = load_wflw_v_clip(v, rec["id"])  # the project's validating reader (decodes every frame)
        lm = np.load(v / "landmarks" / f"{rec['id']}.npy")
        assert clip.n_frames == lm.shape[0] == clip.boxes.shape[0] == rec["n_frames"] == 16
        assert lm.shape[1:] == (98, 2) and np.issubdtype(lm.dtype, np.floating)
        assert clip.frame_size == (rec["width"], rec["height"])
        assert np.all(clip.boxes[:, :2] <= lm.min(1)) and np.all(clip.boxes[:, 2:] >= lm.max(1))
    ranges = (v / "download_ranges.txt").read_text().split("\n")
    assert ranges[0].split() == [index[0]["id"], "0", "15"]


def test_generation_is_deterministic(tiny: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = tiny
    again = tmp_path / "again"
    generate_dataset(again, n_train=8, n_test=4, n_videos=2, n_frames=16, seed=11, workers=2, progress=False)
    assert _digest(root) == _digest(again)
    vid = json.loads((root / "wflw_v" / "index.json").read_text())["videos"][1]["id"]
    a = read_frames(root / "wflw_v" / "videos" / f"{vid}.mp4")
    b = read_frames(again / "wflw_v" / "videos" / f"{vid}.mp4")
    np.testing.assert_array_equal(a, b)
    other = tmp_path / "other"
    generate_dataset(other, n_train=2, n_test=0, n_videos=0, n_frames=16, seed=12, progress=False)
    assert (other / "wflw" / "train" / "synth_000000.png").read_bytes() != (
        root / "wflw" / "train" / "synth_000000.png"
    ).read_bytes()


def test_generate_dataset_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_frames"):
        generate_dataset(tmp_path, n_train=0, n_test=0, n_videos=1, n_frames=1, progress=False)
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(tmp_path, n_train=1, n_test=0, n_videos=0, workers=0, progress=False)
    with pytest.raises(ValueError, match="n_train"):
        generate_dataset(tmp_path, n_train=-1, n_test=0, n_videos=0, progress=False)
    with pytest.raises(ValueError, match="image_format"):
        generate_dataset(tmp_path, n_train=1, n_test=0, n_videos=0, progress=False, image_format="bmp")


def test_jpeg_stills_match_png(tiny: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    generate_dataset(tmp_path, n_train=2, n_test=0, n_videos=0, seed=11, progress=False, image_format="jpg")
    items = read_wflw(tmp_path / "wflw", "train")
    assert [it.relpath for it in items] == ["synth_000000.jpg", "synth_000001.jpg"]
    jpg = items[0].load_rgb().astype(float)
    png = read_wflw(tiny[0] / "wflw", "train")[0]
    np.testing.assert_array_equal(items[0].landmarks, png.landmarks)  # same seed -> same item
    assert np.abs(jpg - png.load_rgb()).mean() < 4.0
