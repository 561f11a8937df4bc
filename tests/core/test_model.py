"""The Landmark DEQ: parametrised forward/backward checks for every variant, decoding, norms, sizes, dtypes."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from ldeq_core.config import ModelConfig, get_preset
from ldeq_core.heatmaps import HeatmapNorm, soft_argmax
from ldeq_core.model import LandmarkDEQ
from ldeq_core.profiling import model_cost

SMALL = {"image_size": 64, "heatmap_size": 16}
VARIANTS = list(itertools.product([98, 68], ["fpi", "anderson"], ["implicit", "one_step"]))


@pytest.mark.parametrize(("n_landmarks", "solver", "grad"), VARIANTS)
def test_variant_forward_backward(n_landmarks: int, solver: str, grad: str) -> None:
    cfg = get_preset(
        "tiny", n_landmarks=n_landmarks, solver={"method": solver, "max_nfe": 4}, grad={"mode": grad}, **SMALL
    )
    model = LandmarkDEQ(cfg).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.coords.shape == (2, n_landmarks, 2)
    assert out.sigma.shape == (2, n_landmarks)
    assert torch.isfinite(out.coords).all() and ((out.coords >= 0) & (out.coords < 1)).all()
    out.coords.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"


def test_heatmaps_peak_at_one_per_channel() -> None:
    model = LandmarkDEQ(get_preset("tiny", **SMALL)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    peaks = out.heatmaps.flatten(2).amax(-1)
    assert torch.allclose(peaks, torch.ones_like(peaks))
    assert (out.heatmaps > 0).all()


def test_soft_argmax_on_hand_made_heatmaps() -> None:
    h = torch.zeros(1, 2, 16, 16)
    h[0, 0, 5, 9] = 1.0  # row 5, col 9
    h[0, 1, 4, 2] = 1.0  # two equal peaks on row 4 at cols 2 and 6
    h[0, 1, 4, 6] = 1.0
    coords, sigma = soft_argmax(h, eps=0.0)
    assert coords[0, 0].tolist() == pytest.approx([9 / 16, 5 / 16])
    assert coords[0, 1].tolist() == pytest.approx([4 / 16, 4 / 16])
    assert sigma[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    # Var_col = 4, Var_row = 0 -> sigma = sqrt(0.5 * 4) / 16
    assert sigma[0, 1].item() == pytest.approx((0.5 * 4) ** 0.5 / 16)


def test_heatmap_norm_modes() -> None:
    h = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    sharp = HeatmapNorm("softargmax", beta=0.5)(h)
    assert torch.allclose(sharp, torch.exp(0.5 * (h - 4.0)))
    lin = HeatmapNorm("linear")(h)
    assert torch.allclose(lin, h / (4 + 1e-5))


def test_learned_beta_is_registered_saved_and_trained() -> None:
    cfg = get_preset("tiny", learn_beta=True, beta=1.5, **SMALL)
    model = LandmarkDEQ(cfg).train()
    assert "cell.norm.beta_raw" in model.state_dict()
    assert float(model.cell.norm.beta.detach()) == pytest.approx(1.5)
    model(torch.randn(1, 3, 64, 64)).coords.sum().backward()
    assert model.cell.norm.beta_raw.grad is not None and model.cell.norm.beta_raw.grad != 0
    fixed = LandmarkDEQ(get_preset("tiny", **SMALL))
    assert not any("beta" in k for k in fixed.state_dict())


def test_paper_preset_size_matches_the_spec() -> None:
    # Spec §1.9: 0.292 M + 16.240 M parameters, ~1.98 GMAC stem, ~12.4 GMAC per cell evaluation.
    cost = model_cost(get_preset("paper"))
    assert cost.params_stem / 1e6 == pytest.approx(0.292, abs=5e-4)
    assert cost.params_cell / 1e6 == pytest.approx(16.240, abs=5e-4)
    assert cost.macs_stem / 1e9 == pytest.approx(1.98, abs=0.01)
    assert cost.macs_cell / 1e9 == pytest.approx(12.4, abs=0.05)
    assert cost.macs_per_frame(2) == cost.macs_stem + 2 * cost.macs_cell


def test_hourglass_parameter_count_matches_hand_count() -> None:
    # Spec §1.5: the described hourglass with (w=16, i=8), norm affines included, has 225,408 parameters.
    from ldeq_core.layers import Hourglass

    assert sum(p.numel() for p in Hourglass(16, 8).parameters()) == 225_408


def test_channels_last_and_bf16_autocast() -> None:
    model = LandmarkDEQ(get_preset("tiny", **SMALL)).eval()
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(img.double(), max_nfe=3, tol=0.0).coords
        ref = model(img, max_nfe=3, tol=0.0).coords
        cl = model.to(memory_format=torch.channels_last)(
            img.to(memory_format=torch.channels_last), max_nfe=3, tol=0.0
        ).coords
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = model(img, max_nfe=3, tol=0.0).coords
    # channels_last only changes the fp32 reduction order (which kernels torch picks depends on the CPU), so its
    # error against a float64 oracle must be of the same order as the contiguous fp32 path's own error; the floor
    # is 100 fp32 ulps of the unit-range coordinates for the case where the contiguous path happens to be exact.
    err_ref = (ref.double() - ref64).abs().max().item()
    err_cl = (cl.double() - ref64).abs().max().item()
    assert err_cl <= 10 * err_ref + 100 * torch.finfo(torch.float32).eps, (err_cl, err_ref)
    assert bf.dtype == torch.float32 and torch.isfinite(bf).all()
    # Random weights give flat, ill-conditioned heatmaps; parity on trained models is a benchmark (bench/).
    assert (bf - ref).abs().mean() < 0.03


def test_config_round_trip_and_errors() -> None:
    cfg = get_preset("tiny", n_landmarks=68)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="z0 has shape"):
        LandmarkDEQ(get_preset("tiny", **SMALL))(torch.randn(1, 3, 64, 64), torch.zeros(1, 2, 3, 4))


def test_forward_fixed_equals_the_fixed_point_solver_with_zero_tolerance() -> None:
    model = LandmarkDEQ(get_preset("tiny", **SMALL)).eval()
    img = torch.randn(3, 3, 64, 64)
    z0 = model.cell.norm(torch.randn(model.z_shape(3)))
    with torch.no_grad():
        fast, z_fast, rel = model.forward_fixed(img, z0, 3)
        out = model(img, z0, solver=model.cfg.solver.__class__(method="fpi", max_nfe=3, tol=0.0))
    assert torch.equal(fast, out.coords) and torch.equal(z_fast, out.z_star)
    assert torch.equal(rel, out.stats.rel_residual)
    assert out.stats.nfe.tolist() == [3, 3, 3]


@pytest.mark.parametrize("solver", ["fpi", "anderson"])
def test_compiled_cell_gets_one_graph_per_grad_context(solver: str) -> None:
    """A compiled cell must not recompile inside a solve: every call of f in one grad context sees the same input
    strides, so a one-step training step compiles exactly two graphs (the no-grad solve, the tracked step) and a
    second step none (a strided Anderson history view once added a third)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    cfg = get_preset("tiny", solver={"method": solver, "max_nfe": 4, "tol": 0.0}, grad={"mode": "one_step"}, **SMALL)
    model = LandmarkDEQ(cfg).train()
    counter = CompileCounter()
    model.cell.compile(backend=counter)
    for _ in range(2):
        out = model(torch.randn(2, 3, 64, 64))
        out.coords.sum().backward()
        assert int(out.stats.nfe.max()) >= 4  # the solve really ran several cell evaluations
    assert counter.frame_count == 2
    torch._dynamo.reset()
