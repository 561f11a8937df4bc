"""Test data for the serving tests: a tiny contractive checkpoint, synthetic videos with ground truth, bad files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ldeq_core.checkpoints import save_checkpoint
from ldeq_core.config import get_preset
from ldeq_core.geometry import landmarks_to_box
from ldeq_core.model import LandmarkDEQ
from ldeq_shared.video_io import write_video

IMAGE_SIZE = 64
TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HAMILTON = "video/short_hamilton_clip.mp4"


def tiny_model(seed: int = 0) -> LandmarkDEQ:
    """A 64-px tiny LDEQ made contractive in z (like a trained DEQ); full solves use tol=0 (always max_nfe)."""
    torch.manual_seed(seed)
    cfg = get_preset(
        "tiny",
        image_size=IMAGE_SIZE,
        heatmap_size=IMAGE_SIZE // 4,
        solver={"method": "anderson", "max_nfe": 6, "tol": 0.0},
    )
    model = LandmarkDEQ(cfg).eval()
    with torch.no_grad():
        model.cell.inject.conv.weight[:, : cfg.z_width].mul_(0.02)
    return model


def write_tiny_checkpoint(path: Path) -> Path:
    save_checkpoint(path, tiny_model(), {"metrics": {"val_nme_inter_ocular": 12.5}, "note": "test model"})
    return path


def synthetic_clip(
    seed: int, n_frames: int = 10, size: tuple[int, int] = (128, 96)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames RGB (T, H, W, 3), ground truth (T, 98, 2), boxes (T, 4)): a textured face-like blob drifting."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    shape = rng.uniform(-1, 1, size=(98, 2)) * np.array([18.0, 22.0])
    frames, gts = [], []
    for t in range(n_frames):
        centre = np.array([w / 2 + 8.0 * np.sin(t / 4.0), h / 2 + rng.normal(0, 0.5)])
        frame = base.copy()
        cv2.ellipse(frame, (int(centre[0]), int(centre[1])), (20, 26), 0, 0, 360, (200, 160, 140), -1)
        frames.append(frame)
        gts.append(centre + shape * (1.0 + 0.01 * t))
    gt = np.asarray(gts)
    boxes = np.stack([landmarks_to_box(g) for g in gt])
    return np.stack(frames), gt, boxes


def write_clip(
    path: Path, seed: int, n_frames: int = 10, size: tuple[int, int] = (128, 96)
) -> tuple[np.ndarray, np.ndarray]:
    """Write a synthetic clip to ``path``; return (ground truth, boxes)."""
    frames, gt, boxes = synthetic_clip(seed, n_frames, size)
    write_video(path, frames, fps=10.0)
    return gt, boxes


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def make_bad_videos(folder: Path, good: Path) -> dict[str, Path]:
    """Corrupt (garbage in the media data), truncated, zero-frame and text-renamed-.mp4 files."""
    data = good.read_bytes()
    mdat = data.find(b"mdat")
    corrupt = bytearray(data)
    corrupt[mdat + 8 : mdat + 8 + 4000] = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    out = {
        "corrupt": folder / "corrupt.mp4",
        "truncated": folder / "truncated.mp4",
        "zero": folder / "zero.mp4",
        "text": folder / "text.mp4",
    }
    out["corrupt"].write_bytes(bytes(corrupt))
    out["truncated"].write_bytes(data[: len(data) // 2])
    writer = cv2.VideoWriter(os.fspath(out["zero"]), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    writer.release()
    out["text"].write_text("this is not a video\n" * 50)
    return out
