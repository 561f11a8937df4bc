"""RwR streaming inference: budgets, warm starts, resets, stream independence, proximal term, pixel mapping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ldeq_core.config import get_preset
from ldeq_core.geometry import apply_affine, box_to_affine, invert_affine
from ldeq_core.heatmaps import soft_argmax
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker, box_iou, heatmap_warp_theta, track_videos, warp_states

S = 64  # crop size of the test model (heatmaps 16x16) to keep the tests fast


def cfg(**kw) -> RwRConfig:
    return RwRConfig(crop_size=S, **kw)


@pytest.fixture(scope="module")
def model() -> LandmarkDEQ:
    """A tiny random model made contractive in z (the z part of the injection conv scaled by 0.02)."""
    torch.manual_seed(0)
    preset = get_preset("tiny", image_size=S, heatmap_size=S // 4, solver={"method": "fpi", "max_nfe": 40, "tol": 1e-4})
    m = LandmarkDEQ(preset).eval()
    with torch.no_grad():
        m.cell.inject.conv.weight[:, : m.cfg.z_width].mul_(0.02)
    return m


def _video(n: int, seed: int, size=(120, 160)) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
    frames = [
        np.clip(base.astype(int) + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8) for _ in range(n)
    ]
    boxes = np.tile(np.array([40.0, 30.0, 110.0, 100.0]), (n, 1)) + rng.normal(0, 1.0, size=(n, 4))
    return frames, boxes


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(seed))


def test_first_frame_full_solve_then_budget(model: LandmarkDEQ) -> None:
    tracker = RwRTracker(model, cfg(budget_nfe=2))
    img = _images(1, 0)
    first = tracker.step_crops(img, ["a"])
    assert first.full_solve.tolist() == [True] and first.nfe[0] > 2
    for _ in range(3):
        nxt = tracker.step_crops(img + 0.05 * torch.randn_like(img), ["a"])
        assert nxt.full_solve.tolist() == [False] and nxt.nfe.tolist() == [2]


def test_upstream_mode_caps_every_frame(model: LandmarkDEQ) -> None:
    tracker = RwRTracker(model, cfg(upstream=True, upstream_max_iters=1))
    for _ in range(3):
        res = tracker.step_crops(_images(2, 1), ["a", "b"])
        assert res.nfe.tolist() == [2, 2]  # fpi: 1 iteration + the extra f step, first frame included


def test_warm_start_on_a_static_video_reaches_the_full_solution(model: LandmarkDEQ) -> None:
    img = _images(1, 2)
    with torch.no_grad():
        exact = model(img, max_nfe=200, tol=0.0).coords.numpy()[0] * S
    tracker = RwRTracker(model, cfg(budget_nfe=2))
    tracker.step_crops(img, ["s"], reset=[True])
    cold = RwRTracker(model, cfg(budget_nfe=2, mode="per_frame"))
    for _ in range(15):
        warm = tracker.step_crops(img, ["s"]).coords[0]
    assert np.abs(warm - exact).max() < 1e-3
    # Without warm start every frame is a full solve from zeros with the model's tolerance.
    assert cold.step_crops(img, ["s"]).full_solve.all() and cold.step_crops(img, ["s"]).full_solve.all()


def test_streams_are_independent_of_their_batch_mates(model: LandmarkDEQ) -> None:
    imgs = [_images(3, 10 + t) for t in range(4)]
    alone = RwRTracker(model, cfg(budget_nfe=2, tol=1e-3))
    together = RwRTracker(model, cfg(budget_nfe=2, tol=1e-3))
    for t in range(4):
        a = alone.step_crops(imgs[t][1:2], ["b"])
        # Stream "b" shares the batch with others, and at t=2 a new stream joins (full solve next to RwR steps).
        ids = ["a", "b", "c"] if t != 2 else ["x", "b", "c"]
        b = together.step_crops(imgs[t], ids)
        np.testing.assert_allclose(b.coords[1], a.coords[0], atol=1e-4)
        assert b.nfe[1] == a.nfe[0]


def test_reset_and_box_jump_trigger_a_full_solve(model: LandmarkDEQ) -> None:
    tracker = RwRTracker(model, cfg(reset_iou=0.3))
    img = _images(1, 3)
    box = np.array([[10.0, 10.0, 60.0, 60.0]])
    tracker.step_crops(img, ["a"], boxes=box)
    assert not tracker.step_crops(img, ["a"], boxes=box + 2).full_solve[0]
    assert tracker.step_crops(img, ["a"], boxes=box + 200).full_solve[0]  # IoU 0: track jump
    assert tracker.step_crops(img, ["a"], boxes=box + 200, reset=[True]).full_solve[0]
    tracker.reset("a")
    assert tracker.step_crops(img, ["a"]).full_solve[0]


def test_box_iou_hand_cases() -> None:
    assert box_iou(np.array([0, 0, 2, 2.0]), np.array([1, 1, 3, 3.0])) == pytest.approx(1 / 7)
    assert box_iou(np.array([0, 0, 1, 1.0]), np.array([2, 2, 3, 3.0])) == 0.0


def test_proximal_gamma_damps_changes(model: LandmarkDEQ) -> None:
    imgs = [_images(1, 20 + t) for t in range(5)]

    def motion(gamma: float) -> float:
        tr = RwRTracker(model, cfg(budget_nfe=2, gamma=gamma))
        coords = [tr.step_crops(im, ["a"]).coords[0] for im in imgs]
        return float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(coords[1:])]))

    plain = RwRTracker(model, cfg(budget_nfe=2, gamma=0.0))
    zero = RwRTracker(model, cfg(budget_nfe=2))
    for im in imgs:
        np.testing.assert_array_equal(plain.step_crops(im, ["a"]).coords, zero.step_crops(im, ["a"]).coords)
    assert motion(10.0) < 0.5 * motion(0.0)


def test_proximal_rwr_with_vanishing_gamma_equals_plain_rwr(model: LandmarkDEQ) -> None:
    # gamma > 0 runs the proximal fixed-point solver (RwRTracker -> engine.full_solve(gamma=, z_prev=)); gamma = 0
    # runs the plain fixed-steps hot path. As gamma -> 0 the proximal update tends to the plain one, so a gamma far
    # below float32 resolution must give the plain path's landmarks to rounding (float32 coords in [0, 1) x crop px).
    imgs = [_images(2, 40 + t) for t in range(4)]
    prox = RwRTracker(model, cfg(budget_nfe=2, gamma=1e-12))
    plain = RwRTracker(model, cfg(budget_nfe=2))
    strong = RwRTracker(model, cfg(budget_nfe=2, gamma=1.0))  # and a real gamma does change the result
    for t, im in enumerate(imgs):
        a, b = prox.step_crops(im, ["a", "b"]), plain.step_crops(im, ["a", "b"])
        np.testing.assert_allclose(a.coords, b.coords, rtol=0, atol=64 * S * np.finfo(np.float32).eps)
        np.testing.assert_array_equal(a.nfe, b.nfe)
        c = strong.step_crops(im, ["a", "b"])
        if t > 0:  # warm frames (the first is a full solve for every gamma)
            assert np.abs(c.coords - b.coords).max() > 1e-3


def test_landmarks_are_mapped_back_to_frame_pixels(model: LandmarkDEQ) -> None:
    frames, boxes = _video(2, 0)
    res = RwRTracker(model, cfg()).step([frames[0]], boxes[:1], ["v"])
    x1, y1, x2, y2 = (int(v + 0.5) for v in boxes[0])
    cx, cy = x1 + (x2 - x1 + 1) // 2, y1 + (y2 - y1 + 1) // 2
    scale = S / (1.2 * max(x2 - x1, y2 - y1))
    expected = (res.coords[0] - S / 2) / scale + np.array([cx, cy])
    np.testing.assert_allclose(res.landmarks[0], expected, atol=1e-9)


def test_frame_synchronous_batching_equals_one_video_at_a_time(model: LandmarkDEQ) -> None:
    videos = [_video(4, 1), _video(2, 2, size=(100, 130)), _video(3, 3)]
    rwr = cfg(budget_nfe=2)
    batched = track_videos(model, videos, rwr, max_batch=8)
    for v, (frames, boxes) in enumerate(videos):
        single = track_videos(model, [(frames, boxes)], rwr)[0]
        np.testing.assert_allclose(batched[v].landmarks, single.landmarks, atol=1e-3)
        # Batched convolutions round differently from batch-of-one ones, which can move a tolerance crossing of
        # the first frame's full solve by one evaluation; warm-started frames spend exactly their budget.
        assert abs(int(batched[v].nfe[0]) - int(single.nfe[0])) <= 1
        assert batched[v].nfe[1:].tolist() == single.nfe[1:].tolist()
        assert batched[v].landmarks.shape == (len(frames), 98, 2)


def test_bad_inputs(model: LandmarkDEQ) -> None:
    tracker = RwRTracker(model, cfg())
    with pytest.raises(ValueError, match="unique"):
        tracker.step_crops(_images(2, 0), ["a", "a"])
    with pytest.raises(ValueError, match="NaN"):
        tracker.step([np.zeros((50, 50, 3), np.uint8)], np.array([[np.nan, 0, 10, 10]]), ["a"])
    with pytest.raises(ValueError, match=r"rwr\.mode"):
        RwRConfig(mode="smooth")  # type: ignore[arg-type]


def _blobs(centres: np.ndarray, size: int, sigma: float = 1.5) -> torch.Tensor:
    """(1, L, size, size) Gaussian heatmaps with peaks at ``centres`` (L, 2) heatmap cells (x, y)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    maps = [np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres]
    return torch.tensor(np.stack(maps)[None], dtype=torch.float32)


def test_heatmap_warp_is_the_identity_for_the_same_crop() -> None:
    m = box_to_affine(np.array([40.0, 30.0, 120.0, 110.0]), 64)
    np.testing.assert_allclose(heatmap_warp_theta(m, m, 64, 16), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("shift", [(4.0, 0.0), (2.5, -3.0), (0.0, 0.0)])
@pytest.mark.parametrize("grow", [1.0, 1.1])
def test_warped_state_decodes_to_the_same_frame_points(shift: tuple[float, float], grow: float) -> None:
    """Independent check: decode the warped heatmaps in the new crop and map to frame pixels; the points must be
    where the old heatmaps put them in the old crop (blobs away from the borders, so no mass is cut off)."""
    size, hm = 128, 32
    box0 = np.array([100.0, 80.0, 200.0, 180.0])
    c, half = (box0[:2] + box0[2:]) / 2 + np.array(shift), (box0[2:] - box0[:2]) * grow / 2
    box1 = np.concatenate([c - half, c + half])
    a0, a1 = box_to_affine(box0, size), box_to_affine(box1, size)
    centres = np.array([[12.0, 14.0], [18.5, 10.25], [15.0, 20.0]])
    z0 = _blobs(centres, hm)
    warped = warp_states(z0, heatmap_warp_theta(a0, a1, size, hm)[None])
    p0 = apply_affine(invert_affine(a0), soft_argmax(z0)[0][0].numpy() * size)
    p1 = apply_affine(invert_affine(a1), soft_argmax(warped)[0][0].numpy() * size)
    # bilinear resampling of a sigma-1.5-cell Gaussian moves its mean by far less than 0.05 cell (0.2 crop px,
    # 0.16 frame px at this scale); fp32 soft-argmax adds ~1e-5
    np.testing.assert_allclose(p1, p0, atol=0.16)


def test_warp_state_off_equals_plain_rwr_and_on_changes_only_warm_frames() -> None:
    torch.manual_seed(0)
    model = LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16)).eval()
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[30.0, 20.0, 90.0, 80.0], [34.0, 22.0, 94.0, 82.0]])
    runs = {}
    for warp in (False, True):
        tr = RwRTracker(model, RwRConfig(crop_size=64, warp_state=warp))
        runs[warp] = [tr.step([frame], boxes[t : t + 1], ["s"]).landmarks for t in range(2)]
    np.testing.assert_array_equal(runs[False][0], runs[True][0])  # the first frame is a full solve either way
    assert np.abs(runs[False][1] - runs[True][1]).max() > 1e-3  # the warm start differs once the box moved
