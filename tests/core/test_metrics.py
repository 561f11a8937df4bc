"""Metrics against hand-computed cases (spec §4)."""

from __future__ import annotations

import numpy as np
import pytest

from ldeq_core.metrics import aggregate_videos, ced_curve, fr_auc, nme, video_nme, video_nmf


def _layout(n_lmk: int, i: int, j: int, seed: int = 0) -> np.ndarray:
    """Random (n_lmk, 2) face whose points i and j are exactly 10 px apart (a 6-8-10 triangle)."""
    g = np.random.default_rng(seed).uniform(0.0, 50.0, (n_lmk, 2))
    g[i] = [20.0, 20.0]
    g[j] = [26.0, 28.0]
    return g


def _square_face(side: float, n_side: int = 4) -> np.ndarray:
    """Grid of landmarks filling a side x side box: face size sqrt(w h) = side."""
    u = np.linspace(0.0, side, n_side)
    return np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2) + 7.0


# ---------------------------------------------------------------- still-image NME


def test_nme_two_landmark_toy_with_explicit_eyes() -> None:
    gt = np.array([[[0.0, 0.0], [10.0, 0.0]]])
    pred = gt + np.array([[3.0, 4.0], [0.0, 0.0]])  # errors 5 and 0 -> mean 2.5, IOD 10
    np.testing.assert_allclose(nme(pred, gt, eye_indices=(0, 1)), [0.25])


@pytest.mark.parametrize(("n_lmk", "i", "j"), [(98, 60, 72), (68, 36, 45)])
def test_nme_default_eye_corners(n_lmk: int, i: int, j: int) -> None:
    gt = _layout(n_lmk, i, j)[None]
    np.testing.assert_allclose(nme(gt + np.array([3.0, 4.0]), gt), [0.5])


def test_nme_is_per_image() -> None:
    gt = np.stack([_layout(98, 60, 72, seed=1), 2.0 * _layout(98, 60, 72, seed=2)])  # IODs 10 and 20
    pred = gt + np.array([[[3.0, 4.0]], [[6.0, 8.0]]])  # errors 5 and 10
    np.testing.assert_allclose(nme(pred, gt), [0.5, 0.5])
    pred[1] = gt[1] + [3.0, 4.0]
    np.testing.assert_allclose(nme(pred, gt), [0.5, 0.25])


def test_nme_face_normaliser() -> None:
    gt = np.array([[[0.0, 0.0], [20.0, 5.0], [4.0, 1.0]]])  # box 20 x 5 -> sqrt(100) = 10
    pred = gt + np.array([0.0, 2.0])
    np.testing.assert_allclose(nme(pred, gt, norm="face"), [0.2])


# ---------------------------------------------------------------- FR / AUC


def test_ced_grid_matches_spec() -> None:
    xs, ys = ced_curve(np.array([0.05]))
    assert xs.shape == (1001,)
    assert xs[0] == 0.0
    assert xs[-1] == pytest.approx(0.1)
    assert ys[xs < 0.05 - 1e-9].max() == 0.0
    assert ys[xs >= 0.05 + 1e-9].min() == 1.0


def test_fr_auc_perfect_and_all_failed() -> None:
    assert fr_auc(np.zeros(10)) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert fr_auc(np.full(5, 0.3)) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_fr_auc_hand_computed_set() -> None:
    # AUC = mean over images of (0.1 - e)_+ / 0.1 = (0.08 + 0.05 + 0.02 + 0) / 0.4
    fr, auc = fr_auc(np.array([0.02, 0.05, 0.2, 0.08]))
    assert fr == pytest.approx(0.25)
    assert auc == pytest.approx(0.375, abs=1e-3)


def test_fr_threshold_is_inclusive_success() -> None:
    fr, _ = fr_auc(np.array([0.1, 0.1000001]))
    assert fr == pytest.approx(0.5)


def test_auc_uniform_nmes_matches_integral() -> None:
    # NME ~ U[0, 0.2]: CED(x) = x / 0.2, integral over [0, 0.1] = 0.025, / 0.1 = 0.25; FR = 0.5
    fr, auc = fr_auc(np.linspace(0.0, 0.2, 20001))
    assert fr == pytest.approx(0.5, abs=1e-4)
    assert auc == pytest.approx(0.25, abs=1e-4)
    _, auc_08 = fr_auc(np.linspace(0.0, 0.2, 20001), threshold=0.08, step=1e-4)
    assert auc_08 == pytest.approx(0.2, abs=1e-4)  # 0.08^2 / 0.4 / 0.08


# ---------------------------------------------------------------- video NME / NMF


def test_video_nme_percent_with_per_frame_iod() -> None:
    g0 = _layout(98, 60, 72)
    gt = np.stack([g0, 2.0 * g0])  # IOD 10 then 20
    pred = gt + np.array([3.0, 4.0])
    assert video_nme(pred, gt) == pytest.approx((50.0 + 25.0) / 2)


def test_video_nme_face_normaliser() -> None:
    gt = np.stack([_square_face(10.0), _square_face(40.0)])
    pred = gt + np.array([0.0, 2.0])
    assert video_nme(pred, gt, norm="face") == pytest.approx((20.0 + 5.0) / 2)


def test_nmf_constant_offset_is_zero() -> None:
    gt = np.stack([_square_face(100.0 + 10 * t) + t for t in range(6)])
    assert video_nmf(gt + np.array([3.0, -2.0]), gt) == pytest.approx(0.0, abs=1e-12)


def test_nmf_alternating_jitter_closed_form() -> None:
    a, t_len = 0.7, 9
    gt = np.stack([_square_face(128.0)] * t_len)  # s_t = 128 / 256 = 0.5
    signs = (-1.0) ** np.arange(t_len)
    pred = gt + signs[:, None, None] * np.array([a, 0.0])
    # every pair: ||delta_t - delta_{t-1}|| = 2a, J = 100 * 2a / 0.5
    assert video_nmf(pred, gt) == pytest.approx(400.0 * a)
    assert video_nmf(pred, gt, per_coordinate=True) == pytest.approx(400.0 * a / np.sqrt(2.0))


def test_nmf_uses_current_frame_scale_and_rms() -> None:
    a = 1.0
    gt = np.stack([_square_face(256.0), _square_face(512.0), _square_face(128.0)])  # s = 1, 2, 0.5
    pred = gt.copy()
    pred[1, 0] += [a, 0.0]  # only landmark 0 of frame 1 moves: pairs (0,1) and (1,2) both see a jump of a
    n_lmk = gt.shape[1]
    j1, j2 = 100.0 * a / 2.0, 100.0 * a / 0.5  # current-frame scales s_1 = 2, s_2 = 0.5
    expected = np.sqrt((j1**2 / n_lmk + j2**2 / n_lmk) / 2.0)
    assert video_nmf(pred, gt) == pytest.approx(expected)


# ---------------------------------------------------------------- aggregation


def test_aggregate_videos_unweighted_and_weighted() -> None:
    out = aggregate_videos([1.0, 3.0], [1, 3])
    assert out == {"mean": 2.0, "weighted_mean": 2.5, "num_videos": 2, "num_frames": 4}
    pairs = np.array([2, 4]) - 1  # NMF: weight by number of frame pairs
    out = aggregate_videos([1.0, 3.0], [2, 4], weights=pairs)
    assert out["weighted_mean"] == pytest.approx((1.0 + 9.0) / 4.0)


# ---------------------------------------------------------------- input validation


GOOD = _layout(98, 60, 72)[None].repeat(3, axis=0)


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (GOOD[0], GOOD, "pred: expected shape"),
        (GOOD, GOOD[..., :1], "gt: expected shape"),
        (GOOD[:2], GOOD, "shape mismatch"),
        (np.where(np.arange(2) == 0, np.nan, GOOD), GOOD, "pred: contains NaN"),
        (GOOD, np.where(np.arange(2) == 0, np.inf, GOOD), "gt: contains NaN or inf"),
        (GOOD[:0], GOOD[:0], "pred: empty"),
        (GOOD[:, :50], GOOD[:, :50], "gt: no default eye corners"),
    ],
)
def test_nme_rejects_bad_input(pred: np.ndarray, gt: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nme(pred, gt)


def test_degenerate_normalisers_are_rejected() -> None:
    gt = GOOD.copy()
    gt[1, 72] = gt[1, 60]
    with pytest.raises(ValueError, match="gt: degenerate inter_ocular"):
        nme(gt, gt)
    flat = GOOD.copy()
    flat[..., 1] = 5.0  # zero height -> zero face size
    with pytest.raises(ValueError, match="gt: degenerate face"):
        video_nme(flat, flat, norm="face")
    with pytest.raises(ValueError, match="gt: degenerate face"):
        video_nmf(flat, flat)
    with pytest.raises(ValueError, match="norm: unknown"):
        nme(GOOD, GOOD, norm="bbox")
    with pytest.raises(ValueError, match="eye_indices"):
        nme(GOOD, GOOD, eye_indices=(0, 98))


def test_nmf_needs_two_frames() -> None:
    with pytest.raises(ValueError, match="gt: NMF needs at least 2 frames"):
        video_nmf(GOOD[:1], GOOD[:1])


@pytest.mark.parametrize(
    ("nmes", "kwargs", "match"),
    [
        (np.array([]), {}, "nmes"),
        (np.array([[0.1]]), {}, "nmes"),
        (np.array([0.1, np.nan]), {}, "nmes"),
        (np.array([-0.1]), {}, "nmes"),
        (np.array([0.1]), {"threshold": 0.0}, "threshold"),
        (np.array([0.1]), {"step": 0.2}, "threshold/step"),
    ],
)
def test_fr_auc_rejects_bad_input(nmes: np.ndarray, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fr_auc(nmes, **kwargs)


def test_aggregate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="values"):
        aggregate_videos([], [])
    with pytest.raises(ValueError, match="frame_counts"):
        aggregate_videos([1.0, 2.0], [3])
    with pytest.raises(ValueError, match="weights"):
        aggregate_videos([1.0, 2.0], [3, 4], weights=[0.0, 0.0])
