"""The DEQ layer: forward solve plus gradients through the equilibrium (spec §2.5).

Gradient modes (``GradConfig.mode``):

* ``implicit``: implicit differentiation. The forward solve runs without autograd; one tracked step
  ``z_out = f(z*)`` carries the graph to the parameters, and a custom autograd function replaces the incoming
  gradient g by the solution of the adjoint equation ``y = J^T y + g`` (J = df/dz at z*). No tensor hooks are
  registered, so nothing leaks when ``backward`` is never called, and only parameter leaves of the tracked step
  receive gradients (DDP-safe: the adjoint vector-Jacobian products never touch parameter ``.grad``).
* ``one_step``: phantom gradient, k damped tracked steps from z* (k=1, tau=1 is the one-step / JFB gradient).
* ``unrolled``: backpropagation through every fixed-point iteration (a baseline; memory grows with the budget).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ldeq_core.config import GradConfig, SolverConfig
from ldeq_core.solvers import SolverStats, fixed_point, solve

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DEQResult:
    z: torch.Tensor
    stats: SolverStats
    jac_loss: torch.Tensor | None = None


class _Tracked:
    """Holds the tracked step (z_in -> z_out) for the adjoint solve; freed together with the autograd graph."""

    def __init__(self, z_in: torch.Tensor, z_out: torch.Tensor, grad: GradConfig) -> None:
        self.z_in, self.z_out, self.grad = z_in, z_out, grad


class _ImplicitGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z_out: torch.Tensor, tracked: _Tracked) -> torch.Tensor:  # type: ignore[override]
        ctx.tracked = tracked
        return z_out.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        t: _Tracked = ctx.tracked
        ctx.tracked = None
        y = solve_adjoint(t.z_out, t.z_in, g, t.grad)
        return y, None


def solve_adjoint(z_out: torch.Tensor, z_in: torch.Tensor, g: torch.Tensor, grad: GradConfig) -> torch.Tensor:
    """Solve ``y = J^T y + g`` with vector-Jacobian products through the recorded step ``z_out = f(z_in)``."""

    def step(y: torch.Tensor) -> torch.Tensor:
        (vjp,) = torch.autograd.grad(z_out, z_in, y, retain_graph=True)
        return vjp + g

    cfg = SolverConfig(method=grad.adjoint_method, max_nfe=grad.adjoint_max_nfe, tol=grad.adjoint_tol)
    y, _ = solve(step, torch.zeros_like(g), cfg)
    return y


def jacobian_frobenius(z_out: torch.Tensor, z_in: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
    """Hutchinson estimate of ``||J||_F^2 / numel(z)`` per batch, differentiable (create_graph=True)."""
    total = z_out.new_zeros((), dtype=torch.float32)
    for _ in range(n_samples):
        v = torch.randn_like(z_out)
        (vjp,) = torch.autograd.grad(z_out, z_in, v, create_graph=True, retain_graph=True)
        total = total + vjp.float().square().sum() / z_out.numel()
    return total / n_samples


def deq_fixed_point(
    f: Fn,
    z0: torch.Tensor,
    solver: SolverConfig,
    grad: GradConfig,
    *,
    max_nfe: int | torch.Tensor | None = None,
    tol: float | torch.Tensor | None = None,
    trace: bool = False,
    track: bool | None = None,
) -> DEQResult:
    """Find z* = f(z*) from ``z0`` and return it with gradients as configured.

    Gradients are built only when autograd is enabled (and ``track`` is not False); otherwise this is pure
    inference. In ``upstream`` solver
    mode the result is f(z*) (one extra evaluation, counted in NFE) unless ``upstream_one_less_step``.
    """
    needs_grad = torch.is_grad_enabled() if track is None else track and torch.is_grad_enabled()
    if needs_grad and grad.stochastic_budget and max_nfe is None:
        top = solver.upstream_max_iters if solver.upstream else solver.max_nfe
        max_nfe = random.randint(1, top)

    if needs_grad and grad.mode == "unrolled":
        budget = solver.max_nfe if max_nfe is None else max_nfe
        z, stats = fixed_point(f, z0, budget, solver.tol if tol is None else tol, solver.stop_mode, trace=trace)
        return DEQResult(z, stats)

    with torch.no_grad():
        z_star, stats = solve(f, z0, solver, max_nfe=max_nfe, tol=tol, trace=trace)

    upstream_extra = solver.upstream and not solver.upstream_one_less_step
    if not needs_grad:
        if upstream_extra:
            with torch.no_grad():
                z_star = f(z_star)
            stats = stats.with_extra_nfe(1)
        return DEQResult(z_star, stats)

    z_in = z_star.detach()
    want_jac = grad.jac_reg_weight > 0
    if grad.mode == "implicit" or want_jac:
        z_in = z_in.requires_grad_()
    if grad.mode == "implicit":
        z_out = f(z_in)
        jac = jacobian_frobenius(z_out, z_in, grad.jac_reg_samples) if want_jac else None
        z = _ImplicitGrad.apply(z_out, _Tracked(z_in, z_out, grad))
        return DEQResult(z, stats.with_extra_nfe(1), jac)

    z = z_in
    jac = None
    for k in range(grad.phantom_steps):
        fz = f(z)
        if k == 0 and want_jac:
            jac = jacobian_frobenius(fz, z_in, grad.jac_reg_samples)
        z = fz if grad.phantom_tau == 1.0 else grad.phantom_tau * fz + (1 - grad.phantom_tau) * z
    return DEQResult(z, stats.with_extra_nfe(grad.phantom_steps), jac)
