"""A small contractive cell for solver and gradient tests: f(z) = tanh(W z + U x + b) with ||W||_2 = rho."""

from __future__ import annotations

import torch
from torch import nn


class ToyCell(nn.Module):
    def __init__(self, dim: int = 6, in_dim: int = 3, rho: float = 0.7, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        w = torch.randn(dim, dim, generator=g, dtype=dtype)
        w = w * (rho / torch.linalg.matrix_norm(w, ord=2))
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(torch.randn(dim, in_dim, generator=g, dtype=dtype))
        self.b = nn.Parameter(0.1 * torch.randn(dim, generator=g, dtype=dtype))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.w.T + x @ self.u.T + self.b)
