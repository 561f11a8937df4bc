"""End-to-end speed of ``ldeq track`` on a CPU: decode + face detection + RwR + CSV (+ overlay) per video frame.

    python bench/bench_track.py VIDEO [--model NAME|PATH] [--threads N] [--out bench/results/track_cpu.json]

Runs the same file through ``ldeq_cli.track.track_file`` for each mode (RwR 2 NFE, per-frame), with and without the
overlay, and records frames, face rows, wall seconds and frames/s; the model's RwR step alone (batch 1, one face)
is timed as well so the detector's share can be read off.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ldeq_cli.track import track_file
from ldeq_core.face_detect import make_detector
from ldeq_core.landmarker import FaceLandmarker, VideoSettings, load_model
from ldeq_core.profiling import cpu_name, rwr_step_seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results/track_cpu.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = load_model(args.model, "cpu")
    det = make_detector("auto")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("rwr", "per_frame"):
            for overlay in (False, True):
                settings = VideoSettings(mode=mode)

                def make(fps: float, s: VideoSettings = settings) -> FaceLandmarker:
                    return FaceLandmarker(ckpt, s, detector=det, fps=fps, device="cpu")

                t0 = time.perf_counter()
                summ = track_file(args.video, "bench", Path(tmp), make, overlay=overlay)
                wall = time.perf_counter() - t0
                row = {
                    "mode": mode,
                    "overlay": overlay,
                    "frames": summ.frames,
                    "face_rows": summ.rows,
                    "face_ids": summ.face_ids,
                    "wall_s": round(wall, 3),
                    "frames_per_s": round(summ.frames / wall, 2),
                    "faces_per_s": round(summ.rows / wall, 2),
                }
                print(row)
                rows.append(row)
    result = {
        "video": os.fspath(args.video),
        "model": str(ckpt.metadata.get("zoo_name") or args.model),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_avg_before": os.getloadavg()[0],
        "rwr_step_ms_batch1": round(
            1000 * float(np.median(rwr_step_seconds(ckpt.model.eval(), 200, 10, 2, (640, 360)))), 3
        ),
        "runs": rows,
    }
    print({"rwr_step_ms_batch1": result["rwr_step_ms_batch1"]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
