"""Flicker on a real video without ground truth: what each method adds beyond the face's own rigid motion.

    python bench/flicker_real_video.py VIDEO [--model NAME|PATH] [--out-dir bench/results/flicker_real]

Every frame goes through the MTCNN detector once; detections are linked into face tracks by the overlap score of
``ldeq_core.face_tracking`` (a new track when nothing overlaps). All methods then crop with the **same** box tracks,
either as detected (jittery, like any detector) or smoothed by a causal One Euro filter, so the methods differ only
in how they solve. The flicker proxy of a track is, for each pair of consecutive frames, the RMS of the landmark
motion left after removing the best similarity transform between the two frames' landmarks (Umeyama), in units of
the face size (sqrt of the landmark-box area) x 1000, averaged over frames and tracks of >= 10 frames. A rigidly
moving face scores 0; jitter of single landmarks scores high. Writes ``flicker.json`` and a side-by-side overlay
(per-frame | RwR default) of the clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ldeq_core.face_detect import make_detector
from ldeq_core.face_tracking import affinity_matrix, grow_box
from ldeq_core.filters import make_filter, run_filter
from ldeq_core.landmarker import load_model
from ldeq_core.rwr import RwRConfig, RwRTracker
from ldeq_shared.video_io import probe_video, read_frames, write_video
from pipelines.evaluate.boxes import smoothed_boxes

METHODS: dict[str, dict[str, Any]] = {
    "per_frame": {"mode": "per_frame"},
    "rwr_nfe2": {"mode": "rwr", "budget_nfe": 2},
    "rwr_nfe2_warp": {"mode": "rwr", "budget_nfe": 2, "warp_state": True},
    "rwr_nfe2_gamma1_warp": {"mode": "rwr", "budget_nfe": 2, "gamma": 1.0, "warp_state": True},
}
FILTERED = {"per_frame+one_euro": "per_frame", "rwr_nfe2_warp+one_euro": "rwr_nfe2_warp"}
ONE_EURO = {"min_cutoff": 1.0, "beta": 0.05}


def link_tracks(frames: np.ndarray, min_len: int = 10) -> list[tuple[int, np.ndarray]]:
    """(first frame, (T_i, 4) boxes) per face: per-frame detections linked by overlap with the previous box."""
    det = make_detector("auto")
    open_tracks: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []
    for t, frame in enumerate(frames):
        dets = det.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        boxes = [grow_box(d, 1.1) for d in dets]
        taken: set[int] = set()
        still = []
        for tr in open_tracks:
            score = affinity_matrix(tr["boxes"][-1][None], np.array(boxes).reshape(-1, 4))[0] if boxes else []
            j = int(np.argmax(score)) if len(score) else -1
            if j >= 0 and score[j] >= 0.3 and j not in taken:
                tr["boxes"].append(boxes[j])
                taken.add(j)
                still.append(tr)
            else:
                done.append(tr)
        open_tracks = still + [{"start": t, "boxes": [b]} for j, b in enumerate(boxes) if j not in taken]
    done += open_tracks
    return [(tr["start"], np.array(tr["boxes"])) for tr in done if len(tr["boxes"]) >= min_len]


def similarity_residual(a: np.ndarray, b: np.ndarray) -> float:
    """RMS of b minus the least-squares similarity transform of a (Umeyama), per landmark."""
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    scale = (s * [1.0, d]).sum() / (a0**2).sum()
    fit = scale * a0 @ rot.T + mb
    return float(np.sqrt(((b - fit) ** 2).sum(1).mean()))


def flicker(track: np.ndarray) -> float:
    """Mean similarity-free motion between consecutive frames, x1000 of the face size."""
    vals = []
    for t in range(1, len(track)):
        box = np.concatenate([track[t].min(0), track[t].max(0)])
        size = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
        vals.append(1000 * similarity_residual(track[t - 1], track[t]) / size)
    return float(np.mean(vals))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out-dir", type=Path, default=Path("bench/results/flicker_real"))
    args = ap.parse_args()
    ckpt = load_model(args.model, "cpu")
    model = ckpt.model.eval()
    frames = read_frames(args.video)
    fps = probe_video(args.video).fps
    tracks = link_tracks(frames)
    result: dict[str, Any] = {"video": str(args.video), "model": ckpt.metadata.get("zoo_name"), "tracks": []}
    scores: dict[str, dict[str, list[float]]] = {}
    shown: dict[str, np.ndarray] = {}
    for start, boxes in tracks:
        result["tracks"].append({"start": start, "frames": len(boxes)})
        for box_name, bx in (("detected", boxes), ("smoothed", smoothed_boxes(boxes, fps))):
            outs = {}
            for name, kw in METHODS.items():
                tracker = RwRTracker(model, RwRConfig(crop_size=model.cfg.image_size, **kw))
                outs[name] = np.stack(
                    [tracker.step([frames[start + i]], bx[i : i + 1], ["f"]).landmarks[0] for i in range(len(bx))]
                )
            for name, base in FILTERED.items():
                outs[name] = run_filter(make_filter("one_euro", freq=fps, **ONE_EURO), outs[base])
            for name, lm in outs.items():
                scores.setdefault(box_name, {}).setdefault(name, []).append(flicker(lm))
            if box_name == "detected" and start == 0:
                shown = outs
    result["flicker"] = {b: {m: float(np.mean(v)) for m, v in d.items()} for b, d in scores.items()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "flicker.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["flicker"], indent=1))
    if shown:  # side by side: per-frame | RwR 2 NFE + warp, first track, detected boxes
        n = len(shown["per_frame"])
        panels = []
        for i in range(n):
            row = []
            for name in ("per_frame", "rwr_nfe2_warp"):
                img = frames[i].copy()
                for x, y in shown[name][i]:
                    cv2.circle(img, (round(x), round(y)), 1, (0, 255, 0), -1, cv2.LINE_AA)
                cv2.putText(img, name, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
                row.append(img[..., ::-1])
            panels.append(np.concatenate(row, axis=1))
        write_video(args.out_dir / "side_by_side.mp4", np.stack(panels), fps=fps)


if __name__ == "__main__":
    main()
