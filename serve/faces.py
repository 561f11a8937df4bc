"""Every face of a video sent without boxes: the multi-face tracker of ``ldeq_core.face_tracking`` run per video.

The primary track (top-level ``landmarks``) still comes from the frame-synchronous batcher and the single-face
policy of :mod:`serve.detector`; with ``serve.detector.faces: all`` (the default) the response also carries
``faces``: one entry per face track (its own RwR state, its own id), listing the frames it covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ldeq_core.face_tracking import FaceTrackingConfig, MultiFaceTracker
from ldeq_core.inference import InferencePolicy
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker
from ldeq_shared.video_io import iter_frames
from serve.settings import DetectorSettings


def track_faces(
    path: Path,
    model: LandmarkDEQ,
    cfg: RwRConfig,
    detector: DetectorSettings,
    filter_name: str = "none",
    filter_params: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Per-face tracks of the video at ``path`` (blocking; run in a thread): id, frames, boxes, landmarks, NFE.

    Runs eagerly (no CUDA graphs or compilation), so it never shares captured graphs with the batcher's thread.
    """
    from ldeq_core.face_detect import make_detector

    tracker = MultiFaceTracker(
        RwRTracker(model, cfg, policy=InferencePolicy(precision="fp32", cuda_graphs=False, compile=False)),
        make_detector(detector.backend),
        FaceTrackingConfig(detect_every=detector.detect_every, max_faces=detector.max_faces),
        filter_name=filter_name,
        filter_params=filter_params,
    )
    tracks: dict[int, dict[str, list[Any]]] = {}
    for t, frame in enumerate(iter_frames(path, strict=False)):
        for f in tracker.process(frame):
            tr = tracks.setdefault(f.face_id, {"frames": [], "boxes": [], "landmarks": [], "nfe": []})
            tr["frames"].append(t)
            tr["boxes"].append(np.round(f.box, 3).tolist())
            tr["landmarks"].append(np.round(f.landmarks, 3).tolist())
            tr["nfe"].append(f.nfe)
    return [{"face_id": fid, "n_frames": len(tr["frames"]), **tr} for fid, tr in sorted(tracks.items())]
