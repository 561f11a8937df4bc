"""Helpers for the evaluate-stage tests: tiny videos, a tiny prepared layout with still shards, a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldeq_core import LandmarkDEQ, get_preset
from ldeq_core.checkpoints import save_checkpoint
from ldeq_shared.wflw_v import write_video_clip
from pipelines.formats.wflw import read_wflw
from pipelines.shards import ShardWriter, encode_image, make_row, rows_to_table
from pipelines.synthetic.generate import item_rng, render_video

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def tiny_model(seed: int = 0) -> LandmarkDEQ:
    """An untrained tiny LDEQ taking 64x64 crops (16x16 heatmaps)."""
    torch.manual_seed(seed)
    return LandmarkDEQ(get_preset("tiny", image_size=64, heatmap_size=16)).eval()


def write_videos(root: Path, specs: list[tuple[str, int, bool]], size: tuple[int, int] = (128, 96)) -> None:
    """Synthetic clips ``(id, n_frames, hard)`` in the WFLW-V layout under ``root``."""
    for i, (vid, n, hard) in enumerate(specs):
        clip = render_video(item_rng(0, "video", i), n, hard, size=size)
        write_video_clip(root, vid, clip.frames, clip.landmarks, clip.boxes, clip.fps)


def tiny_project(root: Path, *, n_test: int = 6, n_videos: int = 4, n_frames: int = 6) -> dict[str, Any]:
    """A project folder with a tiny synthetic ``data/raw`` (prepare stage), still test shards in ``data/shards``
    and an untrained checkpoint ``models/model.pt``; returns params for ``run_evaluate``."""
    from pipelines.prepare import prepare

    params: dict[str, Any] = {
        "data": {
            "source": "synthetic",
            "out": "data/raw",
            "seed": 0,
            "synthetic": {"n_train": 2, "n_test": n_test, "n_videos": n_videos, "n_frames": n_frames, "workers": 1},
        },
        "preprocess": {"out": "data/shards", "image_codec": "png"},
    }
    prep = prepare(params, base_dir=root, progress=False)
    still = prep.stills[0]
    items = read_wflw(prep.resolve(still.root), "test", check_images=False)
    writer = ShardWriter(root / "data" / "shards" / "test", rows_per_shard=4)
    rows = [
        make_row(
            encode_image(it.load_rgb(), "png"),
            it.landmarks,
            IDENTITY,
            np.array([0, 0, 256, 256.0]),
            source_id=it.relpath,
            frame_index=-1,
            split="test",
            dataset="synthetic",
        )
        for it in items
    ]
    writer.write(rows_to_table(rows))
    writer.close()
    save_checkpoint(root / "models" / "model.pt", tiny_model())
    return params
