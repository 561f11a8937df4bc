"""Gradients through the equilibrium: implicit vs finite differences and unrolled backprop, one-step, memory,
no leaked state, and the Hutchinson Jacobian regulariser."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from ldeq_core import deq as deq_module
from ldeq_core.config import GradConfig, SolverConfig, get_preset
from ldeq_core.deq import deq_fixed_point, jacobian_frobenius
from ldeq_core.model import LandmarkDEQ
from tests.core.toy import ToyCell

SOLVE = SolverConfig(method="anderson", max_nfe=200, tol=1e-13, stop_mode="abs")


def _loss(cell: ToyCell, x: torch.Tensor, weights: torch.Tensor, grad: GradConfig, solver=SOLVE) -> torch.Tensor:
    res = deq_fixed_point(lambda z: cell(z, x), torch.zeros(x.shape[0], 6, dtype=x.dtype), solver, grad)
    return (weights * res.z).sum() + 0.5 * res.z.square().sum()


@pytest.fixture
def toy():
    cell = ToyCell(rho=0.8)
    x = torch.randn(3, 3, dtype=torch.float64)
    weights = torch.randn(3, 6, dtype=torch.float64)
    return cell, x, weights


@pytest.mark.parametrize("adjoint", ["fpi", "anderson"])
def test_implicit_gradient_matches_finite_differences(toy, adjoint: str) -> None:
    cell, x, weights = toy
    grad = GradConfig(mode="implicit", adjoint_method=adjoint, adjoint_max_nfe=300, adjoint_tol=1e-14)
    loss = _loss(cell, x, weights, grad)
    params = [cell.w, cell.u, cell.b]
    analytic = torch.autograd.grad(loss, params)
    h = 1e-6
    for p, g in zip(params, analytic, strict=True):
        fd = torch.zeros_like(p)
        for idx in range(p.numel()):
            with torch.no_grad():
                flat = p.view(-1)
                orig = flat[idx].item()
                flat[idx] = orig + h
                up = _loss(cell, x, weights, grad).item()
                flat[idx] = orig - h
                down = _loss(cell, x, weights, grad).item()
                flat[idx] = orig
            fd.view(-1)[idx] = (up - down) / (2 * h)
        rel = (g - fd).norm() / fd.norm()
        assert rel < 1e-4, f"relative error {rel:.2e}"


def test_implicit_gradient_matches_long_unrolled_solve(toy) -> None:
    cell, x, weights = toy
    implicit = torch.autograd.grad(
        _loss(cell, x, weights, GradConfig(adjoint_max_nfe=300, adjoint_tol=1e-14)), [cell.w, cell.u, cell.b]
    )
    unrolled_solver = SolverConfig(method="fpi", max_nfe=150, tol=0.0)
    unrolled = torch.autograd.grad(
        _loss(cell, x, weights, GradConfig(mode="unrolled"), unrolled_solver), [cell.w, cell.u, cell.b]
    )
    for a, b in zip(implicit, unrolled, strict=True):
        assert (a - b).norm() / b.norm() < 1e-4


def test_one_step_gradient_is_the_gradient_of_one_tracked_step(toy) -> None:
    cell, x, weights = toy
    loss = _loss(cell, x, weights, GradConfig(mode="one_step"))
    g_one = torch.autograd.grad(loss, [cell.w])[0]
    with torch.no_grad():
        z_star, _ = deq_module.solve(lambda z: cell(z, x), torch.zeros(3, 6, dtype=torch.float64), SOLVE)
    z = cell(z_star, x)
    ref = torch.autograd.grad((weights * z).sum() + 0.5 * z.square().sum(), [cell.w])[0]
    assert torch.allclose(g_one, ref, atol=1e-10)
    g_impl = torch.autograd.grad(_loss(cell, x, weights, GradConfig()), [cell.w])[0]
    assert (g_one - g_impl).norm() > 1e-3 * g_impl.norm()  # they are different estimators


def test_no_state_survives_a_forward_without_backward(toy) -> None:
    cell, x, _ = toy
    res = deq_fixed_point(lambda z: cell(z, x), torch.zeros(3, 6, dtype=torch.float64), SOLVE, GradConfig())
    # Our autograd Function keeps the tracked step on its ctx (the grad_fn) only: no tensor hooks anywhere.
    assert res.z._backward_hooks is None
    tracked = weakref.ref(res.z.grad_fn.tracked)
    del res
    gc.collect()
    assert tracked() is None


def test_jacobian_regulariser_estimates_frobenius_norm(toy) -> None:
    cell, x, _ = toy
    z = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    fz = cell(z, x)
    torch.manual_seed(3)
    est = jacobian_frobenius(fz, z, n_samples=4000)
    exact = (
        sum(
            torch.autograd.functional.jacobian(lambda v, i=i: cell(v, x[i : i + 1]), z[i : i + 1].detach())
            .square()
            .sum()
            for i in range(3)
        )
        / fz.numel()
    )
    assert abs(est.item() - exact.item()) / exact.item() < 0.05
    (g,) = torch.autograd.grad(est, [cell.w])
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_jacobian_regulariser_is_returned_in_training(toy) -> None:
    cell, x, _ = toy
    for mode in ("implicit", "one_step"):
        res = deq_fixed_point(
            lambda z: cell(z, x),
            torch.zeros(3, 6, dtype=torch.float64),
            SOLVE,
            GradConfig(mode=mode, jac_reg_weight=1.0),
        )
        assert res.jac_loss is not None and res.jac_loss.requires_grad
    with torch.no_grad():
        res = deq_fixed_point(
            lambda z: cell(z, x),
            torch.zeros(3, 6, dtype=torch.float64),
            SOLVE,
            GradConfig(jac_reg_weight=1.0),
        )
    assert res.jac_loss is None


def _saved_bytes(model: LandmarkDEQ, img: torch.Tensor, max_nfe: int) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(img, max_nfe=max_nfe, tol=0.0)
    out.coords.sum().backward()
    return total


def test_training_memory_does_not_grow_with_the_forward_budget() -> None:
    cfg = get_preset("tiny", image_size=64, heatmap_size=16)
    img = torch.randn(2, 3, 64, 64)
    model = LandmarkDEQ(cfg).train()
    implicit = [_saved_bytes(model, img, n) for n in (4, 32)]
    assert implicit[0] == implicit[1]
    unrolled_model = LandmarkDEQ(cfg.replace(grad={"mode": "unrolled"}, solver={"method": "fpi"})).train()
    unrolled = [_saved_bytes(unrolled_model, img, n) for n in (4, 32)]
    assert unrolled[1] > 6 * unrolled[0]
    assert implicit[0] < 0.5 * unrolled[1]
