"""The landmark-derived box track of the RwR study: what `ldeq track` itself gives on the study's test videos.

The evaluation stage crops every method with one precomputed box track (given, smoothed or detector). A tracker
in production instead takes each frame's box from its own previous landmarks (grown x1.1), re-detecting every
10 frames and on track loss (:class:`ldeq_core.face_tracking.MultiFaceTracker`, the `ldeq track` path). This
script runs :class:`ldeq_core.landmarker.FaceLandmarker` with MTCNN on the same 24 test videos as ``detector/``
(their ids are read from its per-video table, so the tune/test split is the stage's), follows the annotated face
(the track whose box overlaps the ground-truth landmark box most) and scores it with the stage's NME and NMF.
Nothing is tuned here: the filter parameters are the zoo card's (tuned by the evaluation on the tuning videos).

Usage: .venv/bin/python studies/rwr_real_faces/track_arm.py [--model NAME_OR_PATH]
Writes ``track_arm.md`` and ``track_arm.csv`` next to this file.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ldeq_core.face_tracking import iou_matrix
from ldeq_core.landmarker import FaceLandmarker, VideoSettings, default_settings, load_model
from ldeq_core.metrics import video_nme, video_nmf
from ldeq_shared.wflw_v import landmark_boxes, load_wflw_v_clip

HERE = Path(__file__).resolve().parent
RAW = HERE.parents[1] / "outputs" / "study" / "w300" / "raw" / "300w_anim"


def arms(card: VideoSettings) -> dict[str, VideoSettings]:
    """The compared `ldeq track` settings; the last is the shipped default (the zoo card's)."""
    return {
        "per_frame": replace(card, mode="per_frame", filter="none", filter_params={}, warp_state=False),
        "per_frame+kalman": replace(card, mode="per_frame", warp_state=False),
        "rwr_nfe2": replace(card, filter="none", filter_params={}, warp_state=False),
        "rwr_nfe2_warp": replace(card, filter="none", filter_params={}),
        "rwr_nfe2_warp+kalman (default)": card,
    }


def follow_annotated_face(per_frame: list[list], gt: np.ndarray) -> tuple[np.ndarray, int]:
    """(T, L, 2) landmarks of the track on the annotated face, and the number of frames it had no result
    (those frames hold the previous landmarks; a face missing at the start takes its first result)."""
    gt_boxes = landmark_boxes(gt)
    out = np.full(gt.shape, np.nan)
    face_id, missing = None, 0
    for t, faces in enumerate(per_frame):
        pick = next((f for f in faces if f.face_id == face_id), None)
        if pick is None and faces:  # (re)acquire: the face whose box overlaps the annotated one most
            iou = iou_matrix(gt_boxes[t][None], np.stack([f.box for f in faces]))[0]
            if iou.max() > 0.3:
                pick = faces[int(iou.argmax())]
                face_id = pick.face_id
        if pick is None:
            missing += 1
            continue
        out[t] = pick.landmarks
    valid = np.flatnonzero(~np.isnan(out[:, 0, 0]))
    if len(valid) == 0:
        raise RuntimeError("the annotated face was never tracked")
    for t in range(len(out)):  # hold the last result (or the first one, before it)
        if np.isnan(out[t, 0, 0]):
            prev = valid[valid < t]
            out[t] = out[prev[-1] if len(prev) else valid[0]]
    return out, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="zoo name or checkpoint (default: the best 68-point zoo model)")
    args = ap.parse_args()
    table = pd.read_parquet(HERE / "detector" / "outputs" / "eval" / "per_video.parquet")
    ids = sorted(table[table.role == "test"].video_id.unique())
    checkpoint = load_model(args.model, "cpu")
    card = default_settings(checkpoint)
    rows = []
    for vid in tqdm(ids, desc="track arm", unit="video"):
        clip = load_wflw_v_clip(RAW, vid, n_points=68, decode=False)
        frames = list(clip.frames())
        for name, settings in arms(card).items():
            lm = FaceLandmarker(checkpoint, settings, fps=clip.fps, device="cpu")
            pred, missing = follow_annotated_face([lm.process(f) for f in frames], clip.landmarks)
            rows.append(
                {
                    "video_id": vid,
                    "method": name,
                    "nme_io": video_nme(pred, clip.landmarks),
                    "nmf": video_nmf(pred, clip.landmarks),
                    "missing_frames": missing,
                }
            )
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "track_arm.csv", index=False, float_format="%.4f")
    agg = df.groupby("method", sort=False)[["nme_io", "nmf", "missing_frames"]].mean()
    base = agg.loc["per_frame"]
    agg["nmf_vs_per_frame_%"] = 100 * (agg.nmf / base.nmf - 1)
    agg["nme_vs_per_frame_%"] = 100 * (agg.nme_io / base.nme_io - 1)
    text = "\n".join(
        [
            "# RwR study: the landmark-derived box track (`ldeq track` itself)",
            "",
            f"{len(ids)} test videos of ../detector (same split), MTCNN + landmark-derived boxes, model "
            f"{checkpoint.metadata.get('zoo_name') or checkpoint.sha256[:12]}; NME in %, NMF lower is less flicker.",
            "",
            agg.reset_index().to_markdown(index=False, floatfmt=".2f"),
            "",
        ]
    )
    (HERE / "track_arm.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
