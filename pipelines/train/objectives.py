"""Training objectives and the learning-rate schedule.

Coordinate losses work on soft-argmax coordinates expressed in pixels of a 256-px crop (normalised coordinates
x 256), whatever the model's input size, so ``wing_w`` / ``wing_eps`` keep their meaning across presets.
Targets are clipped to the range a soft-argmax can reach, [0, (H - 1) / H] for H heatmap cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOSS_UNIT = 256.0  # coordinate losses are in pixels of a 256-px crop


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al., CVPR 2018), mean over all coordinates of the elementwise
    ``w ln(1 + |d| / eps)`` if ``|d| < w`` else ``|d| - C``, with ``C = w - w ln(1 + w / eps)``."""
    if w <= 0 or eps <= 0:
        raise ValueError(f"wing loss needs w > 0 and eps > 0, got w={w}, eps={eps}")
    d = (pred - target).abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(d < w, w * torch.log1p(d / eps), d - c).mean()


def coordinate_loss(
    coords: torch.Tensor, target: torch.Tensor, kind: str, *, wing_w: float = 10.0, wing_eps: float = 2.0
) -> torch.Tensor:
    """``l1`` (mean absolute error) or ``wing`` between (B, L, 2) normalised coordinates, in 256-px units."""
    pred, tgt = coords.float() * LOSS_UNIT, target.float() * LOSS_UNIT
    if kind == "l1":
        return (pred - tgt).abs().mean()
    if kind == "wing":
        return wing_loss(pred, tgt, wing_w, wing_eps)
    raise ValueError(f"unknown loss {kind!r} (l1 | wing)")


def reachable_targets(target: torch.Tensor, heatmap_size: int) -> torch.Tensor:
    """Clip normalised targets to [0, (H - 1) / H], the range of a soft-argmax over H cells."""
    return target.clamp(0.0, (heatmap_size - 1) / heatmap_size)


def gaussian_targets(target: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B, L, size, size) Gaussians of peak 1 and std ``sigma`` cells at cell ``target * size`` (x, y)."""
    cells = torch.arange(size, device=target.device, dtype=torch.float32)
    cx = target[..., 0].float()[..., None] * size  # (B, L, 1)
    cy = target[..., 1].float()[..., None] * size
    gx = torch.exp(-((cells - cx) ** 2) / (2 * sigma**2))  # (B, L, W)
    gy = torch.exp(-((cells - cy) ** 2) / (2 * sigma**2))  # (B, L, H)
    return gy[..., :, None] * gx[..., None, :]


def heatmap_loss(heatmaps: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean squared error between the first L heatmaps (peak-1 normalised) and Gaussian targets."""
    n = target.shape[1]
    hm = heatmaps[:, :n].float()
    return (hm - gaussian_targets(target, hm.shape[-1], sigma)).square().mean()


@dataclass(frozen=True)
class WarmupCosine:
    """LR multiplier per optimiser step: linear warm-up ``(step + 1) / warmup`` for ``step < warmup``, then
    ``min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2`` with ``p = (step - warmup) / (total - warmup)`` clipped to
    [0, 1] (or 1 after warm-up when ``cosine`` is False). Use with ``torch.optim.lr_scheduler.LambdaLR``."""

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0
    cosine: bool = True

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.cosine:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        p = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
