"""Augmentation moves landmarks exactly with the pixels; photometric steps leave them alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ldeq_core.layouts import flip_landmarks, get_layout
from pipelines.train.augment import (
    AugmentConfig,
    AugmentParams,
    apply_params,
    augment,
    batch_rng,
    color_jitter,
    sample_params,
)

PERM = get_layout(98).flip_perm
SIZE = 256
SIGMA = 1.6


def grid_landmarks() -> np.ndarray:
    """98 sub-pixel positions on a 10x10 grid (20 px apart), so dots never overlap."""
    rng = np.random.default_rng(5)
    xs, ys = np.meshgrid(np.arange(10), np.arange(10))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)[:98] * 20.0 + 38.0
    return pts + rng.uniform(-0.5, 0.5, size=pts.shape)


def dot_image(points: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Gaussian dots (std SIGMA px, peak 250) centred exactly at ``points`` (pixel centres on integers)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size), np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA**2))
    grey = np.clip(np.rint(250 * img), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def centroid(img: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    """Intensity centroid of the window of ``radius`` around the rounded position ``near``."""
    cx, cy = np.rint(near).astype(int)
    win = img[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1, 0].astype(np.float64)
    yy, xx = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    return np.array([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])


def check_dots(img: np.ndarray, pts: np.ndarray, radius: int, margin: int, tol: float) -> int:
    """Assert a dot sits at every landmark at least ``margin`` px inside the image; return how many were checked."""
    size = img.shape[0]
    inside = np.all((pts >= margin) & (pts <= size - 1 - margin), axis=1)
    for p in pts[inside]:
        err = np.linalg.norm(centroid(img, p, radius) - p)
        assert err < tol, f"dot off by {err:.3f} px at {p}"
    return int(inside.sum())


@pytest.mark.parametrize("seed", range(6))
def test_geometric_augmentation_moves_dots_and_landmarks_together(seed: int) -> None:
    pts = grid_landmarks()
    img = dot_image(pts)
    cfg = AugmentConfig(
        flip_prob=0.5, rotate_prob=1, scale_prob=1, translate_prob=1, blur_prob=1, occlude_prob=0, color_prob=0
    )
    params = sample_params(np.random.default_rng(seed), cfg, SIZE, SIZE)
    out, out_pts = apply_params(img, pts, params, SIZE, PERM)
    assert params.angle_deg != 0 and params.scale != 1 and params.blur_sigma > 0
    assert check_dots(out, out_pts, radius=6, margin=8, tol=0.08) >= 40


@pytest.mark.parametrize("seed", range(3))
def test_augmentation_with_downscale_keeps_dots_on_landmarks(seed: int) -> None:
    """Warp at 256 px, then INTER_AREA to 64 px: x -> x / 4 - 3 / 8 keeps each dot on its landmark."""
    pts = grid_landmarks()
    img = dot_image(pts)
    cfg = AugmentConfig(
        flip_prob=1,
        rotate_prob=1,
        scale_prob=1,
        translate_prob=1,
        blur_prob=0,
        occlude_prob=0,
        color_prob=0,
        min_scale=1.0,
        max_scale=1.1,
    )
    params = sample_params(np.random.default_rng(100 + seed), cfg, SIZE, 64)
    out, out_pts = apply_params(img, pts, params, 64, PERM)
    assert out.shape == (64, 64, 3)
    assert check_dots(out, out_pts, radius=2, margin=3, tol=0.08) >= 40


def test_rotation_scale_shift_hand_computed() -> None:
    """S = 101 (centre 50, 50): 90 degrees counter-clockwise on screen takes right-of-centre to above-centre."""
    pts = np.array([[60.0, 50.0], [50.0, 30.0]])
    img = np.zeros((101, 101, 3), np.uint8)
    _, rot = apply_params(img, pts, AugmentParams(angle_deg=90.0), 101, None)
    np.testing.assert_allclose(rot, [[50.0, 40.0], [30.0, 50.0]], atol=1e-9)
    _, scaled = apply_params(img, pts, AugmentParams(scale=2.0), 101, None)
    np.testing.assert_allclose(scaled, [[70.0, 50.0], [50.0, 10.0]], atol=1e-9)
    _, shifted = apply_params(img, pts, AugmentParams(shift=(3.0, -4.0)), 101, None)
    np.testing.assert_allclose(shifted, [[63.0, 46.0], [53.0, 26.0]], atol=1e-9)
    # and the resize convention: 101 -> 50 px maps x to x * k + (k - 1) / 2 with k = 50 / 101
    _, small = apply_params(img, pts, AugmentParams(), 50, None)
    k = 50 / 101
    np.testing.assert_allclose(small, pts * k + (k - 1) / 2, atol=1e-12)


def test_flip_matches_layout_formula_and_cv2_flip() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    pts = rng.uniform(0, SIZE - 1, size=(98, 2))
    out, out_pts = apply_params(img, pts, AugmentParams(flip=True), SIZE, PERM)
    np.testing.assert_array_equal(out, cv2.flip(img, 1))
    np.testing.assert_allclose(out_pts, flip_landmarks(pts, SIZE), atol=1e-9)
    # semantic check: the left outer eye corner (60) stays left of the right one (72) after the flip
    face = grid_landmarks()
    face[60], face[72] = (80.0, 100.0), (170.0, 100.0)
    _, flipped = apply_params(img, face, AugmentParams(flip=True), SIZE, PERM)
    assert flipped[60, 0] < flipped[72, 0]


def test_flip_twice_is_identity() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    pts = rng.uniform(0, SIZE - 1, size=(98, 2))
    once_img, once_pts = apply_params(img, pts, AugmentParams(flip=True), SIZE, PERM)
    twice_img, twice_pts = apply_params(once_img, once_pts, AugmentParams(flip=True), SIZE, PERM)
    np.testing.assert_array_equal(twice_img, img)
    np.testing.assert_allclose(twice_pts, pts, atol=1e-9)
    assert not np.array_equal(once_img, img)


def test_flip_needs_a_permutation() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="flip permutation"):
        apply_params(img, np.zeros((5, 2)), AugmentParams(flip=True), 32, None)
    # augment() skips flips for layouts without a permutation
    pts = np.array([[3.0, 4.0], [10.0, 20.0]])
    cfg = AugmentConfig(
        flip_prob=1, rotate_prob=0, scale_prob=0, translate_prob=0, blur_prob=0, occlude_prob=0, color_prob=0
    )
    _, out = augment(img, pts, np.random.default_rng(0), cfg, 32, None)
    np.testing.assert_allclose(out, pts)


def test_color_jitter_hand_computed() -> None:
    img = np.empty((4, 4, 3), np.uint8)
    img[:] = (100, 150, 200)
    np.testing.assert_array_equal(color_jitter(img, 1.2, 1.0, 1.0)[0, 0], [120, 180, 240])
    grey = 0.299 * 100 + 0.587 * 150 + 0.114 * 200  # 140.75
    np.testing.assert_array_equal(color_jitter(img, 1.0, 1.0, 0.0)[0, 0], [round(grey)] * 3)
    np.testing.assert_array_equal(color_jitter(img, 1.0, 1.0, 2.0)[0, 0], [59, 159, 255])  # 2x - grey, clipped
    half = np.zeros((2, 2, 3), np.uint8)
    half[0], half[1] = 50, 150  # mean grey 100
    out = color_jitter(half, 1.0, 2.0, 1.0)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[1, 0], [200, 200, 200])


def test_occluder_and_colour_do_not_move_landmarks() -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    pts = rng.uniform(0, 63, size=(98, 2))
    p = AugmentParams(occluder=(10, 20, 30, 25), occluder_rgb=(1, 2, 3))
    out, out_pts = apply_params(img, pts, p, 64, PERM)
    np.testing.assert_array_equal(out_pts, pts)
    assert np.all(out[20:25, 10:30] == [1, 2, 3])
    mask = np.ones((64, 64), bool)
    mask[20:25, 10:30] = False
    np.testing.assert_array_equal(out[mask], img[mask])


def test_sampling_is_seeded_per_batch() -> None:
    cfg = AugmentConfig()
    a = sample_params(batch_rng(0, 1, 0, 3), cfg, 256, 64)
    b = sample_params(batch_rng(0, 1, 0, 3), cfg, 256, 64)
    assert a == b
    draws = {repr(sample_params(batch_rng(0, e, r, 3), cfg, 256, 64)) for e in range(3) for r in range(2)}
    assert len(draws) == 6  # epochs and ranks draw different augmentations
    off = AugmentConfig(enabled=False)
    assert not sample_params(batch_rng(0, 0, 0, 0), off, 256, 64).is_geometric


def test_probabilities_fire_at_their_rate() -> None:
    cfg = AugmentConfig(flip_prob=0.5, blur_prob=0.3)
    rng = np.random.default_rng(3)
    draws = [sample_params(rng, cfg, 256, 256) for _ in range(2000)]
    assert abs(np.mean([d.flip for d in draws]) - 0.5) < 0.04
    assert abs(np.mean([d.blur_sigma > 0 for d in draws]) - 0.3) < 0.04
    assert max(abs(d.angle_deg) for d in draws) <= cfg.max_rotate_deg


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="min_scale"):
        AugmentConfig(min_scale=1.2, max_scale=1.0)
    with pytest.raises(ValueError, match="square"):
        apply_params(np.zeros((10, 12, 3), np.uint8), np.zeros((98, 2)), AugmentParams(), 8, PERM)
