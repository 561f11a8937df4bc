"""``FaceLandmarker``: stable landmarks for every face of a stream, frame by frame, in three lines.

    from ldeq_core.landmarker import FaceLandmarker
    lm = FaceLandmarker()                      # the best 68-point zoo model, RwR at 2 NFE, the default detector
    for frame_bgr in frames:                   # a video file, a webcam, a stream: one frame at a time
        for face in lm.process(frame_bgr):     # FaceResult: face_id, box, landmarks (L, 2) in frame pixels
            ...

Each face track keeps its own RwR state (warm start from its previous equilibrium); see
:mod:`ldeq_core.face_tracking` for detection, association and track loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ldeq_core.checkpoints import LoadedCheckpoint, load_checkpoint
from ldeq_core.defaults import BUDGET_NFE
from ldeq_core.face_tracking import FaceResult, FaceTrackingConfig, MultiFaceTracker
from ldeq_core.filters import FILTERS
from ldeq_core.rwr import RwRConfig, RwRTracker

# Streaming defaults when no parameters are given (the registry's); ``freq`` (frames per second) comes from the video.
FILTER_DEFAULTS: dict[str, dict[str, float]] = {name: spec.defaults() for name, spec in FILTERS.items()}


@dataclass(frozen=True)
class VideoSettings:
    """How a video is solved: ``mode`` rwr | per_frame, the RwR budget and proximal gamma, a streaming filter."""

    mode: Literal["rwr", "per_frame"] = "rwr"
    budget_nfe: int = BUDGET_NFE
    gamma: float = 0.0
    filter: str = "none"
    filter_params: dict[str, float] = field(default_factory=dict)
    warp_state: bool = True  # crop-invariant recurrence (ldeq_core.rwr; studies/rwr_real_faces)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoSettings:
        """From a zoo entry's ``video_defaults`` (unknown keys such as ``crop_size`` are ignored)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def __post_init__(self) -> None:
        if self.filter not in FILTER_DEFAULTS:
            raise ValueError(f"filter: unknown filter {self.filter!r}, expected one of {sorted(FILTER_DEFAULTS)}")
        RwRConfig(mode=self.mode, budget_nfe=self.budget_nfe, gamma=self.gamma)  # validates the rest

    def filter_kwargs(self, fps: float) -> dict[str, float]:
        """The filter's parameters: the defaults overridden by ``filter_params``, plus ``freq`` for One Euro."""
        return FILTERS[self.filter].kwargs(self.filter_params, fps)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU")
    return torch.device(device)


def load_model(model: str | Path | LoadedCheckpoint | None, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """A zoo name, a checkpoint path, or ``None`` (the best 68-point zoo model for ``device``) as a
    ``LoadedCheckpoint``."""
    if isinstance(model, LoadedCheckpoint):
        return model
    from ldeq_core import pretrained

    if model is None:
        entry = pretrained.default_pretrained(68, device=device)  # on a CPU, the best real-time model
        if entry is None:
            raise ValueError("the model zoo is empty: pass a checkpoint path (models/model.pt after `make demo`)")
        model = entry.name
    text = str(model)
    if "://" in text:
        raise ValueError(f"{text}: pass a URL to ldeq_core.pretrained.load_pretrained with its sha256")
    names = {e.name for e in pretrained.list_pretrained()}
    if text in names:
        return pretrained.load_pretrained(text, map_location=device)
    path = Path(text)
    if not path.exists():
        raise ValueError(f"{text}: neither a zoo model ({', '.join(sorted(names)) or 'zoo empty'}) nor a file")
    return load_checkpoint(path, map_location=device)


def default_settings(checkpoint: LoadedCheckpoint) -> VideoSettings:
    """The video mode a zoo model's card recommends (``video_defaults``), else plain :class:`VideoSettings`."""
    name = checkpoint.metadata.get("zoo_name")
    if not name:
        return VideoSettings()
    from ldeq_core.pretrained import get_pretrained

    return VideoSettings.from_dict(dict(get_pretrained(str(name)).video_defaults))


def onnx_device(device: str) -> str:
    """The device of the ONNX runtime: onnxruntime runs on the CPU (``auto`` -> cpu; cuda is an error)."""
    if device not in ("auto", "cpu"):
        raise ValueError(f"--runtime onnx runs on the CPU (onnxruntime), not on {device!r}: use --device cpu or auto")
    return "cpu"


def onnx_engine(checkpoint: LoadedCheckpoint, settings: VideoSettings, onnx_file: str | Path | None = None) -> Any:
    """An :class:`~ldeq_core.onnx_runtime.OnnxEngine` for ``settings`` (the RwR budget; the exported graph from
    ``onnx_file``, else from the cache, exported on first use); ``ValueError`` for settings it cannot run."""
    if settings.gamma > 0:
        raise ValueError("the proximal RwR term (gamma > 0) needs --runtime torch")
    from ldeq_core.onnx_runtime import engine_for_checkpoint

    return engine_for_checkpoint(checkpoint, settings.budget_nfe, onnx_file)


class FaceLandmarker:
    """Per-face landmarks for a stream of BGR frames (OpenCV order); one RwR state per face track.

    ``runtime="onnx"`` runs the model with onnxruntime on the CPU (:mod:`ldeq_core.onnx_runtime`): the graphs of
    ``onnx_file`` (the RwR step; its ``.solve.onnx`` beside it), else exported once into the cache; ``engine``
    shares one prepared engine (torch or ONNX) between landmarkers of the same checkpoint.
    """

    def __init__(
        self,
        model: str | Path | LoadedCheckpoint | None = None,
        settings: VideoSettings | None = None,
        *,
        detector: Any = "auto",
        tracking: FaceTrackingConfig | None = None,
        fps: float = 30.0,
        device: str = "auto",
        runtime: Literal["torch", "onnx"] = "torch",
        onnx_file: str | Path | None = None,
        engine: Any = None,
    ) -> None:
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
        if runtime == "onnx":
            device = onnx_device(device)
        self.device = resolve_device(device)
        self.checkpoint = load_model(model, self.device)
        self.model = self.checkpoint.model.to(self.device).eval()
        self.settings = settings or default_settings(self.checkpoint)
        s = self.settings
        self.runtime = runtime
        if runtime == "onnx" and engine is None:
            engine = onnx_engine(self.checkpoint, s, onnx_file)
        rwr = RwRConfig(
            mode=s.mode,
            budget_nfe=s.budget_nfe,
            gamma=s.gamma,
            crop_size=self.model.cfg.image_size,
            warp_state=s.warp_state,
        )
        if isinstance(detector, str):
            from ldeq_core.face_detect import make_detector

            detector = make_detector(detector)
        self.detector = detector
        self.tracker = MultiFaceTracker(
            RwRTracker(self.model, rwr, engine=engine),
            detector,
            tracking,
            filter_name=s.filter,
            filter_params=s.filter_kwargs(fps),
        )

    @property
    def n_landmarks(self) -> int:
        return self.model.cfg.n_landmarks

    @property
    def model_name(self) -> str:
        """The zoo name, or the checkpoint's sha256 prefix for a file."""
        return str(self.checkpoint.metadata.get("zoo_name") or f"checkpoint sha256:{self.checkpoint.sha256[:12]}")

    def process(self, frame_bgr: np.ndarray, boxes: np.ndarray | None = None) -> list[FaceResult]:
        """Landmarks of every face of the next frame; ``boxes`` (N, 4) x1, y1, x2, y2 skips detection."""
        return self.tracker.process(frame_bgr, boxes)

    def reset(self) -> None:
        """Forget every face (call at a shot cut or before another video)."""
        self.tracker.reset()
