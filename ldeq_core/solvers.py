"""Fixed-point solvers for z = f(z): fixed-point iteration and Anderson acceleration (spec §2).

Two semantics are offered:

* **ours** (default): per-sample convergence masks (a converged sample stops changing and stops counting NFE),
  per-sample budgets in cell evaluations (NFE), one residual definition ``||f(z) - z|| / (||f(z)|| + 1e-5)``,
  and the returned state is always an ``f`` output (so heatmaps stay normalised).
* **upstream** (``SolverConfig.upstream``): the released code's behaviour, bit for bit in structure: batch-mean
  stop, ``upstream_max_iters`` loop iterations, fpi returns the last iterate, Anderson returns the
  lowest-residual *pre-image* X. The extra ``f`` application lives in :mod:`ldeq_core.deq`.

``f`` always maps a full batch (B, ...) to (B, ...) and must treat samples independently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ldeq_core.config import SOLVER_METHODS, SolverConfig

Fn = Callable[[torch.Tensor], torch.Tensor]
_EPS = 1e-5


@dataclass
class SolverStats:
    """Per-sample solver statistics; ``trace`` is (steps, B) of the stop-mode residual when requested."""

    nfe: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    converged: torch.Tensor
    trace: torch.Tensor | None = None

    def summary(self) -> dict[str, float]:
        """Batch means as plain floats, for logging."""
        return {
            "nfe_mean": float(self.nfe.float().mean()),
            "nfe_max": float(self.nfe.max()),
            "abs_residual_mean": float(self.abs_residual.mean()),
            "rel_residual_mean": float(self.rel_residual.mean()),
            "converged_frac": float(self.converged.float().mean()),
        }

    def with_extra_nfe(self, n: int) -> SolverStats:
        return SolverStats(self.nfe + n, self.abs_residual, self.rel_residual, self.converged, self.trace)


def residuals(fz: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample absolute ``||f(z) - z||`` and relative ``abs / (||f(z)|| + 1e-5)`` residuals, in float32.

    Low-precision states are upcast to float32 before subtracting; float64 states are subtracted in float64.
    """
    dtype = torch.promote_types(fz.dtype, torch.float32)
    fz_w = fz.detach().to(dtype).flatten(1)
    diff = (fz_w - z.detach().to(dtype).flatten(1)).norm(dim=1)
    return diff.float(), (diff / (fz_w.norm(dim=1) + _EPS)).float()


def _per_sample(
    value: int | float | torch.Tensor, batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    t = torch.as_tensor(value, device=device, dtype=dtype)
    return t.expand(batch).clone() if t.dim() == 0 else t.to(device=device, dtype=dtype)


def _mask(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return m.view(-1, *([1] * (like.dim() - 1)))


def solve(
    f: Fn,
    z0: torch.Tensor,
    cfg: SolverConfig,
    *,
    max_nfe: int | torch.Tensor | None = None,
    tol: float | torch.Tensor | None = None,
    trace: bool = False,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``z = f(z)`` from ``z0`` with the method in ``cfg`` (:data:`SOLVERS`); overrides may be per-sample
    tensors (B,) except in the upstream semantics, whose budget and tolerance are scalars."""
    entry = SOLVERS[cfg.method]
    if cfg.upstream:
        iters = cfg.upstream_max_iters if max_nfe is None else int(max_nfe)
        eps = cfg.tol if tol is None else float(tol)
        return entry.upstream(f, z0, iters, eps, cfg.stop_mode, trace=trace, **entry.options(cfg))
    budget = cfg.max_nfe if max_nfe is None else max_nfe
    stop_tol = cfg.tol if tol is None else tol  # float or per-sample tensor
    return entry.ours(f, z0, budget, stop_tol, cfg.stop_mode, trace=trace, **entry.options(cfg))


def fixed_point(
    f: Fn,
    z0: torch.Tensor,
    max_nfe: int | torch.Tensor,
    tol: float | torch.Tensor,
    stop_mode: str = "rel",
    *,
    trace: bool = False,
) -> tuple[torch.Tensor, SolverStats]:
    """Fixed-point iteration ``z <- f(z)`` with per-sample stopping; returns the last ``f`` output per sample."""
    b, dev = z0.shape[0], z0.device
    budget = _per_sample(max_nfe, b, dev, torch.long)
    eps = _per_sample(tol, b, dev, torch.float32)
    nfe = torch.zeros(b, dtype=torch.long, device=dev)
    conv = torch.zeros(b, dtype=torch.bool, device=dev)
    abs_r = torch.full((b,), float("inf"), device=dev)
    rel_r = abs_r.clone()
    history = []
    z = z0
    for _ in range(int(budget.max())):
        active = ~conv & (nfe < budget)
        if not bool(active.any()):
            break
        fz = f(z)
        a, r = residuals(fz, z)
        z = torch.where(_mask(active, z), fz, z)
        nfe += active.long()
        abs_r = torch.where(active, a, abs_r)
        rel_r = torch.where(active, r, rel_r)
        crit = rel_r if stop_mode == "rel" else abs_r
        conv |= active & (crit < eps)
        if trace:
            history.append(crit.clone())
    return z, SolverStats(nfe, abs_r, rel_r, conv, torch.stack(history) if history else None)


def _anderson_weights(xs: torch.Tensor, fs: torch.Tensor, lam: float) -> torch.Tensor:
    """Solve [[0, 1^T], [1, G G^T + lam I]] [mu; alpha] = [1; 0] for alpha (B, n), with G = F - X (B, n, D)."""
    dtype = torch.float64 if fs.dtype == torch.float64 else torch.float32
    g = (fs - xs).to(dtype)
    b, n, _ = g.shape
    h = torch.zeros(b, n + 1, n + 1, device=g.device, dtype=dtype)
    h[:, 0, 1:] = 1.0
    h[:, 1:, 0] = 1.0
    h[:, 1:, 1:] = g @ g.transpose(1, 2) + lam * torch.eye(n, device=g.device, dtype=dtype)
    rhs = torch.zeros(b, n + 1, 1, device=g.device, dtype=dtype)
    rhs[:, 0] = 1.0
    return torch.linalg.solve(h, rhs)[:, 1:, 0]


def anderson(
    f: Fn,
    z0: torch.Tensor,
    max_nfe: int | torch.Tensor,
    tol: float | torch.Tensor,
    stop_mode: str = "rel",
    *,
    m: int = 6,
    lam: float = 1e-4,
    beta: float = 1.0,
    trace: bool = False,
) -> tuple[torch.Tensor, SolverStats]:
    """Anderson acceleration with per-sample stopping; returns f(X) of each sample's lowest-residual iterate.

    NFE per sample: 1 for f(z0), 1 for f(f(z0)), then 1 per mixing step, up to the budget.
    """
    shape, b, dev = z0.shape, z0.shape[0], z0.device
    budget = _per_sample(max_nfe, b, dev, torch.long)
    eps = _per_sample(tol, b, dev, torch.float32)
    d = z0[0].numel()
    xs = torch.zeros(b, m, d, dtype=z0.dtype, device=dev)
    fs = torch.zeros_like(xs)
    nfe = torch.zeros(b, dtype=torch.long, device=dev)
    conv = torch.zeros(b, dtype=torch.bool, device=dev)
    best_abs = torch.full((b,), float("inf"), device=dev)
    best_rel = best_abs.clone()
    best_crit = best_abs.clone()
    best_f = z0.flatten(1).clone()
    history = []
    x = z0.flatten(1)
    for k in range(int(budget.max())):
        active = ~conv & (nfe < budget)
        if not bool(active.any()):
            break
        if k == 1:
            x = fs[:, 0].contiguous()  # a strided history view would give a compiled f a second graph
        elif k >= 2:
            n = min(k, m)
            alpha = _anderson_weights(xs[:, :n], fs[:, :n], lam).to(z0.dtype)
            x = beta * torch.einsum("bn,bnd->bd", alpha, fs[:, :n])
            if beta != 1.0:
                x = x + (1 - beta) * torch.einsum("bn,bnd->bd", alpha, xs[:, :n])
        fx = f(x.view(shape)).flatten(1)
        slot = k % m
        keep = active[:, None]
        xs[:, slot] = torch.where(keep, x, xs[:, slot])
        fs[:, slot] = torch.where(keep, fx, fs[:, slot])
        nfe += active.long()
        a, r = residuals(fx, x)
        crit = r if stop_mode == "rel" else a
        better = active & (crit < best_crit)
        best_f = torch.where(better[:, None], fx, best_f)
        best_abs = torch.where(better, a, best_abs)
        best_rel = torch.where(better, r, best_rel)
        best_crit = torch.where(better, crit, best_crit)
        conv |= active & (crit < eps)
        if trace:
            history.append(torch.where(active, crit, best_crit))
    stats = SolverStats(nfe, best_abs, best_rel, conv, torch.stack(history) if history else None)
    return best_f.view(shape), stats


def upstream_fixed_point(
    f: Fn,
    z0: torch.Tensor,
    max_iters: int,
    eps: float,
    stop_mode: str = "rel",
    *,
    trace: bool = False,
) -> tuple[torch.Tensor, SolverStats]:
    """Spec §2.1: up to ``max_iters`` steps, stop on the batch-mean residual, return the last iterate."""
    z, b = z0, z0.shape[0]
    history = []
    a = r = torch.full((b,), float("inf"), device=z0.device)
    steps = 0
    for _ in range(max_iters):
        z_new = f(z)
        a, r = residuals(z_new, z)
        z = z_new
        steps += 1
        crit = r if stop_mode == "rel" else a
        if trace:
            history.append(crit)
        if float(crit.mean()) < eps:
            break
    crit = r if stop_mode == "rel" else a
    conv = (crit.mean() < eps).expand(b).clone()
    nfe = torch.full((b,), steps, dtype=torch.long, device=z0.device)
    return z, SolverStats(nfe, a, r, conv, torch.stack(history) if history else None)


def upstream_anderson(
    f: Fn,
    z0: torch.Tensor,
    max_iters: int,
    eps: float,
    stop_mode: str = "rel",
    *,
    m: int = 6,
    lam: float = 1e-4,
    beta: float = 1.0,
    trace: bool = False,
) -> tuple[torch.Tensor, SolverStats]:
    """Spec §2.2: two initial evaluations, then up to ``max_iters`` mixing steps with a batch-mean stop.

    Returns the pre-image X with the lowest batch-mean residual. The relative residual divides by
    ``||F + 1e-5||`` (the 1e-5 added element-wise, as upstream does).
    """
    shape, b = z0.shape, z0.shape[0]
    xs = torch.zeros(b, m, z0[0].numel(), dtype=z0.dtype, device=z0.device)
    fs = torch.zeros_like(xs)
    xs[:, 0] = z0.flatten(1)
    fs[:, 0] = f(z0).flatten(1)
    xs[:, 1] = fs[:, 0]
    # contiguous, as in anderson: one input layout for a compiled f
    fs[:, 1] = f(fs[:, 0].view(shape).contiguous()).flatten(1)
    nfe = 2
    lowest = float("inf")
    lowest_x = z0.flatten(1)
    low_a = low_r = torch.full((b,), float("inf"), device=z0.device)
    history = []
    for k in range(2, max_iters + 2):
        n = min(k, m)
        alpha = _anderson_weights(xs[:, :n], fs[:, :n], lam).to(z0.dtype)
        slot = k % m
        x_new = beta * torch.einsum("bn,bnd->bd", alpha, fs[:, :n])
        if beta != 1.0:
            x_new = x_new + (1 - beta) * torch.einsum("bn,bnd->bd", alpha, xs[:, :n])
        xs[:, slot] = x_new
        fs[:, slot] = f(x_new.view(shape)).flatten(1)
        nfe += 1
        dtype = torch.promote_types(fs.dtype, torch.float32)
        a = (fs[:, slot].detach().to(dtype) - xs[:, slot].detach().to(dtype)).norm(dim=1)
        r = (a / (fs[:, slot].detach().to(dtype) + _EPS).norm(dim=1)).float()
        a = a.float()
        crit = r if stop_mode == "rel" else a
        if trace:
            history.append(crit)
        if float(crit.mean()) < lowest:
            lowest, lowest_x, low_a, low_r = float(crit.mean()), xs[:, slot].clone(), a, r
        if float(crit.mean()) < eps:
            break
    conv = torch.full((b,), lowest < eps, dtype=torch.bool, device=z0.device)
    nfe_t = torch.full((b,), nfe, dtype=torch.long, device=z0.device)
    return lowest_x.view(shape), SolverStats(nfe_t, low_a, low_r, conv, torch.stack(history) if history else None)


@dataclass(frozen=True)
class SolverEntry:
    """A registered solver: its per-sample form (``ours``), its ``upstream`` form, and the method-specific keyword
    arguments it takes from a :class:`~ldeq_core.config.SolverConfig`."""

    ours: Callable[..., tuple[torch.Tensor, SolverStats]]
    upstream: Callable[..., tuple[torch.Tensor, SolverStats]]
    options: Callable[[SolverConfig], dict[str, Any]]


def _anderson_options(cfg: SolverConfig) -> dict[str, Any]:
    return {"m": cfg.anderson_m, "lam": cfg.anderson_lam, "beta": cfg.anderson_beta}


SOLVERS: dict[str, SolverEntry] = {
    "fpi": SolverEntry(fixed_point, upstream_fixed_point, lambda cfg: {}),
    "anderson": SolverEntry(anderson, upstream_anderson, _anderson_options),
}
assert tuple(SOLVERS) == SOLVER_METHODS, "every SolverConfig.method needs a SOLVERS entry"
