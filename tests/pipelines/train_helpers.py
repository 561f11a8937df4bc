"""Helpers for the training tests: a tiny, learnable shard set (dots on a face-like shape) and cheap configs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipelines.shards import ShardWriter, encode_image, make_row, rows_to_table
from pipelines.synthetic.face_model import mean_shape_2d
from pipelines.train.config import TrainConfig

TINY_MODEL = {
    "preset": "tiny",
    "image_size": 64,
    "heatmap_size": 16,
    "injection_width": 16,
    "cell_base_width": 16,
    "cell_width_increment": 4,
    "solver": {"max_nfe": 4},
}


def render_face(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(256, 256, 3) uint8 image and its (98, 2) landmarks: the mean shape, randomly posed, drawn as dots."""
    shape = mean_shape_2d()
    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = 62 * rng.uniform(0.85, 1.15)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([128.0, 96.0]) + rng.uniform(-16, 16, size=2)
    lms = (shape @ rot.T) * scale + centre
    img = np.full((256, 256, 3), 30, np.uint8)
    img += rng.integers(0, 20, size=img.shape, dtype=np.uint8)
    cv2.ellipse(
        img,
        (int(centre[0]), int(centre[1] + 0.45 * scale)),
        (int(1.1 * scale), int(1.35 * scale)),
        float(np.rad2deg(angle)),
        0,
        360,
        (90, 70, 60),
        -1,
    )
    for x, y in lms:
        cv2.circle(img, (round(x * 4), round(y * 4)), 8, (250, 240, 200), -1, lineType=cv2.LINE_AA, shift=2)
    return img, lms.astype(np.float32)


def write_tiny_shards(root: Path, n_train: int = 64, n_val: int = 16, seed: int = 0) -> Path:
    """``root/{train,val}/part-*.parquet`` in the shard schema (synthetic dots, PNG); returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        writer = ShardWriter(root / split, rows_per_shard=max(1, n // 2))
        rows = []
        for i in range(n):
            img, lms = render_face(rng)
            rows.append(
                make_row(
                    encode_image(img, "png"),
                    lms,
                    np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                    np.array([0.0, 0.0, 255.0, 255.0]),
                    source_id=f"dots_{split}_{i:04d}",
                    frame_index=-1,
                    split=split,
                    dataset="synthetic",
                )
            )
        writer.write(rows_to_table(rows))
        writer.close()
    return root


def tiny_config(tmp: Path, **overrides: object) -> TrainConfig:
    """A 2-worker CPU config of the tiny model at 64 px with MLflow and Ray storage under ``tmp``."""
    base = {
        "model": dict(TINY_MODEL),
        "run_name": "tiny-test",
        "epochs": 2,
        "batch_size": 8,
        "val_batch_size": 8,
        "lr": 3e-3,
        "warmup_epochs": 0.5,
        "grad_mode": "one_step",
        "train_max_nfe": 3,
        "num_workers": 2,
        "cpus_per_worker": 0.5,
        "storage_path": str(tmp / "ray_results"),
        "mlflow_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "mlflow_artifacts": str(tmp / "mlartifacts"),
        "mlflow_experiment": "ldeq-test",
        "registered_model": "ldeq-test-model",
    }
    base.update(overrides)
    return TrainConfig.from_dict(base)
