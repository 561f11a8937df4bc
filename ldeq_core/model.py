"""The Landmark DEQ (spec §1): a stem computed once, and a DEQ cell whose equilibrium z* is the landmark heatmaps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ldeq_core.config import ModelConfig, SolverConfig
from ldeq_core.deq import deq_fixed_point
from ldeq_core.heatmaps import HeatmapNorm, soft_argmax
from ldeq_core.layers import ConvBlock, Hourglass, Stem
from ldeq_core.solvers import SolverStats, residuals


class DEQCell(nn.Module):
    """f(z; x): concat [z, x] -> 1x1 conv -> hourglass -> 1x1 head (no norm, no act) -> heatmap norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w, groups = cfg.cell_base_width, cfg.gn_groups
        self.inject = ConvBlock(cfg.z_width + cfg.injection_width, w, 1, norm=cfg.cell_norm, gn_groups=groups)
        self.hourglass = Hourglass(w, cfg.cell_width_increment, norm=cfg.cell_norm, groups=groups)
        self.head = ConvBlock(w, cfg.z_width, 1, norm="none", relu=False)
        self.norm = HeatmapNorm(cfg.heatmap_norm, cfg.beta, cfg.learn_beta)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.hourglass(self.inject(torch.cat([z.to(x.dtype), x], dim=1))))
        return self.norm(h)


@dataclass
class LDEQOutput:
    """``coords`` (B, L, 2) in [0, 1) crop units (x crop_size = crop pixels); ``sigma`` (B, L) spread;
    ``heatmaps`` the (possibly gradient-carrying) equilibrium; ``z_star`` its detached copy for warm starts."""

    coords: torch.Tensor
    sigma: torch.Tensor
    heatmaps: torch.Tensor
    z_star: torch.Tensor
    stats: SolverStats
    jac_loss: torch.Tensor | None = None


def init_weights(module: nn.Module) -> None:
    """Xavier-normal conv weights, zero biases; norm weights 1 and biases 0 (spec §1.2)."""
    if isinstance(module, nn.Conv2d):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class LandmarkDEQ(nn.Module):
    """Stem + DEQ cell + soft-argmax. ``forward(img, z0)`` solves for the heatmap equilibrium of each image."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg.injection_width, norm=cfg.stem_norm)
        self.cell = DEQCell(cfg)
        # With a raw (un-normalised) cell, the fixed softargmax normalisation is applied once after the DEQ.
        self.post_norm = HeatmapNorm("softargmax", cfg.beta) if cfg.heatmap_norm == "none" else nn.Identity()
        self.apply(init_weights)

    def z_shape(self, batch: int) -> tuple[int, int, int, int]:
        s = self.cfg.heatmap_size
        return (batch, self.cfg.z_width, s, s)

    def initial_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None):
        """All-zeros z0 (the only upstream ``z0_mode``)."""
        return torch.zeros(self.z_shape(batch), device=device, dtype=dtype or torch.float32)

    def forward(
        self,
        img: torch.Tensor,
        z0: torch.Tensor | None = None,
        *,
        solver: SolverConfig | None = None,
        max_nfe: int | torch.Tensor | None = None,
        tol: float | torch.Tensor | None = None,
        gamma: float | torch.Tensor = 0.0,
        z_prev: torch.Tensor | None = None,
        trace: bool = False,
    ) -> LDEQOutput:
        """Solve for the landmark heatmaps of ``img`` (B, 3, S, S), ImageNet-normalised.

        ``z0`` warm-starts the solver (zeros when None). With ``gamma > 0`` (a float or per-sample (B,) tensor)
        and ``z_prev`` the proximal RwR map ``z <- (f(z) + gamma z_prev) / (1 + gamma)`` is iterated instead of f.
        """
        x = self.stem(img)
        if z0 is None:
            z0 = self.initial_state(img.shape[0], img.device)
        if z0.shape != self.z_shape(img.shape[0]):
            raise ValueError(f"z0 has shape {tuple(z0.shape)}, expected {self.z_shape(img.shape[0])}")

        def f(z: torch.Tensor) -> torch.Tensor:
            return self.cell(z, x)

        fn = f
        g = torch.as_tensor(gamma, dtype=torch.float32, device=img.device)
        if z_prev is not None and bool((g > 0).any()):
            g = g.expand(img.shape[0]).view(-1, 1, 1, 1)

            def fn(z: torch.Tensor) -> torch.Tensor:
                return ((f(z) + g * z_prev) / (1.0 + g)).to(z.dtype)

        res = deq_fixed_point(
            fn, z0, solver or self.cfg.solver, self.cfg.grad, max_nfe=max_nfe, tol=tol, trace=trace, track=self.training
        )
        heat = self.post_norm(res.z)
        coords, sigma = soft_argmax(heat[:, : self.cfg.n_landmarks])
        return LDEQOutput(coords, sigma, heat, res.z.detach(), res.stats, res.jac_loss)

    def forward_fixed(
        self, img: torch.Tensor, z0: torch.Tensor, nfe: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exactly ``nfe`` fixed-point steps from ``z0`` with no stopping test: the RwR fast path.

        Equal to the fixed-point solver with tolerance 0 and budget ``nfe``, but free of host synchronisation, so
        it can be compiled or captured in a CUDA graph. Returns (coords (B, L, 2) in [0, 1), z (B, C, H, W), the
        relative residual of the last step (B,), defined as in the solvers).
        """
        if nfe < 1:
            raise ValueError(f"forward_fixed needs nfe >= 1, got {nfe}")
        x = self.stem(img)
        z_prev, z = z0, z0
        for _ in range(nfe):
            z_prev, z = z, self.cell(z, x)
        coords, _ = soft_argmax(self.post_norm(z)[:, : self.cfg.n_landmarks])
        return coords, z, residuals(z, z_prev)[1]
