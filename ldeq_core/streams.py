"""One frame-synchronous multi-stream runner: many RwR streams advanced together, one frame of each per step.

:class:`FrameSyncRunner` owns the loop logic every video path shares: the stream registry (add, drop, per-stream
RwR config, streaming filter and result collection), one model call per RwR config present in a step (optionally
capped at ``max_call_size`` frames per call, ``1`` giving results bitwise independent of the batch mates), cropping
of frames that come with a box, the frame -> crop affines that ``warp_state`` needs, caller-flagged resets, the
per-stream filter on frame-pixel landmarks, and counters (calls by size, frames, NFE, full solves, model seconds).
The state of each stream lives in the wrapped :class:`~ldeq_core.rwr.RwRTracker` (warm start, box-jump reset).

    runner = FrameSyncRunner.from_model(model, RwRConfig(crop_size=256))
    tracks = runner.run([VideoInput("a", boxes_a, frames=frames_a), VideoInput("b", boxes_b, frames=frames_b)])

or, frame by frame (a live scheduler, a multi-face tracker)::

    runner.add_stream("a", filter=make_filter("one_euro", freq=30.0))
    (out,) = runner.step([FrameInput("a", box, frame=frame_bgr)])   # out.landmarks: (L, 2) frame pixels

Call sites: :func:`ldeq_core.rwr.track_videos`, :class:`ldeq_core.face_tracking.MultiFaceTracker` (and so
``FaceLandmarker`` / ``ldeq track``), ``pipelines.evaluate.runner.run_group`` and ``serve.batching.FrameBatcher``.
Scheduling that is specific to a caller stays there: which streams get a step (serve's round robin over
concurrent requests), how boxes are found (detection, association, tracking), groups of videos (evaluation).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ldeq_core.filters import TemporalFilter
from ldeq_core.geometry import crop_face
from ldeq_core.inference import InferenceEngine, InferencePolicy
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker


@dataclass(frozen=True, eq=False)
class FrameInput:
    """One stream's next frame: a BGR ``frame`` (cropped here with ``box`` and the stream's crop settings), or a
    model ``crop`` (S, S, 3) RGB uint8 with its frame -> crop ``affine`` (2, 3).

    ``box`` (4,) x1, y1, x2, y2 in frame pixels is always given (the RwR box-jump reset compares it with the
    previous frame's); ``reset`` forces a full solve (shot cut, re-detection); ``box_source`` is carried into the
    output and the collected track.
    """

    stream_id: Hashable
    box: np.ndarray
    frame: np.ndarray | None = None
    crop: np.ndarray | None = None
    affine: np.ndarray | None = None
    reset: bool = False
    box_source: str = ""

    def __post_init__(self) -> None:
        if (self.frame is None) == (self.crop is None):
            raise ValueError(f"stream {self.stream_id!r}: give either a frame or a crop")
        if self.crop is not None and self.affine is None:
            raise ValueError(f"stream {self.stream_id!r}: a crop needs its frame -> crop affine")


@dataclass(frozen=True, eq=False)
class FrameOutput:
    """One stream's result for one step. ``landmarks`` (L, 2) frame pixels after the stream's filter (the same
    array as ``raw_landmarks`` without one); ``coords`` (L, 2) crop pixels; ``call_size``: frames in its model
    call."""

    stream_id: Hashable
    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    coords: np.ndarray
    nfe: int
    full_solve: bool
    rel_residual: float
    box: np.ndarray
    box_source: str
    call_size: int


@dataclass
class StreamTrack:
    """The collected per-frame outputs of one stream, in frame order."""

    landmarks: np.ndarray  # (T, L, 2) frame pixels, after the stream's filter
    nfe: np.ndarray  # (T,) int64
    full_solve: np.ndarray  # (T,) bool
    rel_residual: np.ndarray  # (T,) float64
    boxes: np.ndarray  # (T, 4) the boxes used
    box_source: list[str]
    call_sizes: np.ndarray  # (T,) int64: size of the model call each frame was solved in

    def __len__(self) -> int:
        return len(self.nfe)


@dataclass
class _Collector:
    landmarks: list[np.ndarray] = field(default_factory=list)
    nfe: list[int] = field(default_factory=list)
    full_solve: list[bool] = field(default_factory=list)
    rel_residual: list[float] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    box_source: list[str] = field(default_factory=list)
    call_sizes: list[int] = field(default_factory=list)

    def add(self, o: FrameOutput) -> None:
        self.landmarks.append(o.landmarks.copy())  # a view would keep its whole batch's arrays alive
        self.nfe.append(o.nfe)
        self.full_solve.append(o.full_solve)
        self.rel_residual.append(o.rel_residual)
        self.boxes.append(o.box)
        self.box_source.append(o.box_source)
        self.call_sizes.append(o.call_size)

    def track(self, n_landmarks: int) -> StreamTrack:
        return StreamTrack(
            landmarks=np.stack(self.landmarks) if self.landmarks else np.zeros((0, n_landmarks, 2)),
            nfe=np.asarray(self.nfe, dtype=np.int64),
            full_solve=np.asarray(self.full_solve, dtype=bool),
            rel_residual=np.asarray(self.rel_residual, dtype=np.float64),
            boxes=np.stack(self.boxes) if self.boxes else np.zeros((0, 4)),
            box_source=list(self.box_source),
            call_sizes=np.asarray(self.call_sizes, dtype=np.int64),
        )


@dataclass
class _Stream:
    cfg: RwRConfig | None
    filter: TemporalFilter | None
    collector: _Collector | None
    frames: int = 0


@dataclass(frozen=True, eq=False)
class VideoInput:
    """A whole sequence for :meth:`FrameSyncRunner.run`: ``boxes`` (T, 4) and either BGR ``frames`` (T) or
    ``crops`` (T, S, S, 3) with ``affines`` (T, 2, 3); optional per-frame ``resets``; ``start``: the runner step
    at which its frame 0 is solved (a stream that starts late); per-stream ``cfg`` and streaming ``filter``."""

    stream_id: Hashable
    boxes: np.ndarray
    frames: Sequence[np.ndarray] | None = None
    crops: np.ndarray | None = None
    affines: np.ndarray | None = None
    resets: Sequence[bool] | None = None
    start: int = 0
    cfg: RwRConfig | None = None
    filter: TemporalFilter | None = None

    def __post_init__(self) -> None:
        if (self.frames is None) == (self.crops is None):
            raise ValueError(f"video {self.stream_id!r}: give either frames or crops")
        if self.crops is not None and (self.affines is None or len(self.affines) < len(self.crops)):
            raise ValueError(f"video {self.stream_id!r}: crops need one frame -> crop affine each")
        if len(self.boxes) < len(self) or (self.resets is not None and len(self.resets) < len(self)):
            raise ValueError(f"video {self.stream_id!r}: fewer boxes or resets than its {len(self)} frames")
        if self.start < 0:
            raise ValueError(f"video {self.stream_id!r}: start must be >= 0, got {self.start}")

    def __len__(self) -> int:
        frames = self.frames if self.frames is not None else self.crops
        assert frames is not None
        return len(frames)

    @property
    def end(self) -> int:
        """The runner step after its last frame."""
        return self.start + len(self)

    def frame_input(self, k: int) -> FrameInput:
        """Its frame ``k`` as a :class:`FrameInput`."""
        reset = bool(self.resets[k]) if self.resets is not None else False
        box = np.asarray(self.boxes[k], dtype=np.float64)
        if self.frames is not None:
            return FrameInput(self.stream_id, box, frame=self.frames[k], reset=reset)
        assert self.crops is not None and self.affines is not None
        return FrameInput(self.stream_id, box, crop=self.crops[k], affine=self.affines[k], reset=reset)


class FrameSyncRunner:
    """Advance many RwR streams frame-synchronously through one :class:`~ldeq_core.rwr.RwRTracker`.

    Not thread-safe: one thread at a time may call it (the service calls it from a single worker thread).
    """

    def __init__(self, tracker: RwRTracker, *, max_call_size: int | None = None) -> None:
        if max_call_size is not None and max_call_size < 1:
            raise ValueError(f"max_call_size must be >= 1 or None, got {max_call_size}")
        self.tracker = tracker
        self.max_call_size = max_call_size
        self._streams: dict[Hashable, _Stream] = {}
        self.calls: Counter[int] = Counter()  # model-call size -> count (successful calls)
        self.steps = 0
        self.frames = 0
        self.nfe = 0
        self.full_solves = 0
        self.model_s = 0.0

    @classmethod
    def from_model(
        cls,
        model: LandmarkDEQ,
        cfg: RwRConfig | None = None,
        *,
        engine: InferenceEngine | None = None,
        policy: InferencePolicy | None = None,
        max_call_size: int | None = None,
    ) -> FrameSyncRunner:
        """A runner over a fresh tracker of ``model`` (``engine`` shares an inference engine and its graphs)."""
        return cls(RwRTracker(model, cfg, engine=engine, policy=policy), max_call_size=max_call_size)

    @property
    def cfg(self) -> RwRConfig:
        """The config of streams added without one: the tracker's."""
        return self.tracker.cfg

    @property
    def n_landmarks(self) -> int:
        return self.tracker.model.cfg.n_landmarks

    # ------------------------------------------------------------------------------------------------ streams
    def add_stream(
        self,
        stream_id: Hashable,
        *,
        cfg: RwRConfig | None = None,
        filter: TemporalFilter | None = None,
        collect: bool = False,
    ) -> None:
        """Register a stream: its RwR ``cfg`` (default the runner's), a streaming ``filter`` applied to its
        frame-pixel landmarks, and whether its outputs are collected (:meth:`track`, :meth:`drop_stream`)."""
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} is already running")
        self.tracker.reset(stream_id)  # a new stream never inherits an old state of the same id
        self._streams[stream_id] = _Stream(cfg, filter, _Collector() if collect else None)

    def drop_stream(self, stream_id: Hashable) -> StreamTrack | None:
        """Forget a stream (its RwR state and filter); its collected track, or None (not collected or unknown)."""
        self.tracker.reset(stream_id)
        s = self._streams.pop(stream_id, None)
        if s is None or s.collector is None:
            return None
        return s.collector.track(self.n_landmarks)

    def drop_all(self) -> None:
        """Forget every stream."""
        for sid in list(self._streams):
            self.drop_stream(sid)

    def has_stream(self, stream_id: Hashable) -> bool:
        return stream_id in self._streams

    @property
    def stream_ids(self) -> list[Hashable]:
        return list(self._streams)

    def track(self, stream_id: Hashable) -> StreamTrack:
        """The outputs collected so far of a stream added with ``collect=True``."""
        s = self._streams[stream_id]
        if s.collector is None:
            raise ValueError(f"stream {stream_id!r} was added without collect=True")
        return s.collector.track(self.n_landmarks)

    def stats(self) -> dict[str, Any]:
        """Counters since creation: steps, model calls (and their sizes), frames solved, NFE, full solves, the
        seconds spent in model calls, and the streams registered now."""
        calls = sum(self.calls.values())
        return {
            "steps": self.steps,
            "model_calls": calls,
            "frames": self.frames,
            "max_call_size": max(self.calls, default=0),
            "mean_call_size": (sum(k * v for k, v in self.calls.items()) / calls) if calls else 0.0,
            "call_sizes": {str(k): v for k, v in sorted(self.calls.items())},
            "nfe": self.nfe,
            "full_solves": self.full_solves,
            "model_s": self.model_s,
            "streams": len(self._streams),
        }

    # ------------------------------------------------------------------------------------------------ steps
    def step(self, items: Sequence[FrameInput]) -> list[FrameOutput]:
        """One frame of each of the given streams (each stream at most once); outputs in the order of ``items``.
        Raises the first failure (a crop, a model call, a filter)."""
        outs = self.try_step(items)
        for o in outs:
            if isinstance(o, Exception):
                raise o
        return [o for o in outs if isinstance(o, FrameOutput)]

    def try_step(self, items: Sequence[FrameInput]) -> list[FrameOutput | Exception]:
        """:meth:`step`, with each frame's failure returned in its place instead of raised: a model call that
        fails fails its frames only, the other calls of the step still run."""
        ids = [it.stream_id for it in items]
        if len(set(ids)) != len(ids):
            raise ValueError("a step takes at most one frame per stream")
        unknown = [sid for sid in ids if sid not in self._streams]
        if unknown:
            raise ValueError(f"unknown stream(s) {unknown[:5]!r}: add_stream first")
        self.steps += 1
        out: list[FrameOutput | Exception | None] = [None] * len(items)
        default = self.tracker.cfg
        groups: dict[RwRConfig, list[int]] = {}  # one model call per config (and per max_call_size chunk)
        for i, sid in enumerate(ids):
            groups.setdefault(self._streams[sid].cfg or default, []).append(i)
        try:
            for cfg, idx in groups.items():
                self.tracker.cfg = cfg  # RwRTracker reads its config only inside a step
                for chunk in self._chunks(idx):
                    self._solve(cfg, items, chunk, out)
        finally:
            self.tracker.cfg = default
        return [o if o is not None else RuntimeError("frame not processed") for o in out]

    def _chunks(self, idx: list[int]) -> Iterator[list[int]]:
        size = self.max_call_size or max(1, len(idx))
        for start in range(0, len(idx), size):
            yield idx[start : start + size]

    def _solve(
        self, cfg: RwRConfig, items: Sequence[FrameInput], chunk: list[int], out: list[FrameOutput | Exception | None]
    ) -> None:
        ready: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (item, crop, affine, box)
        for i in chunk:
            it = items[i]
            box = np.asarray(it.box, dtype=np.float64)
            if it.crop is not None:
                assert it.affine is not None
                ready.append((i, it.crop, it.affine, box))
                continue
            assert it.frame is not None
            try:
                crop, affine = crop_face(it.frame, box, cfg.crop_size, cfg.extra_scale)
            except Exception as exc:
                out[i] = exc
                continue
            ready.append((i, crop, affine, box))
        if not ready:
            return
        t0 = time.perf_counter()
        try:
            res = self.tracker.step_prepared(
                np.stack([r[1] for r in ready]),
                np.stack([r[2] for r in ready]),
                np.stack([r[3] for r in ready]),
                [items[r[0]].stream_id for r in ready],
                reset=[items[r[0]].reset for r in ready],
            )
        except Exception as exc:
            for r in ready:
                out[r[0]] = exc
            return
        finally:
            self.model_s += time.perf_counter() - t0
        n = len(ready)
        self.calls[n] += 1
        assert res.landmarks is not None  # step_prepared maps the landmarks back to frame pixels
        for j, (i, _, _, box) in enumerate(ready):
            it = items[i]
            s = self._streams[it.stream_id]
            raw = res.landmarks[j]
            try:
                shown = raw if s.filter is None else s.filter.update(raw)
            except Exception as exc:
                out[i] = exc
                continue
            o = FrameOutput(
                it.stream_id, shown, raw, res.coords[j], int(res.nfe[j]), bool(res.full_solve[j]),
                float(res.rel_residual[j]), box, it.box_source, n,
            )  # fmt: skip
            s.frames += 1
            self.frames += 1
            self.nfe += o.nfe
            self.full_solves += int(o.full_solve)
            if s.collector is not None:
                s.collector.add(o)
            out[i] = o

    # ------------------------------------------------------------------------------------------------ videos
    def run(self, videos: Sequence[VideoInput]) -> list[StreamTrack]:
        """Whole sequences, frame-synchronously: step t holds frame ``t - start`` of every video playing at t.

        Each video is its own stream (added here, dropped after its last frame); returns their tracks in order.
        """
        for v in videos:
            self.add_stream(v.stream_id, cfg=v.cfg, filter=v.filter, collect=True)
        tracks: dict[int, StreamTrack] = {}
        try:
            for t in range(max((v.end for v in videos), default=0)):
                live = [i for i, v in enumerate(videos) if v.start <= t < v.end]
                if live:
                    self.step([videos[i].frame_input(t - videos[i].start) for i in live])
                for i in live:
                    if t == videos[i].end - 1:
                        track = self.drop_stream(videos[i].stream_id)
                        assert track is not None
                        tracks[i] = track
            for i, v in enumerate(videos):  # videos without frames
                if i not in tracks:
                    track = self.drop_stream(v.stream_id)
                    assert track is not None
                    tracks[i] = track
        finally:
            for v in videos:
                if self.has_stream(v.stream_id):
                    self.drop_stream(v.stream_id)
        return [tracks[i] for i in range(len(videos))]
