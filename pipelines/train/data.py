"""From shard batches (``pipelines.shards``) to model tensors: decode, augment or resize, normalise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ldeq_core.geometry import to_model_input
from ldeq_core.layouts import get_layout
from pipelines.shards import decode_batch
from pipelines.train.augment import AugmentConfig, augment, resize_image, resize_points


def flip_perm_for(n_landmarks: int) -> np.ndarray | None:
    """The layout's flip permutation (98: WFLW, 68: 300-W), or None for an unknown layout (no flips)."""
    try:
        return get_layout(n_landmarks).flip_perm
    except ValueError:
        return None


def prepare_arrays(
    batch: Mapping[str, Any],
    out_size: int,
    *,
    n_landmarks: int,
    rng: np.random.Generator | None = None,
    aug: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a shard batch; augment each sample (when ``rng`` and ``aug`` are given) or just resize it.

    Returns ((N, out, out, 3) uint8 RGB, (N, L, 2) float32 landmarks in pixels of the ``out_size`` image).
    """
    dec = decode_batch(batch)
    images, lms = dec["image"], dec["landmarks"]
    if lms.shape[1] != n_landmarks:
        raise ValueError(f"shard batch has {lms.shape[1]} landmarks per face, the model predicts {n_landmarks}")
    perm = flip_perm_for(n_landmarks)
    out_img = np.empty((len(images), out_size, out_size, 3), np.uint8)
    out_lm = np.empty((len(images), n_landmarks, 2), np.float32)
    for i, (img, lm) in enumerate(zip(images, lms, strict=True)):
        if rng is not None and aug is not None and aug.enabled:
            a_img, a_lm = augment(img, lm, rng, aug, out_size, perm)
        else:
            a_img, a_lm = resize_image(img, out_size), resize_points(lm, img.shape[0], out_size)
        out_img[i], out_lm[i] = a_img, a_lm
    return out_img, out_lm


def to_tensors(
    images: np.ndarray, landmarks: np.ndarray, device: torch.device, *, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-normalised (N, 3, S, S) input and (N, L, 2) targets in normalised crop units (pixels / S)."""
    x = to_model_input(images, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    size = images.shape[1]
    y = torch.from_numpy(np.ascontiguousarray(landmarks, dtype=np.float32) / size).to(device)
    return x, y
