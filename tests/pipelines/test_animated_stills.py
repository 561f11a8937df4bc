"""Animated stills: exact landmark transport, determinism, boxes, and a WFLW-V round trip."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.animated_stills import (
    AnimParams,
    _blur_kernel,
    build_animated_stills_dataset,
    make_animated_video,
)
from pipelines.formats import list_300w, load_wflw_v_clip

CLEAN = {"blur_prob": 0.0, "noise_std": 0.0, "occluder_prob": 0.0}


def _dot_still(spacing: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A black 160x160 image with Gaussian dots (white, sigma 1.5 px) at 9 sub-pixel landmark positions."""
    grid = np.stack(np.meshgrid(np.arange(3), np.arange(3)), -1).reshape(-1, 2)
    pts = 50.0 + spacing * grid + np.random.default_rng(0).uniform(-0.5, 0.5, (9, 2))
    ys, xs = np.mgrid[:160, :160]
    img = np.zeros((160, 160), np.float64)
    for x, y in pts:
        img += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2))
    rgb = np.repeat(np.rint(np.clip(img, 0, 255)).astype(np.uint8)[..., None], 3, axis=2)
    return rgb, pts


def _dot_centroids(frame: np.ndarray) -> np.ndarray:
    gray = frame.astype(np.float64).mean(axis=2)
    base = np.median(gray)
    n, labels = cv2.connectedComponents((gray > base + 40).astype(np.uint8))
    out = []
    ys, xs = np.mgrid[: gray.shape[0], : gray.shape[1]]
    for k in range(1, n):
        sel = labels == k
        w = gray[sel] - base
        out.append([(xs[sel] * w).sum() / w.sum(), (ys[sel] * w).sum() / w.sum()])
    return np.array(out)


def test_landmarks_follow_the_warp_exactly() -> None:
    img, pts = _dot_still()
    params = {**CLEAN, "face_frac": 0.5, "rot_deg": 25.0, "perspective": 0.08}
    frames, lms, _ = make_animated_video(img, pts, n_frames=6, size=(320, 240), seed=3, params=params)
    assert frames.shape == (6, 240, 320, 3) and lms.shape == (6, 9, 2)
    assert np.linalg.norm(lms[-1] - lms[0], axis=1).max() > 1.0  # it does move
    for t in range(6):
        found = _dot_centroids(frames[t])
        assert len(found) == 9
        dist = np.linalg.norm(found[None] - lms[t][:, None], axis=2)  # (landmark, dot)
        assert sorted(dist.argmin(1).tolist()) == list(range(9))  # one dot per landmark
        assert dist.min(1).max() < 0.25, f"frame {t}: {dist.min(1)}"  # measured ~0.07


def test_deterministic_from_seed() -> None:
    img, pts = _dot_still()
    kw = {"n_frames": 4, "size": (96, 64), "params": {"occluder_prob": 1.0, "blur_prob": 0.5}}
    a = make_animated_video(img, pts, seed=7, **kw)
    b = make_animated_video(img, pts, seed=7, **kw)
    c = make_animated_video(img, pts, seed=8, **kw)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[1], c[1])


def test_boxes_are_expanded_landmark_boxes_and_jitter_moves_them() -> None:
    img, pts = _dot_still()
    p = AnimParams(**CLEAN, box_expand=0.1)
    _, lms, boxes = make_animated_video(img, pts, n_frames=40, size=(64, 48), seed=1, params=p)
    lo, hi = lms.min(1), lms.max(1)
    expected = np.concatenate([lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)], 1)
    np.testing.assert_allclose(boxes, expected, atol=1e-9)
    jit = AnimParams(**CLEAN, box_expand=0.1, box_jitter=0.05)
    _, lms2, boxes2 = make_animated_video(img, pts, n_frames=40, size=(64, 48), seed=1, params=jit)
    np.testing.assert_array_equal(lms2, lms)  # jitter draws come last: same motion
    side = boxes[:, 2:] - boxes[:, :2]
    shift = ((boxes2[:, :2] + boxes2[:, 2:]) - (boxes[:, :2] + boxes[:, 2:])) / 2 / side
    assert 0.03 < shift.std() < 0.075  # centre noise std ~ 0.05 of the box size


def test_landmarks_stay_inside_frame_under_strong_motion() -> None:
    img, pts = _dot_still(spacing=50.0)
    strong = {**CLEAN, "face_frac": 0.9, "trans_frac": 0.5, "log_scale": 0.4, "rot_deg": 40, "perspective": 0.1}
    _, lms, _ = make_animated_video(img, pts, n_frames=30, size=(64, 48), seed=5, params=strong)
    assert lms[..., 0].min() >= 0 and lms[..., 0].max() <= 63
    assert lms[..., 1].min() >= 0 and lms[..., 1].max() <= 47


def test_blur_kernel_is_a_centred_line_along_the_motion() -> None:
    k = _blur_kernel(np.array([3.0, 0.0]), 9.0)
    assert k.shape == (11, 11) and k.sum() == pytest.approx(1.0)
    assert k[5].sum() > 0.99  # horizontal motion: the mass sits on the middle row
    ys, xs = np.mgrid[:11, :11]
    assert (xs * k).sum() == pytest.approx(5.0) and (ys * k).sum() == pytest.approx(5.0)  # no shift
    diag = _blur_kernel(np.array([1.0, 1.0]), 7.0)
    assert np.trace(diag) > 0.95  # (1, 1) motion: the mass sits on the main diagonal


def test_rejects_bad_input() -> None:
    img, pts = _dot_still()
    with pytest.raises(ValueError, match="landmarks"):
        make_animated_video(img, pts * np.nan, n_frames=2, size=(64, 48))
    with pytest.raises(ValueError, match="uint8"):
        make_animated_video(img.astype(np.float32), pts, n_frames=2, size=(64, 48))


def test_params_are_validated() -> None:
    for bad in ({"blur_prob": 1.5}, {"noise_std": -1.0}, {"freq_hz": (0.5, 0.1)}, {"perspective": 0.5}):
        with pytest.raises(ValueError, match="invalid animated-stills parameters"):
            AnimParams(**bad)


def test_build_skips_existing_and_rejects_mixed_counts(tmp_path: Path) -> None:
    img, pts = _dot_still()
    build_animated_stills_dataset([(img, pts)], tmp_path, 1, n_frames=3, size=(64, 48))
    video = tmp_path / "videos" / "anim_00000.mp4"
    stamp = video.stat().st_mtime_ns
    build_animated_stills_dataset([(img, pts)], tmp_path, 1, n_frames=3, size=(64, 48), skip_existing=True)
    assert video.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="8 landmarks, earlier stills have 9"):
        build_animated_stills_dataset([(img, pts), (img, pts[:8])], tmp_path / "x", 2, n_frames=3, size=(64, 48))


def test_build_dataset_round_trip(tmp_path: Path) -> None:
    img, pts = _dot_still()
    ids = build_animated_stills_dataset([(img, pts)], tmp_path, 2, n_frames=5, size=(96, 64), seed=2)
    assert ids == ["anim_00000", "anim_00001"]
    meta = json.loads((tmp_path / "animated_stills.json").read_text())
    assert [v["seed"] for v in meta["videos"]] == [[2, 0], [2, 1]]
    for i, vid in enumerate(ids):
        clip = load_wflw_v_clip(tmp_path, vid, n_points=9)
        assert (clip.n_frames, clip.frame_size) == (5, (96, 64))
        _, lms, boxes = make_animated_video(img, pts, n_frames=5, size=(96, 64), seed=[2, i])
        np.testing.assert_array_equal(clip.landmarks, lms)
        np.testing.assert_array_equal(clip.boxes, boxes)


@pytest.mark.shared_data
def test_build_from_300w(tmp_path: Path, shared_data: Path) -> None:
    root = shared_data / "300w"
    if not root.is_dir():
        pytest.skip(f"shared 300-W data not found at {root}")
    items = list_300w(root, ["afw"])[:5]
    ids = build_animated_stills_dataset(items, tmp_path, 2, n_frames=8, size=(320, 240), seed=0)
    for vid in ids:
        clip = load_wflw_v_clip(tmp_path, vid, n_points=68)
        assert clip.n_frames == len(clip.landmarks) == 8 and clip.frame_size == (320, 240)
        assert (clip.landmarks >= 0).all()
        assert (clip.landmarks[..., 0] <= 319).all() and (clip.landmarks[..., 1] <= 239).all()
