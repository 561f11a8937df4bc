"""The frame-synchronous batcher in-process: concurrency exactness, round robin, failures and cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker
from serve.batching import FrameBatcher, StreamRequest, StreamResult
from serve.detector import GivenBoxes
from serve.errors import ServiceError
from tests.serve.helpers import IMAGE_SIZE, synthetic_clip, tiny_model

CFG = RwRConfig(crop_size=IMAGE_SIZE, budget_nfe=2)
LENGTHS = (5, 7, 4)


@pytest.fixture(scope="module")
def model() -> LandmarkDEQ:
    return tiny_model()


@pytest.fixture(scope="module")
def clips() -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for seed, n in enumerate(LENGTHS):
        frames, _, boxes = synthetic_clip(seed, n)
        out.append((frames[..., ::-1].copy(), boxes))  # BGR, as decoded
    return out


def _request(
    clip: tuple[np.ndarray, np.ndarray], cfg: RwRConfig = CFG, boxes: np.ndarray | None = None
) -> StreamRequest:
    frames, b = clip
    return StreamRequest(iter(list(frames)), len(frames), GivenBoxes(b if boxes is None else boxes), cfg)


def _run(batcher: FrameBatcher, reqs: list[StreamRequest]) -> list[StreamResult | BaseException]:
    async def main() -> list[StreamResult | BaseException]:
        try:
            return await asyncio.gather(*(batcher.run(r) for r in reqs), return_exceptions=True)
        finally:
            await batcher.close()

    return asyncio.run(main())


def _alone(model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]) -> list[StreamResult]:
    out = []
    for clip in clips:
        (res,) = _run(FrameBatcher(model, CFG), [_request(clip)])
        assert isinstance(res, StreamResult)
        out.append(res)
    return out


def test_alone_equals_a_direct_tracker_run(model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]) -> None:
    (res,) = _alone(model, clips[:1])
    tracker = RwRTracker(model, CFG)
    frames, boxes = clips[0]
    direct = [tracker.step([f], b[None], ["v"]) for f, b in zip(frames, boxes, strict=True)]
    np.testing.assert_array_equal(res.landmarks, np.concatenate([d.landmarks for d in direct]))
    assert res.nfe.tolist() == [6, 2, 2, 2, 2]  # full solve (max_nfe, tol 0) then the RwR budget
    np.testing.assert_array_equal(res.boxes, boxes)


def test_exact_mode_is_bitwise_independent_of_concurrency(
    model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    alone = _alone(model, clips)
    batcher = FrameBatcher(model, CFG, exact=True)
    together = _run(batcher, [_request(c) for c in clips])
    for a, b in zip(alone, together, strict=True):
        assert isinstance(b, StreamResult)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.nfe, b.nfe)
    stats = batcher.stats()
    assert stats["ticks"] == max(LENGTHS) and stats["frames"] == sum(LENGTHS)  # one tick serves every video


def test_batched_mode_matches_within_rounding(model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]) -> None:
    alone = _alone(model, clips)
    batcher = FrameBatcher(model, CFG)
    together = _run(batcher, [_request(c) for c in clips])
    worst = 0.0
    for a, b in zip(alone, together, strict=True):
        assert isinstance(b, StreamResult)
        np.testing.assert_array_equal(a.nfe, b.nfe)  # stopping decisions are per sample, tol 0: same schedule
        worst = max(worst, float(np.abs(a.landmarks - b.landmarks).max()))
    print(f"max |batched - alone| = {worst:.2e} px")
    assert worst < 1e-3
    assert together[0].batch_sizes.tolist() == [3, 3, 3, 3, 2]  # type: ignore[union-attr]
    assert batcher.stats()["max_call_size"] == 3


def test_round_robin_caps_the_call_size(model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]) -> None:
    alone = _alone(model, clips)
    batcher = FrameBatcher(model, CFG, max_batch_size=2, exact=True)
    together = _run(batcher, [_request(c) for c in clips])
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)  # type: ignore[union-attr]
    assert batcher.stats()["ticks"] >= int(np.ceil(sum(LENGTHS) / 2))


def test_a_failing_video_does_not_disturb_the_others(
    model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    alone = _alone(model, clips[:1])
    bad_boxes = clips[1][1].copy()
    bad_boxes[2] = [1000.0, 1000.0, 1100.0, 1100.0]  # off the frame at frame 2
    batcher = FrameBatcher(model, CFG, exact=True)
    ok, bad = _run(batcher, [_request(clips[0]), _request(clips[1], boxes=bad_boxes)])
    assert isinstance(bad, ServiceError) and bad.status == 422 and "frame 2" in bad.detail
    np.testing.assert_array_equal(ok.landmarks, alone[0].landmarks)  # type: ignore[union-attr]
    assert batcher.tracker.streams == {}  # both streams' states freed


def test_cancelled_request_is_dropped(model: LandmarkDEQ) -> None:
    frames, _, boxes = synthetic_clip(9, 200)
    batcher = FrameBatcher(model, CFG)

    async def main() -> tuple[int, int]:
        task = asyncio.create_task(batcher.run(StreamRequest(iter(list(frames)), 200, GivenBoxes(boxes), CFG)))
        while batcher.stats()["frames"] < 3:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # the next tick drops it
        out = batcher.active, len(batcher.tracker.streams)
        await batcher.close()
        return out

    assert asyncio.run(main()) == (0, 0)
    assert batcher.stats()["frames"] < 200


def test_read_ahead_and_prepare_pool_give_the_same_results(
    model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Background decoding (read_ahead) and the parallel prepare pool change nothing in exact mode."""
    alone = _alone(model, clips)
    batcher = FrameBatcher(model, CFG, exact=True, prepare_threads=3, read_ahead=True)
    together = _run(batcher, [_request(c) for c in clips])
    for a, b in zip(alone, together, strict=True):
        assert isinstance(b, StreamResult)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.nfe, b.nfe)


def test_read_ahead_iterator_keeps_order_raises_errors_and_closes() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from serve.batching import ReadAhead

    closed = []

    def frames(n: int, fail_at: int | None = None):
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"frame {i} is corrupt")
                yield np.full((2, 2, 3), i, np.uint8)
        finally:
            closed.append(n)

    with ThreadPoolExecutor(2) as pool:
        assert [int(f[0, 0, 0]) for f in ReadAhead(frames(5), pool)] == [0, 1, 2, 3, 4]
        bad = ReadAhead(frames(4, fail_at=2), pool)
        assert int(next(bad)[0, 0, 0]) == 0 and int(next(bad)[0, 0, 0]) == 1
        with pytest.raises(ValueError, match="frame 2 is corrupt"):
            next(bad)
        early = ReadAhead(frames(9), pool)
        next(early)
        early.close()  # waits for the decode in flight, then closes the generator
    assert sorted(closed) == [4, 5, 9]


class _SlowBoxes(GivenBoxes):
    """Given boxes whose lookup and tracking update take a known time (prepare and observe phases)."""

    def box_for(self, t: int, frame_bgr: np.ndarray) -> tuple[np.ndarray, bool, str]:
        time.sleep(PREPARE_SLEEP)
        return super().box_for(t, frame_bgr)

    def observe(self, t: int, landmarks: np.ndarray) -> None:
        time.sleep(OBSERVE_SLEEP)
        super().observe(t, landmarks)


PREPARE_SLEEP, OBSERVE_SLEEP = 0.02, 0.01


def test_stats_split_the_worker_time_by_phase(model: LandmarkDEQ, clips: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """prepare_s / observe_s hold at least the known per-frame sleeps of those phases, the phases add up to at most
    step_s, and step_s to at most the wall time."""
    batcher = FrameBatcher(model, CFG)  # one prepare thread: the per-frame sleeps add up serially
    reqs = [StreamRequest(iter(list(f)), len(f), _SlowBoxes(b), CFG) for f, b in clips]
    t0 = time.perf_counter()
    results = _run(batcher, reqs)
    wall = time.perf_counter() - t0
    assert all(isinstance(r, StreamResult) for r in results)
    st = batcher.stats()
    frames = sum(LENGTHS)
    assert st["frames"] == frames
    assert st["prepare_s"] >= frames * PREPARE_SLEEP
    assert st["observe_s"] >= frames * OBSERVE_SLEEP
    assert st["model_s"] > 0
    phases = st["prepare_s"] + st["model_s"] + st["observe_s"]
    assert phases <= st["step_s"] + 1e-5 <= wall + 1e-5
    assert phases >= 0.8 * st["step_s"]  # the rest of a tick is bookkeeping
