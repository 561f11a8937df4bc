"""Cross-video, frame-synchronous batching inside a replica: one model call per tick holds frame t of every video
being scored at that moment, each video keeping its own RwR state (a stream id) in ONE shared ``RwRTracker``.

An asyncio scheduler owns a list of active videos. Each tick it takes the next frame of every active video (round
robin when more than ``max_batch_size`` are active), decodes the frames and gets their boxes, and runs one step of
the replica's :class:`~ldeq_core.streams.FrameSyncRunner`: one model call per RwR configuration present in the tick
(requests may choose ``mode``/``budget_nfe``; each video is a stream with its own config), which also collects
each video's per-frame results. The step runs on a single worker thread, so the event loop keeps serving HTTP,
and the runner is never used concurrently (streams join it on the worker thread and leave it between ticks). A
video's future is resolved when its last frame is solved; a cancelled request (timeout, client gone) is dropped at
the next tick and its tracker state freed.

Exactness: every stopping decision in ``ldeq_core`` is per sample and warm frames use a fixed budget, so a video's
NFE schedule does not depend on its batch mates as long as a full solve's tolerance crossing is not within
rounding of the threshold (a full solve with ``tol = 0`` always runs ``max_nfe``). Batched convolutions round
differently from a batch of one (about 1e-6 relative in the stem), which a contractive (trained) DEQ keeps at
that level (measured: at most 5.2e-5 px on a contractive 64-px tiny model, identical NFE; tests/serve); a chaotic
random model amplifies it. ``exact=True`` solves every stream as a batch of one, which makes results bitwise
independent of concurrency (tested) at the cost of throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from ldeq_core.geometry import crop_face, validate_box
from ldeq_core.inference import InferencePolicy
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker
from ldeq_core.streams import FrameInput, FrameOutput, FrameSyncRunner
from ldeq_shared.errors import DataError
from serve.errors import ServiceError, unprocessable


class BoxProvider(Protocol):
    """Gives each frame's box (and whether to reset the stream) and sees each frame's landmarks."""

    def box_for(self, t: int, frame_bgr: np.ndarray) -> tuple[np.ndarray, bool, str]: ...

    def observe(self, t: int, landmarks: np.ndarray) -> None: ...


@dataclass
class StreamRequest:
    """One video to score: a lazy frame iterator of ``n_frames`` BGR frames, a box provider and an RwR config."""

    frames: Iterator[np.ndarray]
    n_frames: int
    boxes: BoxProvider
    rwr: RwRConfig
    name: str = "video"


@dataclass
class StreamResult:
    """Per-frame outputs of one video, in frame order."""

    landmarks: np.ndarray  # (T, L, 2) frame pixels
    nfe: np.ndarray  # (T,)
    full_solve: np.ndarray  # (T,) bool
    boxes: np.ndarray  # (T, 4) boxes used
    box_source: list[str]
    batch_sizes: np.ndarray  # (T,) size of the model call each frame was solved in
    queue_s: float
    solve_s: float


class ReadAhead:
    """A stream's frame iterator that decodes its next frame in a shared pool while the current one is used.

    At most one decode per stream is in flight, so the wrapped iterator is never entered by two threads at once;
    its exceptions (a corrupt frame) are raised by ``next`` as if it were called directly.
    """

    def __init__(self, frames: Iterator[np.ndarray], pool: ThreadPoolExecutor) -> None:
        self._it, self._pool = frames, pool
        self._next = pool.submit(self._pull)

    def _pull(self) -> tuple[bool, np.ndarray | None]:
        try:
            return True, next(self._it)
        except StopIteration:
            return False, None

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> np.ndarray:
        ok, frame = self._next.result()
        if not ok:
            raise StopIteration
        self._next = self._pool.submit(self._pull)
        assert frame is not None
        return frame

    def close(self) -> None:
        """Wait out a decode in flight, then close the wrapped iterator (releases the decoder)."""
        if not self._next.cancel():
            with contextlib.suppress(BaseException):
                self._next.result()
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


class _Prepared(NamedTuple):
    """One stream's frame of a tick, ready for the model: its slot (index) in the tick, crop, affine, box, reset
    flag. (Not ``index``: that would shadow ``tuple.index``.)"""

    slot: int
    crop: np.ndarray
    affine: np.ndarray
    box: np.ndarray
    reset: bool
    source: str


@dataclass
class _Stream:
    sid: str
    req: StreamRequest
    future: asyncio.Future[StreamResult]
    submitted: float
    t: int = 0
    started: float | None = None


TIME_PHASES = ("step", "prepare", "model", "observe")  # stats(): "<phase>_s", the worker thread's time


class FrameBatcher:
    """The replica's scheduler: ``await run(request)`` scores one video alongside all others in flight."""

    def __init__(
        self,
        model: LandmarkDEQ,
        default_cfg: RwRConfig,
        *,
        max_batch_size: int = 32,
        wait_s: float = 0.005,
        max_active: int = 256,
        exact: bool = False,
        inference: InferencePolicy | None = None,
        prepare_threads: int = 1,
        read_ahead: bool = False,
    ) -> None:
        self.tracker = RwRTracker(model, default_cfg, policy=inference)
        # exact: every stream solved as a batch of one
        self.runner = FrameSyncRunner(self.tracker, max_call_size=1 if exact else None)
        self._prepare_pool = (
            ThreadPoolExecutor(max_workers=prepare_threads, thread_name_prefix="ldeq-prepare")
            if prepare_threads > 1
            else None
        )
        # decodes frame t+1 of every stream while frame t is prepared and solved (a pool of its own: prepare
        # threads wait on these decodes)
        self._decode_pool = (
            ThreadPoolExecutor(max_workers=max(1, prepare_threads), thread_name_prefix="ldeq-decode")
            if read_ahead
            else None
        )
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.max_active = max_active
        self.exact = exact
        self._active: list[_Stream] = []
        self._rr = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ldeq-batcher")
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._ticks = 0
        self._frames = 0
        # seconds spent on the worker thread, by phase (see stats())
        self._time: dict[str, float] = dict.fromkeys(TIME_PHASES, 0)

    # ------------------------------------------------------------------------------------------------ public
    @property
    def active(self) -> int:
        return len(self._active)

    def stats(self) -> dict[str, Any]:
        """Counters since start: ticks, model calls, frames, the distribution of model-call sizes, and where the
        worker thread's time went (seconds): ``step_s`` whole ticks, of which ``prepare_s`` decoding, boxes and
        crops (all streams of a tick, in parallel), ``model_s`` the model calls (with their host-device copies) and
        ``observe_s`` tracking and per-frame results."""
        runner = self.runner.stats()
        return {
            "ticks": self._ticks,
            "model_calls": runner["model_calls"],
            "frames": self._frames,
            "max_call_size": runner["max_call_size"],
            "mean_call_size": runner["mean_call_size"],
            "call_sizes": runner["call_sizes"],
            "active_videos": len(self._active),
            **{f"{k}_s": round(self._time[k], 6) for k in TIME_PHASES},
        }

    async def run(self, req: StreamRequest) -> StreamResult:
        """Score one video; raises ``ServiceError`` (503 when the replica is full, 422 for a video that breaks)."""
        if req.n_frames < 1:
            raise unprocessable("invalid_video", f"{req.name}: no frames")
        if len(self._active) >= self.max_active:
            raise ServiceError(
                503,
                "busy",
                f"{self.max_active} videos are being scored on this replica; retry later",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        self._ensure_loop(loop)
        if self._decode_pool is not None and not isinstance(req.frames, ReadAhead):
            req = dataclasses.replace(req, frames=ReadAhead(req.frames, self._decode_pool))
        stream = _Stream(uuid.uuid4().hex, req, loop.create_future(), time.perf_counter())
        self._active.append(stream)
        assert self._wake is not None
        self._wake.set()
        return await stream.future  # cancelling this await cancels the future; the loop then drops the stream

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for pool in (self._prepare_pool, self._decode_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------------------ loop
    def _ensure_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop(), name="ldeq-frame-batcher")

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            self._drop_finished()
            if not self._active:
                self._wake.clear()
                await self._wake.wait()
                if self.wait_s > 0:
                    await asyncio.sleep(self.wait_s)  # let concurrent videos join the first tick
                continue
            batch = self._select()
            try:
                frames = await loop.run_in_executor(self._executor, self._step, batch)
            except Exception as exc:  # a bug: fail this tick's videos, keep serving the others
                for s in batch:
                    self._fail(s, ServiceError(500, "internal_error", f"{s.req.name}: {type(exc).__name__}: {exc}"))
                continue
            self._ticks += 1
            for s, res in zip(batch, frames, strict=True):
                if s.future.done():
                    continue  # cancelled while the step ran
                if isinstance(res, BaseException):
                    self._fail(s, res)
                    continue
                self._record(s)

    def _select(self) -> list[_Stream]:
        n = len(self._active)
        if n <= self.max_batch_size:
            return list(self._active)
        start = self._rr % n
        self._rr = (start + self.max_batch_size) % n
        order = self._active[start:] + self._active[:start]
        return order[: self.max_batch_size]

    def _record(self, s: _Stream) -> None:
        """One more frame of ``s`` solved (the runner collected it); resolve its future after its last frame."""
        s.t += 1
        self._frames += 1
        if s.t >= s.req.n_frames:
            assert s.started is not None
            track = self.runner.drop_stream(s.sid)
            assert track is not None
            result = StreamResult(
                landmarks=track.landmarks,
                nfe=track.nfe,
                full_solve=track.full_solve,
                boxes=track.boxes,
                box_source=track.box_source,
                batch_sizes=track.call_sizes,
                queue_s=s.started - s.submitted,
                solve_s=time.perf_counter() - s.started,
            )
            s.future.set_result(result)
            self._release(s)

    def _fail(self, s: _Stream, exc: BaseException) -> None:
        if not s.future.done():
            s.future.set_exception(exc)
        self._release(s)

    def _release(self, s: _Stream) -> None:
        if s in self._active:
            self._active.remove(s)
        self.runner.drop_stream(s.sid)  # frees its RwR state (a no-op once finished)
        close = getattr(s.req.frames, "close", None)
        if close is not None:
            close()

    def _drop_finished(self) -> None:
        for s in [s for s in self._active if s.future.done()]:
            self._release(s)

    # ------------------------------------------------------------------------------------------------ worker
    def _prepare(self, i: int, s: _Stream, now: float) -> _Prepared | BaseException:
        """Next frame of one stream: decode, box, crop. Runs in the prepare pool (streams in parallel; OpenCV
        releases the GIL), touching only that stream's own decoder and box provider."""
        if s.started is None:
            s.started = now
        try:
            frame = next(s.req.frames)
            box, reset, source = s.req.boxes.box_for(s.t, frame)
            validate_box(box, (frame.shape[1], frame.shape[0]), name=f"{s.req.name} box of frame {s.t}")
            box = np.asarray(box, dtype=np.float64)[:4]
            crop, affine = crop_face(frame, box, s.req.rwr.crop_size, s.req.rwr.extra_scale)
            return _Prepared(i, crop, affine, box, bool(reset), source)
        except StopIteration:
            return unprocessable("invalid_video", f"{s.req.name}: decoding stopped at frame {s.t} of {s.req.n_frames}")
        except DataError as exc:
            return unprocessable("invalid_video", f"{s.req.name}: {exc.reason}")
        except ValueError as exc:
            return unprocessable("invalid_boxes", str(exc))

    def _step(self, batch: list[_Stream]) -> list[FrameOutput | BaseException]:
        """Runs on the worker thread: prepare every stream's frame (in parallel), one runner step (one model call
        per RwR config), then observe the landmarks (tracking)."""
        now = time.perf_counter()
        try:
            return self._step_timed(batch, now)
        finally:
            self._time["step"] += time.perf_counter() - now

    def _step_timed(self, batch: list[_Stream], now: float) -> list[FrameOutput | BaseException]:
        prepared = self._prepare_all(batch, now)
        self._time["prepare"] += time.perf_counter() - now
        ready = [p for p in prepared if isinstance(p, _Prepared)]
        results: list[FrameOutput | BaseException | None] = [
            p if isinstance(p, BaseException) else None for p in prepared
        ]
        t0 = time.perf_counter()
        outs = self._solve(batch, ready)
        t1 = time.perf_counter()
        self._time["model"] += t1 - t0
        for p, out in zip(ready, outs, strict=True):
            results[p.slot] = self._observe(batch[p.slot], out)
        self._time["observe"] += time.perf_counter() - t1
        return [r if r is not None else ServiceError(500, "internal_error", "frame not processed") for r in results]

    def _prepare_all(self, batch: list[_Stream], now: float) -> list[_Prepared | BaseException]:
        """Every stream's next frame, prepared in the pool when there is one."""
        idx = range(len(batch))
        if self._prepare_pool is not None and len(batch) > 1:
            return list(self._prepare_pool.map(self._prepare, idx, batch, [now] * len(batch)))
        return [self._prepare(i, s, now) for i, s in zip(idx, batch, strict=True)]

    def _solve(self, batch: list[_Stream], ready: list[_Prepared]) -> list[FrameOutput | BaseException]:
        """One runner step over the prepared frames; a stream joins the runner at its first frame."""
        for p in ready:
            s = batch[p.slot]
            if not self.runner.has_stream(s.sid):
                self.runner.add_stream(s.sid, cfg=s.req.rwr, collect=True)
        items = [
            FrameInput(batch[p.slot].sid, p.box, crop=p.crop, affine=p.affine, reset=p.reset, box_source=p.source)
            for p in ready
        ]
        outs: list[FrameOutput | BaseException] = []
        for p, out in zip(ready, self.runner.try_step(items), strict=True):
            if isinstance(out, Exception):
                out = ServiceError(500, "internal_error", f"{batch[p.slot].req.name}: model step failed: {out}")
            outs.append(out)
        return outs

    def _observe(self, s: _Stream, out: FrameOutput | BaseException) -> FrameOutput | BaseException:
        """Show a solved frame's landmarks to the stream's box provider (tracking)."""
        if isinstance(out, BaseException):
            return out
        try:
            s.req.boxes.observe(s.t, out.raw_landmarks)
        except Exception as exc:
            return ServiceError(500, "internal_error", f"{s.req.name}: tracking failed: {exc}")
        return out
