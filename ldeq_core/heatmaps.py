"""Heatmap normalisation (spec §1.6) and soft-argmax decoding with per-landmark spread (spec §1.7)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ldeq_core.config import HeatmapNormKind


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class HeatmapNorm(nn.Module):
    """Per-channel sharpening ``exp(beta * (h - max h))`` (peak exactly 1) or min-max ``linear`` scaling.

    With ``learn_beta`` the effective beta is ``softplus(raw)``, a registered, trained and saved parameter
    initialised so that the effective value equals ``beta`` (upstream never registered it; spec §10.5).
    """

    def __init__(self, kind: HeatmapNormKind = "softargmax", beta: float = 1.0, learn_beta: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.learn_beta = learn_beta
        if learn_beta:
            self.beta_raw = nn.Parameter(torch.tensor(_inverse_softplus(beta)))
        else:
            self.beta_fixed = float(beta)  # a constant: not part of the state dict

    @property
    def beta(self) -> torch.Tensor | float:
        return F.softplus(self.beta_raw) if self.learn_beta else self.beta_fixed

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return h
        flat = h.flatten(2)
        if self.kind == "softargmax":
            peak = flat.amax(dim=2, keepdim=True)
            beta = self.beta.to(h.dtype) if isinstance(self.beta, torch.Tensor) else self.beta
            return torch.exp(beta * (flat - peak)).view_as(h)
        if self.kind == "linear":
            lo = flat.amin(dim=2, keepdim=True)
            hi = flat.amax(dim=2, keepdim=True)
            return ((flat - lo) / (hi - lo + 1e-5)).view_as(h)
        raise ValueError(f"unknown heatmap norm {self.kind!r}")


def soft_argmax(heatmaps: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial expectation of non-negative heatmaps (B, L, H, W).

    Returns ``coords`` (B, L, 2) in (x, y) order, normalised so that ``coords * image_size`` is the crop
    pixel ``4 * E[col]`` (no +0.5 cell offset, spec §10.4), and ``sigma`` (B, L) =
    sqrt(0.5 Var_col + 0.5 Var_row) / H. Computed in float32 whatever the input dtype.
    """
    h, w = heatmaps.shape[-2:]
    hm = heatmaps.float()
    p = hm / (eps + hm.sum(dim=(2, 3), keepdim=True))
    cols = torch.arange(w, device=hm.device, dtype=torch.float32)
    rows = torch.arange(h, device=hm.device, dtype=torch.float32)
    px = p.sum(dim=2)  # (B, L, W) marginal over rows
    py = p.sum(dim=3)  # (B, L, H)
    ex = (px * cols).sum(-1)
    ey = (py * rows).sum(-1)
    var_x = (px * cols.square()).sum(-1) - ex.square()
    var_y = (py * rows.square()).sum(-1) - ey.square()
    sigma = torch.sqrt((0.5 * var_x + 0.5 * var_y).clamp_min(0.0)) / h
    coords = torch.stack([ex / w, ey / h], dim=-1)
    return coords, sigma
