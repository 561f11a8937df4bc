"""Scoring one video end to end (shared by ``POST /v1/score`` and jobs): validate, choose boxes, run the batcher,
filter, and compute NME/NMF against ground truth when given."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ldeq_core.filters import make_filter, run_filter
from ldeq_core.metrics import video_nme, video_nmf
from ldeq_core.rwr import RwRConfig
from ldeq_shared.video_io import iter_frames
from serve.batching import FrameBatcher, StreamRequest, StreamResult
from serve.detector import FaceTrack, GivenBoxes, HaarFaceDetector, find_first_face
from serve.errors import ServiceError, bad_request, unprocessable
from serve.faces import track_faces
from serve.inputs import VideoFacts, check_boxes, check_landmarks, probe_and_verify
from serve.settings import ServeSettings, check_filter_name


class ScoreOptions(BaseModel):
    """Per-request options (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["rwr", "per_frame"] | None = None
    budget_nfe: int | None = Field(None, ge=1, le=64)
    filter: str = "none"  # a name of ldeq_core.filters.FILTERS
    filter_params: dict[str, float] = Field(default_factory=dict)

    @field_validator("filter")
    @classmethod
    def _known_filter(cls, v: str) -> str:
        return check_filter_name(v)


def parse_options(raw: dict[str, Any], where: str = "options") -> ScoreOptions:
    """Validate options; 400 ``unknown_option`` names an unknown key, 400 ``invalid_option`` a bad value."""
    try:
        opts = ScoreOptions.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or where
        if err["type"] == "extra_forbidden":
            raise bad_request(
                "unknown_option", f"{where}: unknown option {loc!r} (known: {sorted(ScoreOptions.model_fields)})"
            ) from None
        raise bad_request("invalid_option", f"{where}: {loc}: {err['msg']} (got {err.get('input')!r})") from None
    params = dict(opts.filter_params)
    if opts.filter == "one_euro":
        params.setdefault("freq", 30.0)  # the video's fps is used at scoring time
    try:
        make_filter(opts.filter, **params)
    except ValueError as exc:
        raise bad_request("invalid_option", f"{where}: filter_params for {opts.filter!r}: {exc}") from None
    return opts


def rwr_config(settings: ServeSettings, opts: ScoreOptions, crop_size: int) -> RwRConfig:
    """The RwR config of a request: defaults from settings, ``mode``/``budget_nfe`` from the request."""
    d = settings.rwr
    return RwRConfig(
        mode=opts.mode or d.mode,
        budget_nfe=opts.budget_nfe or d.budget_nfe,
        tol=d.tol,
        gamma=d.gamma,
        reset_iou=d.reset_iou,
        crop_size=crop_size,
        extra_scale=d.extra_scale,
        warp_state=d.warp_state,
    )


def video_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """NME with both normalisers and NMF (upstream NMJ and the per-coordinate variant), all in percent."""
    out: dict[str, Any] = {"units": "percent", "computed_on": "returned landmarks (after the filter, if any)"}
    try:
        io_nme: float | None = video_nme(pred, gt, "inter_ocular")
    except ValueError as exc:  # no default eye corners for this landmark count
        io_nme, out["note"] = None, str(exc)
    out["nme"] = {"inter_ocular": io_nme, "face": video_nme(pred, gt, "face")}
    if len(gt) >= 2:
        out["nmf"] = {"nmj": video_nmf(pred, gt), "per_coordinate": video_nmf(pred, gt, per_coordinate=True)}
    else:
        out["nmf"] = {"nmj": None, "per_coordinate": None}
    return out


def precheck_ground_truth(gt: np.ndarray, name: str) -> None:
    """Reject ground truth whose face normaliser is degenerate before any work is done."""
    try:
        video_nme(gt, gt, "face")
    except ValueError as exc:
        raise unprocessable("invalid_landmarks", f"landmarks {name}: {exc}") from None


@dataclass
class VideoJob:
    """A video file on local disk plus its optional boxes and ground truth."""

    name: str
    path: Path
    boxes: np.ndarray | None = None
    gt: np.ndarray | None = None
    facts: VideoFacts | None = None
    validate_s: float = 0.0
    boxes_name: str | None = None  # where the boxes / ground truth came from (for messages)
    gt_name: str | None = None


@dataclass
class VideoScore:
    name: str
    facts: VideoFacts
    landmarks: np.ndarray
    nfe: np.ndarray
    full_solve: np.ndarray
    boxes: np.ndarray
    box_source: list[str]
    batch_sizes: np.ndarray
    metrics: dict[str, Any] | None
    timing: dict[str, float] = field(default_factory=dict)
    faces: list[dict[str, Any]] | None = None  # every face track (videos sent without boxes; serve/faces.py)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-frame arrays."""
        return {
            "name": self.name,
            "container": self.facts.container,
            "codec": self.facts.codec,
            "n_frames": self.facts.n_frames,
            "fps": self.facts.fps,
            "width": self.facts.width,
            "height": self.facts.height,
            "n_landmarks": int(self.landmarks.shape[1]),
            "mean_nfe": float(self.nfe.mean()),
            "mean_batch_size": float(self.batch_sizes.mean()),
            "full_solves": int(self.full_solve.sum()),
            "metrics": self.metrics,
            "timing": self.timing,
            "n_faces": None if self.faces is None else len(self.faces),
        }

    def to_json(self) -> dict[str, Any]:
        out = self.summary()
        out.update(
            landmarks=self.landmarks.tolist(),
            nfe=self.nfe.tolist(),
            full_solve=self.full_solve.tolist(),
            boxes=self.boxes.tolist(),
            box_source=self.box_source,
        )
        if self.faces is not None:
            out["faces"] = self.faces
        return out


def validate_video(job: VideoJob, settings: ServeSettings, n_landmarks: int) -> VideoJob:
    """Probe and decode the video, then check boxes and ground truth against it (blocking; run in a thread)."""
    t0 = time.perf_counter()
    facts = probe_and_verify(job.path, job.name, settings.limits)
    if job.boxes is not None:
        label = f"{job.boxes_name} for {job.name}" if job.boxes_name else job.name
        job.boxes = check_boxes(job.boxes, label, facts.n_frames, (facts.width, facts.height))
    if job.gt is not None:
        label = f"{job.gt_name} for {job.name}" if job.gt_name else job.name
        job.gt = check_landmarks(job.gt, label, facts.n_frames, n_landmarks)
        precheck_ground_truth(job.gt, label)
    job.facts = facts
    job.validate_s = time.perf_counter() - t0
    return job


def make_box_provider(job: VideoJob, settings: ServeSettings) -> GivenBoxes | FaceTrack:
    """Client boxes, or the Haar detector + tracking policy of serve/detector.py (blocking; run in a thread)."""
    assert job.facts is not None
    if job.boxes is not None:
        return GivenBoxes(job.boxes)
    detector = HaarFaceDetector(settings.detector)
    frames = iter_frames(job.path, strict=False)
    try:
        found = find_first_face(frames, detector, settings.detector.max_search_frames)
    finally:
        frames.close()
    if found is None:
        n = min(settings.detector.max_search_frames, job.facts.n_frames)
        raise unprocessable(
            "no_face_detected", f"{job.name}: no face found by the Haar detector in the first {n} frames; send boxes"
        )
    return FaceTrack(detector, (job.facts.width, job.facts.height), found[0], found[1])


async def score_video(
    job: VideoJob, batcher: FrameBatcher, settings: ServeSettings, opts: ScoreOptions, crop_size: int
) -> VideoScore:
    """Score a validated video: boxes, frame-synchronous RwR through the shared batcher, filter, metrics."""
    assert job.facts is not None
    t0 = time.perf_counter()
    provider = await asyncio.to_thread(make_box_provider, job, settings)
    detect_s = time.perf_counter() - t0
    cfg = rwr_config(settings, opts, crop_size)
    fname, fparams = effective_filter(opts, settings, job.facts.fps)
    every_face = start_face_tracks(job, batcher, settings, cfg, fname, fparams)
    res = await batcher.run(
        StreamRequest(iter_frames(job.path, strict=False), job.facts.n_frames, provider, cfg, name=job.name)
    )
    faces = await every_face if every_face is not None else None
    landmarks = filter_landmarks(res.landmarks, fname, fparams)
    return assemble_score(job, res, landmarks, faces, detect_s)


def start_face_tracks(
    job: VideoJob,
    batcher: FrameBatcher,
    settings: ServeSettings,
    cfg: RwRConfig,
    fname: str,
    fparams: dict[str, float],
) -> asyncio.Task[list[dict[str, Any]]] | None:
    """Every face's track (serve/faces.py) in a thread, for a video sent without boxes when
    ``serve.detector.faces`` is ``all``; None otherwise."""
    if job.boxes is not None or settings.detector.faces != "all":
        return None
    return asyncio.create_task(
        asyncio.to_thread(track_faces, job.path, batcher.tracker.model, cfg, settings.detector, fname, fparams)
    )


def filter_landmarks(landmarks: np.ndarray, fname: str, fparams: dict[str, float]) -> np.ndarray:
    """The streaming filter ``fname`` run over a whole track (T, L, 2) from a fresh state (``none``: unchanged)."""
    if fname == "none":
        return landmarks
    return run_filter(make_filter(fname, **fparams), landmarks)


def assemble_score(
    job: VideoJob, res: StreamResult, landmarks: np.ndarray, faces: list[dict[str, Any]] | None, detect_s: float
) -> VideoScore:
    """A video's score from the batcher's result and the returned (filtered) landmarks: metrics against the
    ground truth when given, and the timing of each phase."""
    assert job.facts is not None
    metrics = video_metrics(landmarks, job.gt) if job.gt is not None else None
    timing = {
        "validate_s": round(job.validate_s, 4),
        "detect_s": round(detect_s, 4),
        "queue_s": round(res.queue_s, 4),
        "solve_s": round(res.solve_s, 4),
    }
    return VideoScore(
        job.name,
        job.facts,
        landmarks,
        res.nfe,
        res.full_solve,
        res.boxes,
        res.box_source,
        res.batch_sizes,
        metrics,
        timing,
        faces,
    )


def effective_filter(opts: ScoreOptions, settings: ServeSettings, fps: float) -> tuple[str, dict[str, float]]:
    """(filter, parameters): the request's when it names a filter, else ``serve.rwr.filter``; One Euro gets the
    video's frame rate unless given."""
    if "filter" in opts.model_fields_set:
        name, params = str(opts.filter), dict(opts.filter_params)
    else:
        name, params = settings.rwr.filter, dict(settings.rwr.filter_params)
    if name == "one_euro" and "freq" not in params:
        params["freq"] = fps if math.isfinite(fps) and fps > 0 else 30.0
    return name, params


def service_error_from(exc: BaseException, name: str) -> ServiceError:
    """Any exception of a video as a ServiceError (unexpected ones become 500 ``internal_error``)."""
    if isinstance(exc, ServiceError):
        return exc
    return ServiceError(500, "internal_error", f"{name}: {type(exc).__name__}: {exc}")
