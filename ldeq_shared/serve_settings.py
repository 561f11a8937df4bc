"""Typed settings of the scoring service: the ``serve`` section of a params file (pydantic models), part of the one
typed configuration layer :mod:`ldeq_shared.params`; serve/settings.py re-exports them and resolves their paths.

Every section forbids unknown keys, so a typo in params.yaml or serve/config.yaml fails at start-up with the key's
name (:func:`validate_serve`: ``<file>: serve.<dotted key>: <problem>``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ldeq_core.defaults import BOX_EXPAND, BUDGET_NFE, EXTRA_SCALE, RESET_IOU
from ldeq_core.filters import FILTER_NAMES
from ldeq_core.inference import DEFAULT_STATIC_BATCHES, InferencePolicy
from ldeq_shared.params import ParamsError

DEFAULT_TOKEN_ENV = "LDEQ_SERVE_TOKEN"


def check_filter_name(name: str) -> str:
    """``name`` if it is a registered filter (``ldeq_core.filters.FILTERS``), else ``ValueError`` naming them."""
    if name not in FILTER_NAMES:
        raise ValueError(f"unknown filter {name!r}, expected one of {list(FILTER_NAMES)}")
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Section):
    """Where the replica loads its model from: a checkpoint file, a model-zoo name, or an MLflow model version."""

    checkpoint: str | None = None
    zoo: str | None = None  # a model-zoo name (ldeq models list); "default": the best 68-point zoo model
    mlflow_tracking_uri: str | None = None  # default with mlflow_name: the project's sqlite:///mlflow.db
    mlflow_name: str | None = None
    mlflow_alias: str | None = None
    mlflow_version: int | None = Field(None, ge=1)
    # With no checkpoint and no MLflow model, start with a randomly initialised model of this preset. Off by
    # default: `ldeq serve` turns it on only after printing a warning that the model is untrained.
    untrained_fallback: bool = False
    untrained_preset: str = "tiny"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if sum(bool(v) for v in (self.checkpoint, self.mlflow_name, self.zoo)) > 1:
            raise ValueError("model: set only one of checkpoint, mlflow_name or zoo")
        if self.mlflow_name and (self.mlflow_alias is None) == (self.mlflow_version is None):
            raise ValueError("model: an MLflow model needs exactly one of mlflow_alias or mlflow_version")
        return self


class RwRDefaults(_Section):
    """Default RwR settings; ``mode`` and ``budget_nfe`` can be changed per request. Crop size = model image size."""

    mode: Literal["rwr", "per_frame"] = "rwr"
    budget_nfe: int = Field(BUDGET_NFE, ge=1, le=64)
    tol: float = Field(0.0, ge=0.0)
    gamma: float = Field(0.0, ge=0.0)
    reset_iou: float = Field(RESET_IOU, ge=0.0, le=1.0)
    extra_scale: float = Field(EXTRA_SCALE, gt=0.0)
    # crop-invariant recurrence: the previous equilibrium is warped into the current crop (studies/rwr_real_faces)
    warp_state: bool = True
    # the streaming filter applied when a request names none (a name of ldeq_core.filters.FILTERS) and its parameters
    filter: str = "none"
    filter_params: dict[str, float] = Field(default_factory=dict)

    @field_validator("filter")
    @classmethod
    def _known_filter(cls, v: str) -> str:
        return check_filter_name(v)


class BatchSettings(_Section):
    """The frame-synchronous batcher: one model call per tick holds frame t of up to ``max_batch_size`` videos."""

    max_batch_size: int = Field(32, ge=1, le=1024)
    wait_s: float = Field(0.005, ge=0.0, le=1.0)  # idle loop: wait this long for more videos before a tick
    max_active_videos: int = Field(256, ge=1)  # videos admitted at once per replica; more -> 503 busy
    # exact=True solves every stream as a batch of one (bitwise independent of other requests, slower).
    exact: bool = False
    torch_threads: int | None = Field(None, ge=1)
    # threads that decode, box and crop the frames of one tick in parallel (one per video in the tick at most)
    prepare_threads: int = Field(4, ge=1, le=64)
    read_ahead: bool = True  # decode each video's next frame in the background while the current tick runs


class Limits(_Section):
    """Upload and video limits, checked from the data (magic bytes, decoder probe), never from file names."""

    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)  # whole multipart body
    max_videos_per_request: int = Field(16, ge=1)
    max_frames: int = Field(5000, ge=1)
    max_width: int = Field(3840, ge=16)
    max_height: int = Field(2160, ge=16)
    accepted_containers: tuple[str, ...] = ("mp4", "mov", "matroska", "webm", "avi")
    accepted_codecs: tuple[str, ...] = (
        "h264", "avc1", "hevc", "hev1", "hvc1", "mp4v", "fmp4", "xvid", "divx", "dx50", "mjpg",
        "vp80", "vp08", "vp90", "vp09", "av01",
    )  # fmt: skip
    request_timeout_s: float = Field(300.0, gt=0.0)


class JobSettings(_Section):
    """Batch jobs over files on the server: local paths under ``allowed_root`` and, optionally, fsspec URIs."""

    allowed_root: str | None = None  # None disables POST /v1/jobs
    jobs_dir: str = "outputs/serve_jobs"
    uri_protocols: tuple[str, ...] = ()  # e.g. ("s3", "gs", "memory"); "file" URIs are treated as local paths
    uri_prefixes: tuple[str, ...] = ()  # when set, a URI must start with one of these
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per protocol
    max_videos_per_job: int = Field(10000, ge=1)
    max_video_bytes: int = Field(2 * 1024**3, ge=1024)
    video_concurrency: int = Field(4, ge=1)  # videos of one job scored at once (they share batches)
    lease_s: float = Field(30.0, gt=0.5)  # a running job whose lease is older is resumed by another replica


class DetectorSettings(_Section):
    """Haar-cascade face detection and landmark tracking for videos sent without boxes (see serve/detector.py)."""

    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = Field(1.1, gt=1.0)
    min_neighbors: int = Field(5, ge=0)
    min_size: int = Field(24, ge=8)  # smallest face side in pixels; lower it for small faces (slower, more FPs)
    max_search_frames: int = Field(30, ge=1)  # frames searched for a first face before the video is rejected
    verify_every: int = Field(15, ge=0)  # re-detect around the tracked box every N frames (0: never)
    track_loss_iou: float = Field(0.3, ge=0.0, le=1.0)
    reacquire_iou: float = Field(0.1, ge=0.0, le=1.0)
    max_hold_frames: int = Field(15, ge=0)  # lost-track frames holding the last box before a whole-frame search
    cut_threshold: float = Field(24.0, gt=0.0)  # mean |grey difference| of 64x36 thumbnails marking a shot cut
    track_expand: float = Field(BOX_EXPAND, gt=0.0)  # model box = landmark box grown by this (as the synthetic data)
    # Landmark box relative to a Haar box (x1, y1, x2, y2 in units of the Haar box side), measured on 258 faces
    # of the 300-W HELEN training set.
    haar_to_landmark_box: tuple[float, float, float, float] = (0.09, 0.23, 0.925, 1.06)
    # Every face (serve/faces.py): "all" adds a `faces` list (one RwR track per face) to videos sent without boxes
    faces: Literal["all", "primary"] = "all"
    backend: str = "auto"  # ldeq_core.face_detect.make_detector name for the every-face tracker
    detect_every: int = Field(10, ge=1)  # frames between detector runs of the every-face tracker
    max_faces: int | None = Field(None, ge=1)


class InferenceSettings(_Section):
    """How the replica runs the model (ldeq_core/inference.py): null / auto = the fastest setting that passed
    the parity check on the replica's device (CUDA sm80+: fp16 + torch.compile + CUDA graphs; CPU: fp32 eager).
    With ``warmup`` the replica compiles and captures the RwR step of every batch bucket up to
    ``batch.max_batch_size`` at start-up, so no request pays for it."""

    precision: Literal["auto", "fp32", "tf32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None
    cuda_graphs: bool | None = None
    compile: bool | None = None
    dynamic_batch: bool = True
    static_batches: tuple[int, ...] = DEFAULT_STATIC_BATCHES
    warmup: bool = True

    def policy(self) -> InferencePolicy:
        return InferencePolicy.from_dict(self.model_dump(exclude={"warmup"}))


class ServeSettings(_Section):
    """All settings of the service."""

    model: ModelSource = Field(default_factory=ModelSource)
    rwr: RwRDefaults = Field(default_factory=RwRDefaults)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    limits: Limits = Field(default_factory=Limits)
    jobs: JobSettings = Field(default_factory=JobSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    # Bearer-token auth: a literal token, or (preferred) the name of an environment variable of the replicas.
    auth_token: SecretStr | None = None
    auth_token_env: str | None = DEFAULT_TOKEN_ENV

    def token(self) -> str | None:
        """The bearer token required by the API, or None when auth is off."""
        if self.auth_token is not None and self.auth_token.get_secret_value():
            return self.auth_token.get_secret_value()
        if self.auth_token_env:
            value = os.environ.get(self.auth_token_env, "")
            return value or None
        return None

    def to_public_dict(self) -> dict[str, Any]:
        """Settings as JSON-able data with the token hidden."""
        data = self.model_dump(mode="json")
        data["auth_token"] = "***" if self.auth_token is not None else None
        return data


def validation_message(exc: ValidationError, source: str | None, prefix: str = "serve") -> str:
    """``<source>: <prefix>.<dotted key>: <problem>`` for each error of a pydantic validation, one per line."""
    lines = []
    for err in exc.errors():
        key = ".".join([prefix, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            problem = "unknown key"
        else:
            problem = str(err["msg"]).removeprefix("Value error, ")
            if err["loc"] and "input" in err and not isinstance(err["input"], Mapping):
                problem += f", got {err['input']!r}"
        lines.append(f"{source}: {key}: {problem}" if source else f"{key}: {problem}")
    return "; ".join(lines)


def validate_serve(data: Mapping[str, Any], source: str | None = "params.yaml") -> ServeSettings:
    """:class:`ServeSettings` from the ``serve`` mapping; ``ParamsError`` naming ``source`` and the dotted key."""
    if not isinstance(data, Mapping):
        raise ParamsError(f"{source}: serve: expected a mapping, got {data!r}")
    try:
        return ServeSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise ParamsError(validation_message(exc, source)) from None
