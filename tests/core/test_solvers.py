"""Solvers: convergence, per-sample masks and budgets, NFE accounting, and the upstream semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import fsolve

from ldeq_core.config import SolverConfig
from ldeq_core.solvers import anderson, fixed_point, residuals, solve, upstream_anderson, upstream_fixed_point
from tests.core.toy import ToyCell


def _problem(batch: int = 4, rho: float = 0.9):
    cell = ToyCell(rho=rho)
    x = torch.randn(batch, 3, dtype=torch.float64)
    return cell, x, (lambda z: cell(z, x))


def _scipy_fixed_point(cell: ToyCell, x: torch.Tensor) -> np.ndarray:
    w, u, b = (p.detach().numpy() for p in (cell.w, cell.u, cell.b))
    out = []
    for xi in x.numpy():
        out.append(fsolve(lambda z, xi=xi: np.tanh(w @ z + u @ xi + b) - z, np.zeros(w.shape[0]), xtol=1e-13))
    return np.stack(out)


@pytest.mark.parametrize("method", ["fpi", "anderson"])
def test_converges_to_independent_root(method: str) -> None:
    cell, x, f = _problem()
    cfg = SolverConfig(method=method, max_nfe=300, tol=1e-12, stop_mode="abs")
    with torch.no_grad():
        z, stats = solve(f, torch.zeros(4, 6, dtype=torch.float64), cfg)
    np.testing.assert_allclose(z.numpy(), _scipy_fixed_point(cell, x), atol=1e-9)
    assert bool(stats.converged.all())
    assert float(stats.abs_residual.max()) < 1e-12


def test_anderson_needs_fewer_evaluations_than_fpi() -> None:
    # A linear map with a slow mode (eigenvalue 0.97): fpi needs ~log(tol)/log(0.97) steps, Anderson at most
    # dim + 2 (its lambda is absolute, so it is set small against this problem's residual scale).
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    w = q @ torch.diag(torch.tensor([0.97, 0.9, 0.8, -0.9, 0.5, 0.3], dtype=torch.float64)) @ q.T
    c = torch.randn(4, 6, dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return z @ w.T + c

    z0 = torch.zeros(4, 6, dtype=torch.float64)
    _, s_fpi = fixed_point(f, z0, 2000, 1e-8, "abs")
    z, s_and = anderson(f, z0, 2000, 1e-8, "abs", m=8, lam=1e-12)
    assert bool(s_fpi.converged.all()) and bool(s_and.converged.all())
    assert int(s_and.nfe.max()) <= 10 < 400 < int(s_fpi.nfe.min())
    exact = torch.linalg.solve(torch.eye(6, dtype=torch.float64) - w, c.T).T
    assert torch.allclose(z, exact, atol=1e-7)


@pytest.mark.parametrize("method", ["fpi", "anderson"])
def test_converged_sample_is_frozen_and_stops_counting(method: str) -> None:
    _, _, f = _problem()
    with torch.no_grad():
        z_star, _ = solve(
            f,
            torch.zeros(4, 6, dtype=torch.float64),
            SolverConfig(method=method, max_nfe=400, tol=1e-14, stop_mode="abs"),
        )
        z0 = torch.zeros(4, 6, dtype=torch.float64)
        z0[1] = z_star[1]  # sample 1 starts at its fixed point
        z, stats = solve(f, z0, SolverConfig(method=method, max_nfe=50, tol=1e-8, stop_mode="abs"))
    assert int(stats.nfe[1]) == 1
    assert torch.equal(z[1], f(z0)[1])  # one evaluation, then unchanged
    assert (stats.nfe[[0, 2, 3]] > 1).all()
    assert bool(stats.converged.all())


def test_per_sample_budgets_and_tolerances() -> None:
    _, _, f = _problem()
    z0 = torch.zeros(4, 6, dtype=torch.float64)
    budget = torch.tensor([1, 2, 3, 7])
    tol = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        z, stats = fixed_point(f, z0, budget, tol)
        expected = z0
        for _ in range(7):
            expected = f(expected)
    assert stats.nfe.tolist() == [1, 2, 3, 7]
    assert not bool(stats.converged.any())
    assert torch.allclose(z[3], expected[3])
    assert torch.allclose(z[0], f(z0)[0])


def test_residual_definition() -> None:
    z = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    fz = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    a, r = residuals(fz, z)
    assert a.tolist() == pytest.approx([5.0, 1.0])
    assert r.tolist() == pytest.approx([5.0 / 1e-5, 1.0 / (2**0.5 + 1e-5)])


def test_anderson_is_exact_on_a_scalar_linear_map() -> None:
    # f(z) = a z + c per sample: two history points determine the secant, so the first mix is the fixed point.
    a = torch.tensor([[0.5], [-0.3], [0.9]], dtype=torch.float64)
    c = torch.tensor([[1.0], [2.0], [-1.0]], dtype=torch.float64)
    fixed = c / (1 - a)

    def f(z: torch.Tensor) -> torch.Tensor:
        return a * z + c

    z0 = torch.zeros(3, 1, dtype=torch.float64)
    x_up, s_up = upstream_anderson(f, z0, max_iters=1, eps=0.0, stop_mode="abs", lam=1e-12)
    assert torch.allclose(x_up, fixed, atol=1e-8)
    assert s_up.nfe.tolist() == [3, 3, 3]
    z_ours, s_ours = anderson(f, z0, 3, 0.0, "abs", lam=1e-12)
    assert torch.allclose(z_ours, fixed, atol=1e-8)  # f(X) of the exact pre-image is the fixed point too
    assert s_ours.nfe.tolist() == [3, 3, 3]


def test_upstream_fpi_uses_batch_mean_stop_and_returns_last_iterate() -> None:
    # Sample 0 converges in one step, sample 1 never does; the batch mean decides when both stop.
    scale = torch.tensor([[0.0], [0.5]], dtype=torch.float64)

    def f(z: torch.Tensor) -> torch.Tensor:
        return scale * z + torch.tensor([[0.0], [1.0]], dtype=torch.float64)

    z0 = torch.zeros(2, 1, dtype=torch.float64)
    # abs residuals per step for sample 1: 1, 0.5, 0.25, ...; sample 0: 0 always. Mean: 0.5, 0.25, 0.125.
    z, stats = upstream_fixed_point(f, z0, max_iters=10, eps=0.2, stop_mode="abs", trace=True)
    assert stats.nfe.tolist() == [3, 3]
    assert z[1, 0].item() == pytest.approx(1 + 0.5 + 0.25)
    assert stats.trace.shape == (3, 2)
    assert bool(stats.converged.all())  # upstream's flag is the batch decision


def test_upstream_anderson_returns_lowest_residual_pre_image() -> None:
    _, _, f = _problem()
    z0 = torch.zeros(4, 6, dtype=torch.float64)
    with torch.no_grad():
        x, stats = upstream_anderson(f, z0, max_iters=6, eps=0.0, stop_mode="rel", trace=True)
        a, _ = residuals(f(x), x)
    assert stats.nfe.tolist() == [8] * 4
    means = stats.trace.mean(dim=1)
    assert torch.allclose(a, stats.abs_residual, rtol=1e-5)
    assert float(stats.rel_residual.mean()) == pytest.approx(float(means.min()))


def test_solve_dispatches_upstream_budgets() -> None:
    _, _, f = _problem()
    z0 = torch.zeros(4, 6, dtype=torch.float64)
    cfg = SolverConfig(method="fpi", upstream=True, upstream_max_iters=3, tol=0.0)
    _, stats = solve(f, z0, cfg)
    assert stats.nfe.tolist() == [3] * 4


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="method"):
        SolverConfig(method="broyden")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budgets"):
        SolverConfig(max_nfe=0)


def test_solve_dispatches_through_the_solvers_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from ldeq_core.config import SOLVER_METHODS
    from ldeq_core.solvers import SOLVERS, SolverEntry, solve

    assert tuple(SOLVERS) == SOLVER_METHODS
    with pytest.raises(ValueError, match=r"one of \['fpi', 'anderson'\]"):
        SolverConfig(method="newton")  # type: ignore[arg-type]
    calls: list[tuple[str, dict]] = []

    def recording(kind: str):
        def run(f, z0, budget, tol, stop_mode, *, trace=False, **opts):
            calls.append((kind, {"budget": budget, "tol": tol, "stop_mode": stop_mode, **opts}))
            return SOLVERS["fpi"].ours(f, z0, 1, 0.0)

        return run

    entry = SolverEntry(recording("ours"), recording("upstream"), lambda cfg: {"m": cfg.anderson_m})
    monkeypatch.setitem(SOLVERS, "anderson", entry)
    f = lambda z: 0.5 * z + 1.0  # noqa: E731
    z0 = torch.zeros(2, 3)
    solve(f, z0, SolverConfig(method="anderson", anderson_m=4, max_nfe=7, tol=1e-3))
    solve(f, z0, SolverConfig(method="anderson", anderson_m=4, upstream=True, upstream_max_iters=3), tol=0.5)
    assert calls == [
        ("ours", {"budget": 7, "tol": 1e-3, "stop_mode": "rel", "m": 4}),
        ("upstream", {"budget": 3, "tol": 0.5, "stop_mode": "rel", "m": 4}),
    ]
