"""The frame-synchronous multi-stream runner against an independent computation: each stream alone, sequentially,
through ``RwRTracker.step_crops`` (streams that end early, start late, reset, come as frames or as crops)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ldeq_core.config import get_preset
from ldeq_core.filters import make_filter, run_filter
from ldeq_core.geometry import apply_affine, crop_face, invert_affine, to_model_input
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker
from ldeq_core.streams import FrameInput, FrameSyncRunner, StreamTrack, VideoInput

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = 64
CFG = RwRConfig(crop_size=S, budget_nfe=2, warp_state=True)
# float32 model: batched convolutions round differently from a batch of one (~1e-7..1e-6 relative per layer), which
# a contractive DEQ keeps at that level; landmarks are ~10..150 px, so 1e-5 relative is ~1e-3 px at most.
RTOL = 1e-5


@pytest.fixture(scope="module")
def model() -> LandmarkDEQ:
    """A tiny model made contractive in z; full solves with tol 0 always run max_nfe (a fixed NFE schedule)."""
    torch.manual_seed(0)
    preset = get_preset("tiny", image_size=S, heatmap_size=S // 4, solver={"method": "fpi", "max_nfe": 8, "tol": 0.0})
    m = LandmarkDEQ(preset).eval()
    with torch.no_grad():
        m.cell.inject.conv.weight[:, : m.cfg.z_width].mul_(0.02)
    return m


@dataclass
class Clip:
    name: str
    frames: list[np.ndarray]
    boxes: np.ndarray
    resets: list[bool]
    start: int
    as_crops: bool  # give the runner pre-cropped frames (else BGR frames it crops itself)


def _clip(name: str, n: int, seed: int, start: int, as_crops: bool, reset_at: int | None = None) -> Clip:
    rng = np.random.default_rng(seed)
    h, w = 120 + 10 * seed, 160
    base = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    frames = [
        np.clip(base.astype(int) + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8) for _ in range(n)
    ]
    drift = np.cumsum(rng.normal(0, 1.5, size=(n, 2)), axis=0)
    boxes = np.array([40.0, 30.0, 110.0, 100.0]) + np.concatenate([drift, drift], axis=1)
    return Clip(name, frames, boxes, [k == reset_at for k in range(n)], start, as_crops)


CLIPS = [
    _clip("a", 5, 1, start=0, as_crops=False, reset_at=3),  # the longest, reset (shot cut) at its frame 3
    _clip("b", 3, 2, start=0, as_crops=True),  # ends early
    _clip("c", 4, 3, start=2, as_crops=False),  # starts late
    _clip("d", 2, 4, start=5, as_crops=True),  # starts after b has ended
]


def _inputs(clips: list[Clip]) -> list[VideoInput]:
    out = []
    for c in clips:
        if c.as_crops:
            pairs = [crop_face(f, b, S, CFG.extra_scale) for f, b in zip(c.frames, c.boxes, strict=True)]
            crops, affines = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
            out.append(VideoInput(c.name, c.boxes, crops=crops, affines=affines, resets=c.resets, start=c.start))
        else:
            out.append(VideoInput(c.name, c.boxes, frames=c.frames, resets=c.resets, start=c.start))
    return out


def _alone(model: LandmarkDEQ, c: Clip, cfg: RwRConfig = CFG) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The independent computation: one stream, one frame at a time, straight through RwRTracker.step_crops."""
    tracker = RwRTracker(model, cfg)
    lms, nfe, full = [], [], []
    for frame, box, reset in zip(c.frames, c.boxes, c.resets, strict=True):
        crop, affine = crop_face(frame, box, cfg.crop_size, cfg.extra_scale)
        res = tracker.step_crops(
            to_model_input(crop[None], torch.device("cpu")),
            [c.name],
            boxes=box[None],
            reset=[reset],
            affines=affine[None],
        )
        lms.append(apply_affine(invert_affine(affine)[None], res.coords)[0])
        nfe.append(int(res.nfe[0]))
        full.append(bool(res.full_solve[0]))
    return np.stack(lms), np.array(nfe), np.array(full)


@pytest.fixture(scope="module")
def alone(model: LandmarkDEQ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [_alone(model, c) for c in CLIPS]


def _check_schedule(track: StreamTrack, c: Clip, nfe: np.ndarray, full: np.ndarray) -> None:
    assert len(track) == len(c.frames)
    np.testing.assert_array_equal(track.nfe, nfe)
    np.testing.assert_array_equal(track.full_solve, full)
    expected_full = [k == 0 or c.resets[k] for k in range(len(c.frames))]
    assert track.full_solve.tolist() == expected_full  # first frame and the reset get full solves, no box jump
    assert track.nfe.tolist() == [8 if f else 2 for f in expected_full]
    np.testing.assert_array_equal(track.boxes, c.boxes)


def test_batched_run_equals_each_stream_alone_within_float32_rounding(model: LandmarkDEQ, alone) -> None:
    runner = FrameSyncRunner.from_model(model, CFG)
    tracks = runner.run(_inputs(CLIPS))
    worst = 0.0
    for track, c, (lm, nfe, full) in zip(tracks, CLIPS, alone, strict=True):
        _check_schedule(track, c, nfe, full)
        np.testing.assert_allclose(track.landmarks, lm, rtol=RTOL, atol=0)
        worst = max(worst, float(np.abs(track.landmarks / lm - 1).max()))
    print(f"max relative |batched - alone| = {worst:.2e}")
    # step t holds frame t - start of every clip playing at t: a+b, a+b, a+b+c, a+c, a+c, c+d, d
    calls = [tr.call_sizes.tolist() for tr in tracks]
    assert calls == [[2, 2, 3, 2, 2], [2, 2, 3], [3, 2, 2, 2], [2, 1]]
    st = runner.stats()
    assert st["steps"] == 7 and st["model_calls"] == 7 and st["frames"] == sum(len(c.frames) for c in CLIPS)
    assert st["nfe"] == sum(int(a[1].sum()) for a in alone) and st["full_solves"] == 5
    assert runner.stream_ids == [] and runner.tracker.streams == {}  # every stream dropped after its last frame


def test_one_frame_per_call_is_bitwise_the_stream_alone(model: LandmarkDEQ, alone) -> None:
    tracks = FrameSyncRunner.from_model(model, CFG, max_call_size=1).run(_inputs(CLIPS))
    for track, c, (lm, nfe, full) in zip(tracks, CLIPS, alone, strict=True):
        _check_schedule(track, c, nfe, full)
        np.testing.assert_array_equal(track.landmarks, lm)
        assert set(track.call_sizes.tolist()) == {1}


def test_step_api_streams_join_leave_and_mix_configs(model: LandmarkDEQ, alone) -> None:
    """Frame by frame: a stream with its own config (a model call of its own) and a filter; streams joining late
    and leaving early; a dropped id added again starts afresh."""
    a, b = CLIPS[0], CLIPS[2]
    cfg3 = RwRConfig(crop_size=S, budget_nfe=3, warp_state=True)
    runner = FrameSyncRunner.from_model(model, CFG)
    runner.add_stream("a", collect=True)
    filt_params = {"q": 0.5, "r": 4.0}
    runner.add_stream("b", cfg=cfg3, filter=make_filter("kalman", **filt_params), collect=True)
    raw_b = []
    for t in range(len(a.frames)):
        items = [FrameInput("a", a.boxes[t], frame=a.frames[t], reset=a.resets[t], box_source="given")]
        if t < len(b.frames):
            items.append(FrameInput("b", b.boxes[t], frame=b.frames[t], reset=b.resets[t]))
        outs = runner.step(items)
        assert [o.stream_id for o in outs] == [it.stream_id for it in items]
        assert all(o.call_size == 1 for o in outs)  # two configs: two model calls
        if t < len(b.frames):
            raw_b.append(outs[1].raw_landmarks)
    track_a = runner.drop_stream("a")
    track_b = runner.drop_stream("b")
    assert track_a is not None and track_b is not None
    lm_a, nfe_a, _ = alone[0]
    np.testing.assert_array_equal(track_a.landmarks, lm_a)  # alone in its calls: bitwise
    np.testing.assert_array_equal(track_a.nfe, nfe_a)
    assert track_a.box_source == ["given"] * len(a.frames)
    lm_b, nfe_b, _ = _alone(model, b, cfg3)
    np.testing.assert_array_equal(np.stack(raw_b), lm_b)
    assert track_b.nfe.tolist() == nfe_b.tolist() == [8, 3, 3, 3]
    np.testing.assert_allclose(track_b.landmarks, run_filter(make_filter("kalman", **filt_params), lm_b), atol=1e-9)
    assert runner.tracker.cfg is CFG  # the per-stream config was in force only for its call
    assert runner.stats()["model_calls"] == len(a.frames) + len(b.frames)

    runner.add_stream("a")  # the same id again: a fresh stream, a full solve
    (out,) = runner.step([FrameInput("a", a.boxes[1], frame=a.frames[1])])
    assert out.full_solve and out.nfe == 8


def test_step_errors(model: LandmarkDEQ) -> None:
    runner = FrameSyncRunner.from_model(model, CFG)
    c = CLIPS[0]
    item = FrameInput("a", c.boxes[0], frame=c.frames[0])
    with pytest.raises(ValueError, match="unknown stream"):
        runner.step([item])
    runner.add_stream("a")
    with pytest.raises(ValueError, match="already running"):
        runner.add_stream("a")
    with pytest.raises(ValueError, match="at most one frame per stream"):
        runner.step([item, item])
    with pytest.raises(ValueError, match="either a frame or a crop"):
        FrameInput("a", c.boxes[0])
    with pytest.raises(ValueError, match="needs its frame -> crop affine"):
        FrameInput("a", c.boxes[0], crop=np.zeros((S, S, 3), np.uint8))
    with pytest.raises(ValueError, match="fewer boxes"):
        VideoInput("v", c.boxes[:2], frames=c.frames)
    with pytest.raises(ValueError, match="max_call_size"):
        FrameSyncRunner.from_model(model, CFG, max_call_size=0)
    # a failing filter fails its own frame only (try_step), the other stream's frame is solved
    runner.add_stream("bad", filter=_Broken())
    b = CLIPS[2]
    ok, bad = runner.try_step([item, FrameInput("bad", b.boxes[0], frame=b.frames[0])])
    assert not isinstance(ok, Exception) and ok.full_solve
    assert isinstance(bad, RuntimeError) and "broken" in str(bad)
    assert runner.run([]) == []


class _Broken:
    def reset(self) -> None:
        return None

    def update(self, x_t: np.ndarray) -> np.ndarray:
        raise RuntimeError("broken filter")
