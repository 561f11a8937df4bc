"""Synthetic WFLW-style stills and WFLW-V-style videos (the no-network default dataset).

``generate_dataset(out_root, ...)`` writes

- ``out_root/wflw/{train,test}.txt`` + ``out_root/wflw/{train,test}/synth_XXXXXX.png`` (spec §5.1 layout:
  256x256 RGB crops, 98 landmarks normalised to [0, 1]);
- ``out_root/wflw_v/{videos,landmarks,bboxes}/<id>.{mp4,npy,npy}`` (spec §5.4 layout, written with
  ``ldeq_shared.wflw_v.write_video_clip``: mp4v at 30 fps, landmarks (T, 98, 2) frame pixels, boxes
  (T, 4) x1, y1, x2, y2; float64 on disk, values rounded to float32), plus
  ``easy_video_IDs.txt``, ``hard_video_IDs.txt``, ``download_ranges.txt`` and ``index.json`` (frame counts and
  hard segments per video);
- ``out_root/summary.json`` (counts, timings and the mean-shape baseline NME on the test stills).

Everything is a pure function of ``seed``: item ``i`` of a split uses ``default_rng([seed, split_id, i])``,
so outputs do not depend on ``workers``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from ldeq_core.defaults import BOX_EXPAND, EXTRA_SCALE
from ldeq_core.fileio import write_text_atomic
from ldeq_shared.params import DataSettings
from ldeq_shared.wflw_v import write_video_clip
from pipelines.formats.wflw import write_wflw
from pipelines.synthetic import face_model as fm
from pipelines.synthetic import render as rd

STILL_SIZE = 256
CROP_EXTRA = EXTRA_SCALE  # crop side / detector-box side (spec §5.4)
VIDEO_SIZE = (384, 288)  # width, height
VIDEO_FPS = 30.0
HARD_KINDS = ("motion_blur", "occlusion", "low_light", "fast_motion")
_SPLIT_IDS = {"train": 0, "test": 1, "video": 2}

_DEFAULTS = DataSettings()  # the data defaults of the one settings layer (ldeq_shared.params)
IMAGE_FORMATS = ("png", "jpg")

_T = TypeVar("_T")
_R = TypeVar("_R")


def item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``split`` ("train", "test" or "video")."""
    return np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])


def detector_box(landmarks: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0) -> np.ndarray:
    """Face-detector-like (x1, y1, x2, y2): the landmark box grown by ``BOX_EXPAND``, with optional noise
    (centre std ``jitter`` x side, log-size std ``jitter``, both clipped at 2 std). The box always contains
    every landmark."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    c = (lo + hi) / 2.0
    half = (hi - lo) / 2.0 * BOX_EXPAND
    if rng is not None and jitter > 0:
        side = float(np.max(hi - lo))
        c = c + np.clip(rng.normal(0.0, 1.0, 2), -2, 2) * jitter * side
        half = half * np.exp(np.clip(rng.normal(0.0, 1.0, 2), -2, 2) * jitter)
    return np.concatenate([np.minimum(c - half, lo), np.maximum(c + half, hi)])


# --- stills --------------------------------------------------------------------------------------------


def _sample_angles(rng: np.random.Generator) -> tuple[float, float, float]:
    yaw = rng.normal(0.0, 15.0) if rng.random() < 0.65 else rng.uniform(-42.0, 42.0)
    pitch = rng.normal(0.0, 10.0)
    roll = rng.uniform(-35.0, 35.0) if rng.random() < 0.1 else rng.normal(0.0, 8.0)
    return (
        float(np.radians(np.clip(yaw, -42, 42))),
        float(np.radians(np.clip(pitch, -28, 28))),
        float(np.radians(np.clip(roll, -35, 35))),
    )


def render_still(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One 256x256 RGB uint8 crop and its (98, 2) float32 landmarks in crop pixels.

    The face is placed like a detector crop: the detector box (``detector_box``) is centred with side
    256 / 1.2, then randomly shifted and scaled; all landmarks stay inside the image.
    """
    idn = fm.Identity.sample(rng)
    ex = fm.Expression.sample(rng)
    app = rd.Appearance.sample(rng)
    light = rd.Lighting.sample(rng)
    yaw, pitch, roll = _sample_angles(rng)
    lm3 = fm.landmarks_3d(idn, ex)
    unit = fm.project(lm3, fm.Pose(yaw, pitch, roll, 1.0, 0.0, 0.0))
    box = detector_box(unit)
    side = float(np.max(box[2:] - box[:2])) * CROP_EXTRA
    s = STILL_SIZE / side * float(np.clip(np.exp(rng.normal(0.0, 0.06)), 0.85, 1.15))
    centre = (box[:2] + box[2:]) / 2.0
    t = STILL_SIZE / 2.0 - s * centre + np.clip(rng.normal(0.0, 0.03 * STILL_SIZE, 2), -20, 20)
    lm = unit * s + t
    lo_lim, hi_lim = 2.0, STILL_SIZE - 3.0
    t = t + np.maximum(lo_lim - lm.min(axis=0), 0.0) - np.maximum(lm.max(axis=0) - hi_lim, 0.0)
    pose = fm.Pose(yaw, pitch, roll, s, float(t[0]), float(t[1]))
    geo = rd.build_geometry(idn, ex, pose, app, lm3)
    img = rd.draw_background(rng, STILL_SIZE, STILL_SIZE)
    rd.render_head(img, geo, app, light)
    if rng.random() < 0.25:
        rd.draw_occluder(img, rng, geo.landmarks)
    if rng.random() < 0.05:
        img = rd.motion_blur(img, float(rng.uniform(4, 12)), float(rng.uniform(0, np.pi)))
    img = rd.photometric(img, rng, low_light=bool(rng.random() < 0.06))
    return img, geo.landmarks.astype(np.float32)


def _still_task(args: tuple[int, str, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, split, index = args
    return render_still(item_rng(seed, split, index))


# --- videos --------------------------------------------------------------------------------------------


def smooth_signal(rng: np.random.Generator, n: int, fps: float, f_lo: float, f_hi: float, k: int = 3) -> np.ndarray:
    """A smooth random signal of ``n`` samples in about [-1, 1]: ``k`` sinusoids with frequencies
    uniform in [f_lo, f_hi] Hz and random phases, normalised by the sum of amplitudes."""
    t = np.arange(n) / fps
    amp = rng.uniform(0.3, 1.0, k)
    f = rng.uniform(f_lo, f_hi, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    return (amp[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0) / amp.sum()


def _blink_track(rng: np.random.Generator, n: int) -> np.ndarray:
    profile = np.array([0.35, 0.8, 1.0, 0.85, 0.55, 0.25, 0.08])
    out = np.zeros(n)
    t = int(rng.integers(5, 60))
    while t < n:
        seg = profile[: n - t]
        out[t : t + len(seg)] = np.maximum(out[t : t + len(seg)], seg)
        t += int(rng.integers(50, 150))
    return out


def _segments(rng: np.random.Generator, n: int, hard: bool, kinds: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Non-overlapping hard segments [start, end) of ``kinds`` (default: 1..3 random distinct kinds), in
    random order; none when not ``hard``."""
    if not hard:
        return []
    if kinds is None:
        k = int(rng.integers(1, 4))
        kinds = [HARD_KINDS[i] for i in rng.permutation(len(HARD_KINDS))[:k]]
    else:
        bad = [k for k in kinds if k not in HARD_KINDS]
        if bad or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds: expected distinct values among {HARD_KINDS}, got {list(kinds)}")
    length = [int(rng.integers(max(6, n // 8), max(7, n // 4) + 1)) for _ in kinds]
    free = n - sum(length)
    if free < 0:
        scale = n / sum(length)
        length = [max(2, int(v * scale)) for v in length]
        free = max(n - sum(length), 0)
    cuts = np.sort(rng.integers(0, free + 1, len(kinds)))
    segs, pos, prev = [], 0, 0
    for kind, ln, c in zip(kinds, length, cuts, strict=True):
        pos += int(c) - prev
        prev = int(c)
        segs.append({"type": kind, "start": pos, "end": min(pos + ln, n)})
        pos += ln
    return segs


def _in(segs: list[dict[str, Any]], kind: str, t: int) -> dict[str, Any] | None:
    for s in segs:
        if s["type"] == kind and int(s["start"]) <= t < int(s["end"]):
            return s
    return None


@dataclass
class VideoClip:
    """One rendered clip with exact ground truth."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (T, 98, 2) float32 frame pixels
    boxes: np.ndarray  # (T, 4) float32
    segments: list[dict[str, Any]] = field(default_factory=list)
    fps: float = VIDEO_FPS


def render_video(
    rng: np.random.Generator,
    n_frames: int,
    hard: bool,
    size: tuple[int, int] = VIDEO_SIZE,
    fps: float = VIDEO_FPS,
    kinds: Sequence[str] | None = None,
) -> VideoClip:
    """Render one clip: smooth head motion and expressions, static or slowly panning background, and (when
    ``hard``) hard segments of ``kinds`` (default 1-3 random ones of ``HARD_KINDS``)."""
    if n_frames < 2:
        raise ValueError(f"n_frames: need at least 2 frames per video, got {n_frames}")
    w, h = size
    if w % 2 or h % 2 or w < 64 or h < 64:
        raise ValueError(f"size: frame size must be even and at least 64x64, got {w}x{h}")
    n = n_frames
    idn = fm.Identity.sample(rng)
    app = rd.Appearance.sample(rng)
    light = rd.Lighting.sample(rng)
    segs = _segments(rng, n, hard, kinds)

    def sm(lo: float, hi: float, k: int = 3) -> np.ndarray:
        return smooth_signal(rng, n, fps, lo, hi, k)

    yaw = np.radians(rng.uniform(-15, 15) + rng.uniform(8, 25) * sm(0.05, 0.45))
    pitch = np.radians(rng.normal(0, 5) + rng.uniform(3, 10) * sm(0.05, 0.4))
    roll = np.radians(rng.normal(0, 5) + rng.uniform(2, 8) * sm(0.05, 0.3))
    face_frac = rng.uniform(0.38, 0.58)  # landmark-box height / frame height
    s0 = face_frac * h / 1.95
    scale = s0 * (1.0 + rng.uniform(0.0, 0.08) * sm(0.03, 0.2))
    tx_amp, ty_amp = rng.uniform(0.02, 0.1) * w, rng.uniform(0.02, 0.06) * h
    tx_track, ty_track = sm(0.03, 0.3), sm(0.03, 0.3)
    for sg in segs:
        if sg["type"] == "fast_motion":
            a, b = int(sg["start"]), int(sg["end"])
            x = (np.arange(a, b) - a + 1) / (b - a + 1)  # in (0, 1): zero offset and velocity at both ends
            yaw[a:b] += np.radians(rng.choice([-1, 1]) * rng.uniform(25, 40)) * np.sin(np.pi * x) ** 2
            shake = rng.choice([-1, 1]) * rng.uniform(0.04, 0.08) * w / max(tx_amp, 1e-6)
            tx_track[a:b] += shake * np.sin(2 * np.pi * x) * np.sin(np.pi * x)
    yaw = np.clip(yaw, np.radians(-45), np.radians(45))
    talk_env = np.clip(sm(0.05, 0.2, 2) * 1.5 + 0.3, 0.0, 1.0)
    mouth = np.clip(talk_env * rng.uniform(0.2, 0.6) * (0.5 + 0.5 * sm(2.0, 5.0)), 0.0, 1.0)
    smile = np.clip(rng.uniform(-0.1, 0.4) + 0.3 * sm(0.03, 0.2), -0.4, 1.0)
    brow = np.clip(0.35 * sm(0.05, 0.5), -1.0, 1.0)
    blink = _blink_track(rng, n)
    gx, gy = 0.5 * sm(0.05, 0.5), 0.3 * sm(0.05, 0.5)
    exprs = [
        fm.Expression(
            float(mouth[i]),
            float(smile[i]),
            float(brow[i]),
            float(blink[i]),
            float(blink[i]),
            float(gx[i]),
            float(gy[i]),
        )
        for i in range(n)
    ]
    lm3 = [fm.landmarks_3d(idn, e) for e in exprs]

    def place(tx_a: float, ty_a: float, sc: float) -> tuple[list[fm.Pose], np.ndarray]:
        poses = [
            fm.Pose(
                float(yaw[i]),
                float(pitch[i]),
                float(roll[i]),
                float(scale[i] * sc),
                w / 2 + tx_a * float(tx_track[i]),
                h * 0.5 + ty_a * float(ty_track[i]),
            )
            for i in range(n)
        ]
        pts = np.stack([fm.project(lm3[i], poses[i]) for i in range(n)])
        return poses, pts

    sc = 1.0
    poses, pts = place(tx_amp, ty_amp, sc)
    for _ in range(20):  # keep every landmark inside the frame with a margin, shrinking motion/size
        lo, hi = pts.min(axis=(0, 1)), pts.max(axis=(0, 1))
        if lo[0] >= 6 and lo[1] >= 6 and hi[0] <= w - 7 and hi[1] <= h - 7:
            break
        tx_amp *= 0.75
        ty_amp *= 0.75
        sc *= 0.95
        poses, pts = place(tx_amp, ty_amp, sc)
    # background: static, or a slowly panning crop of a larger canvas
    pad = 48
    canvas = rd.draw_background(rng, h + 2 * pad, w + 2 * pad)
    if rng.random() < 0.5:
        ox = np.full(n, pad, dtype=int)
        oy = np.full(n, pad, dtype=int)
    else:
        ox = np.round(pad + pad * 0.9 * sm(0.02, 0.1, 2)).astype(int)
        oy = np.round(pad + pad * 0.5 * sm(0.02, 0.1, 2)).astype(int)
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
    gamma = float(rng.uniform(0.8, 1.25))
    sigma = float(rng.uniform(0.8, 4.0))
    occ = next((sg for sg in segs if sg["type"] == "occlusion"), None)
    occ_shape = None
    if occ is not None:
        face_side = float(np.max(pts[:, :, :].max(axis=(0, 1)) - pts.min(axis=(0, 1))))
        occ_shape = {
            "color": rng.uniform(0, 255, 3),
            "size": face_side * rng.uniform(0.45, 0.8),
            "dir": rng.choice([-1, 1]),
            "dy": rng.uniform(-0.3, 0.3),
            "aspect": rng.uniform(0.5, 1.5),
            "kind": int(rng.integers(0, 2)),
            "stripes": rng.random() < 0.4,
        }
    frames = np.empty((n, h, w, 3), np.uint8)
    boxes = np.empty((n, 4), np.float32)
    prev_pts = pts[0]
    for i in range(n):
        img = canvas[oy[i] : oy[i] + h, ox[i] : ox[i] + w].copy()
        geo = rd.build_geometry(idn, exprs[i], poses[i], app, lm3[i])
        rd.render_head(img, geo, app, light)
        lm = geo.landmarks
        if occ is not None and occ_shape is not None and _in(segs, "occlusion", i):
            a, b = int(occ["start"]), int(occ["end"])
            frac = (i - a + 0.5) / max(b - a, 1)
            fc = lm.mean(axis=0)
            span = occ_shape["size"] * 1.1
            cx = fc[0] + occ_shape["dir"] * (frac - 0.5) * 2 * span
            cy = fc[1] + occ_shape["dy"] * occ_shape["size"]
            sz = occ_shape["size"]
            if occ_shape["kind"] == 0:
                poly = cv2.boxPoints(((float(cx), float(cy)), (sz * 0.6, sz * occ_shape["aspect"]), 10.0))
            else:
                ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
                poly = np.stack([cx + sz * 0.35 * np.cos(ang), cy + sz * 0.5 * occ_shape["aspect"] * np.sin(ang)], 1)
            rd.draw_polygon_occluder(
                img,
                np.asarray(poly, np.float64),
                occ_shape["color"],
                np.random.default_rng(7 if occ_shape["stripes"] else 8),
            )
        if _in(segs, "motion_blur", i):
            vel = (lm - prev_pts).mean(axis=0)
            speed = float(np.linalg.norm(vel))
            angle = float(np.arctan2(vel[1], vel[0])) if speed > 0.5 else float(rng.uniform(0, np.pi))
            img = rd.motion_blur(img, float(np.clip(2.5 * speed, 0, 10) + rng.uniform(4, 9)), angle)
        if _in(segs, "low_light", i):
            img = rd.tone(img, gain * rng.uniform(0.18, 0.3), gamma * 1.2)
            img = rd.add_noise(img, sigma + 9.0, rng)
        else:
            img = rd.add_noise(rd.tone(img, gain, gamma), sigma, rng)
        frames[i] = img
        boxes[i] = detector_box(lm, rng, jitter=0.012)
        prev_pts = lm
    return VideoClip(frames, pts.astype(np.float32), boxes, segs, fps)


def video_id(index: int) -> str:
    """Id of synthetic video ``index``."""
    return f"synth_{index:04d}"


def _video_task(args: tuple[int, int, int, bool, str]) -> dict[str, Any]:
    seed, index, n_frames, hard, root = args
    clip = render_video(item_rng(seed, "video", index), n_frames, hard)
    vid = video_id(index)
    write_video_clip(root, vid, clip.frames, clip.landmarks, clip.boxes, clip.fps)
    h, w = clip.frames.shape[1:3]
    return {
        "id": vid,
        "n_frames": len(clip.frames),
        "width": int(w),
        "height": int(h),
        "fps": clip.fps,
        "split": "hard" if hard else "easy",
        "segments": clip.segments,
    }


# --- dataset -------------------------------------------------------------------------------------------


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _imap(fn: Callable[[_T], _R], tasks: Sequence[_T], workers: int, desc: str, progress: bool) -> Iterator[_R]:
    """``map(fn, tasks)`` in order, in ``workers`` spawned processes when > 1, with a tqdm bar.

    Spawned workers re-import the caller's main module: scripts calling this with workers > 1 need an
    ``if __name__ == "__main__":`` guard (the usual multiprocessing rule).
    """
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, unit="it")
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                yield fn(t)
                bar.update(1)
        else:
            chunk = max(1, min(32, len(tasks) // (4 * workers)))
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as ex:
                for r in ex.map(fn, tasks, chunksize=chunk):
                    yield r
                    bar.update(1)
    finally:
        bar.close()


def mean_shape_baseline(train_lm: np.ndarray, test_lm: np.ndarray) -> float:
    """Inter-ocular NME (fraction, outer corners 60/72) of predicting the mean training shape everywhere."""
    from ldeq_core.metrics import nme  # lazy: ldeq_core imports torch, which worker processes do not need

    mean = train_lm.mean(axis=0, keepdims=True)
    return float(nme(np.broadcast_to(mean, test_lm.shape), test_lm).mean())


def generate_dataset(
    out_root: str | os.PathLike[str],
    *,
    n_train: int = _DEFAULTS.synthetic.n_train,
    n_test: int = _DEFAULTS.synthetic.n_test,
    n_videos: int = _DEFAULTS.synthetic.n_videos,
    n_frames: int = _DEFAULTS.synthetic.n_frames,
    seed: int = _DEFAULTS.seed,
    workers: int = 1,
    progress: bool = True,
    image_format: str = "png",
) -> dict[str, Any]:
    """Write the synthetic stills (``out_root/wflw``) and videos (``out_root/wflw_v``); return a summary.

    Half the videos (rounded down) are "hard" (with hard segments), the rest "easy". Stills are PNG
    (lossless, ~105 kB each because of the sensor noise) or, with ``image_format="jpg"``, JPEG quality 95.
    The summary has the counts, ``mean_shape_nme`` (inter-ocular NME of the mean training shape on the test
    stills, a floor any learned model must beat) and wall times; all but the times are also written to
    ``out_root/summary.json`` (deterministic).
    """
    for name, v in (("n_train", n_train), ("n_test", n_test), ("n_videos", n_videos)):
        if int(v) < 0:
            raise ValueError(f"{name}: must be >= 0, got {v}")
    if n_videos > 0 and n_frames < 2:
        raise ValueError(f"n_frames: need at least 2 frames per video, got {n_frames}")
    if workers < 1:
        raise ValueError(f"workers: must be >= 1, got {workers}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {IMAGE_FORMATS}, got {image_format!r}")
    root = Path(out_root)
    wflw_root, v_root = root / "wflw", root / "wflw_v"
    summary: dict[str, Any] = {
        "seed": int(seed),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "n_videos": int(n_videos),
        "n_frames": int(n_frames),
        "image_format": image_format,
    }
    times: dict[str, float] = {}
    all_lm: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for split, count in (("train", n_train), ("test", n_test)):
        lms: list[np.ndarray] = []

        def items(
            split: str = split, count: int = count, lms: list[np.ndarray] = lms
        ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
            tasks = [(int(seed), split, i) for i in range(count)]
            for i, (img, lm) in enumerate(_imap(_still_task, tasks, workers, f"synth {split}", progress)):
                lms.append(lm)
                yield f"synth_{i:06d}.{image_format}", img, lm

        write_wflw(wflw_root, split, items())
        all_lm[split] = np.stack(lms) if lms else np.zeros((0, fm.N_LANDMARKS, 2), np.float32)
    times["stills_seconds"] = round(time.perf_counter() - t0, 2)
    if n_train > 0 and n_test > 0:
        summary["mean_shape_nme"] = mean_shape_baseline(all_lm["train"] / STILL_SIZE, all_lm["test"] / STILL_SIZE)
    t1 = time.perf_counter()
    hard_flags = [i >= n_videos - n_videos // 2 for i in range(n_videos)]
    tasks = [(int(seed), i, int(n_frames), hard_flags[i], os.fspath(v_root)) for i in range(n_videos)]
    index = list(_imap(_video_task, tasks, workers, "synth videos", progress))
    if n_videos > 0:
        easy = [str(r["id"]) for r in index if r["split"] == "easy"]
        hard = [str(r["id"]) for r in index if r["split"] == "hard"]
        write_text_atomic(v_root / "easy_video_IDs.txt", "".join(f"{v}\n" for v in easy))
        write_text_atomic(v_root / "hard_video_IDs.txt", "".join(f"{v}\n" for v in hard))
        write_text_atomic(
            v_root / "download_ranges.txt", "".join(f"{r['id']} 0 {int(r['n_frames']) - 1}\n" for r in index)
        )
        write_text_atomic(v_root / "index.json", json.dumps({"videos": index}, indent=1) + "\n")
        summary["easy_videos"], summary["hard_videos"] = easy, hard
    write_text_atomic(root / "summary.json", json.dumps(summary, indent=1) + "\n")
    times["videos_seconds"] = round(time.perf_counter() - t1, 2)
    times["total_seconds"] = round(time.perf_counter() - t0, 2)
    return {**summary, **times}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m pipelines.synthetic.generate --out DIR [--n-train N ...]``."""
    ap = argparse.ArgumentParser(description="Generate the synthetic WFLW / WFLW-V dataset.")
    ap.add_argument("--out", required=True, help="output root (gets wflw/ and wflw_v/)")
    ap.add_argument("--n-train", type=int, default=_DEFAULTS.synthetic.n_train)
    ap.add_argument("--n-test", type=int, default=_DEFAULTS.synthetic.n_test)
    ap.add_argument("--n-videos", type=int, default=_DEFAULTS.synthetic.n_videos)
    ap.add_argument("--n-frames", type=int, default=_DEFAULTS.synthetic.n_frames)
    ap.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--image-format", choices=IMAGE_FORMATS, default="png")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    summary = generate_dataset(
        a.out,
        n_train=a.n_train,
        n_test=a.n_test,
        n_videos=a.n_videos,
        n_frames=a.n_frames,
        seed=a.seed,
        workers=a.workers,
        progress=not a.no_progress,
        image_format=a.image_format,
    )
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
