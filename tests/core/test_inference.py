"""The inference policy and engine: device resolution, CPU fallback, parity of the fast path with the solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldeq_core.config import SolverConfig, get_preset
from ldeq_core.inference import InferenceEngine, InferencePolicy, precision_context, warp_state_batch
from ldeq_core.model import LandmarkDEQ
from ldeq_core.rwr import RwRConfig, RwRTracker, heatmap_warp_theta, heatmap_warp_thetas

SMALL = {"image_size": 64, "heatmap_size": 16, "n_landmarks": 98}


@pytest.fixture(scope="module")
def model() -> LandmarkDEQ:
    torch.manual_seed(0)
    return LandmarkDEQ(get_preset("tiny", **SMALL)).eval()


def test_auto_policy_on_cpu_is_plain_fp32_eager_and_cuda_features_fall_back_with_a_note() -> None:
    auto = InferencePolicy().resolve("cpu")
    assert (auto.precision, auto.channels_last, auto.cuda_graphs, auto.notes) == ("fp32", False, False, ())
    asked = InferencePolicy(precision="tf32", cuda_graphs=True, channels_last=True).resolve("cpu")
    assert (asked.precision, asked.cuda_graphs, asked.channels_last) == ("fp32", False, True)
    assert len(asked.notes) == 2 and "tf32" in asked.notes[0] and "CUDA graphs" in asked.notes[1]
    assert asked.describe() == "cpu: fp32, channels_last, eager (" + "; ".join(asked.notes) + ")"
    assert InferencePolicy(precision="bf16").resolve("cpu").precision == "bf16"  # explicit opt-in is kept
    compiled = InferencePolicy(compile=True).resolve("cpu")  # torch.compile works on a CPU too: kept when asked
    assert compiled.compile and compiled.static_batches == (512,)
    assert compiled.describe() == "cpu: fp32, contiguous, torch.compile (static batch 512), eager"
    plain = InferencePolicy(compile=True, static_batches=()).resolve("cpu")
    assert plain.describe() == "cpu: fp32, contiguous, torch.compile, eager"
    static = InferencePolicy(compile=True, dynamic_batch=False).resolve("cpu")
    assert static.describe() == "cpu: fp32, contiguous, torch.compile (static batch), eager"
    assert static.static_batches == () and auto.static_batches == ()  # every bucket static / nothing compiled


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((9, 0), ("fp16", True, True)), ((7, 5), ("fp32", True, True)), ((6, 1), ("fp32", False, True))],
)
def test_auto_policy_on_cuda_depends_on_the_compute_capability(monkeypatch, capability, expected) -> None:
    """sm80+ gets the measured fastest parity-passing path (fp16 + compile + graphs); older GPUs fp32, compiled from
    sm70 (inductor's Triton kernels need it)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    got = InferencePolicy().resolve("cuda")
    assert (got.precision, got.compile, got.cuda_graphs) == expected and not got.channels_last
    assert InferencePolicy(precision="tf32", compile=False).resolve("cuda").describe() == (
        "cuda: tf32, contiguous, CUDA graphs (RwR step)"
    )


def test_policy_validation_and_from_dict() -> None:
    p = InferencePolicy.from_dict(
        {"precision": "fp16", "graph_batches": [1, 8, 64], "cuda_graphs": None, "compile": False}
    )
    assert p.graph_batches == (1, 8, 64) and p.precision == "fp16" and p.cuda_graphs is None and p.compile is False
    assert InferencePolicy.from_dict(None) == InferencePolicy()
    assert InferencePolicy.from_dict({"static_batches": [256, 512]}).static_batches == (256, 512)
    assert InferencePolicy.from_dict({"static_batches": None}).static_batches == InferencePolicy().static_batches
    with pytest.raises(ValueError, match="static_batches"):
        InferencePolicy(static_batches=(1,))
    with pytest.raises(ValueError, match="unknown inference keys"):
        InferencePolicy.from_dict({"precison": "fp32"})
    with pytest.raises(ValueError, match="precision"):
        InferencePolicy(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="graph_batches"):
        InferencePolicy(graph_batches=(8, 4))


def test_precision_context_restores_the_global_tf32_switches() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with precision_context("bf16", "cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_engine_fixed_steps_equal_the_fixed_point_solver(model: LandmarkDEQ) -> None:
    img = torch.randn(4, 3, 64, 64)
    z0 = model.cell.norm(torch.randn(model.z_shape(4)))
    coords, z, rel = InferenceEngine(model).fixed_steps(img, z0, 2)
    with torch.no_grad():
        ref = model(img, z0, solver=SolverConfig(method="fpi", max_nfe=2, tol=0.0))
    assert torch.equal(coords, ref.coords) and torch.equal(z, ref.z_star)
    assert torch.equal(rel, ref.stats.rel_residual)


@pytest.mark.parametrize(("kx", "ky"), [(3, 0), (-2, 5)])
def test_state_warp_by_whole_cells_is_an_exact_shift_with_zeros_outside(kx: int, ky: int) -> None:
    # align_corners=True puts -1 and 1 on the first and last cell centres, so a translation of 2 k / (W - 1) in
    # normalised units samples cell j + k exactly (bilinear weights 1 and 0): out[..., i, j] = z[..., i + ky, j + kx]
    w = h = 16
    z = torch.randn(2, 3, h, w)
    theta = torch.tensor([[1.0, 0.0, 2.0 * kx / (w - 1)], [0.0, 1.0, 2.0 * ky / (h - 1)]]).expand(2, 2, 3)
    out = warp_state_batch(z, theta)
    ref = torch.zeros_like(z)
    ys, xs = slice(max(0, -ky), min(h, h - ky)), slice(max(0, -kx), min(w, w - kx))
    ref[..., ys, xs] = z[..., max(0, ky) : min(h, h + ky), max(0, kx) : min(w, w + kx)]
    # float32 grid arithmetic: sampling positions are exact up to a few ulps of W, weights of 0/1 up to ~1e-6
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * float(z.abs().max()))


def test_batched_warp_thetas_equal_the_per_stream_thetas() -> None:
    rng = np.random.default_rng(0)

    def crop_affine() -> np.ndarray:  # a similarity frame -> crop map with a random scale, angle and shift
        s, a = rng.uniform(0.2, 2.0), rng.uniform(-0.5, 0.5)
        return np.array(
            [
                [s * np.cos(a), -s * np.sin(a), rng.uniform(-200, 200)],
                [s * np.sin(a), s * np.cos(a), rng.uniform(-200, 200)],
            ]
        )

    prev, cur = np.stack([crop_affine() for _ in range(7)]), np.stack([crop_affine() for _ in range(7)])
    batched = heatmap_warp_thetas(prev, cur, 256, 64)
    for i in range(7):  # float64 products of 3x3 matrices with entries up to ~1e3: agreement to ~1e-12 relative
        np.testing.assert_allclose(batched[i], heatmap_warp_theta(prev[i], cur[i], 256, 64), rtol=1e-9, atol=1e-9)


def test_engine_fixed_steps_with_thetas_warp_the_start_then_step(model: LandmarkDEQ) -> None:
    img = torch.randn(3, 3, 64, 64)
    z0 = model.cell.norm(torch.randn(model.z_shape(3)))
    theta = torch.tensor([[[0.9, 0.1, 0.2], [-0.1, 1.1, -0.3]]]).expand(3, 2, 3).contiguous()
    engine = InferenceEngine(model)
    warped = engine.fixed_steps(img, z0, 2, theta)
    plain = engine.fixed_steps(img, warp_state_batch(z0, theta), 2)
    for a, b in zip(warped, plain, strict=True):
        assert torch.equal(a, b)
    unwarped = engine.fixed_steps(img, z0, 2)
    assert not torch.allclose(warped[1], unwarped[1])  # the warp changed the start, so it changed the result
    with pytest.raises(ValueError, match="thetas must have shape"):
        engine.fixed_steps(img, z0, 2, theta[:2])


def test_channels_last_engine_keeps_landmarks_within_parity(model: LandmarkDEQ) -> None:
    """The CPU variant a policy may pick (channels_last) stays within 0.1 px at 256 of fp32 eager."""
    img = torch.randn(3, 3, 64, 64)
    z0 = model.cell.norm(torch.randn(model.z_shape(3)))
    ref = InferenceEngine(model, InferencePolicy(channels_last=False)).fixed_steps(img, z0, 2)[0]
    cl = InferenceEngine(model, InferencePolicy(channels_last=True)).fixed_steps(img, z0, 2)[0]
    InferenceEngine(model)  # back to the default (contiguous) format for the other tests
    assert float((cl - ref).abs().max()) * 256 <= 0.1


def test_compiled_engine_matches_eager_and_compiles_once_for_every_batch_above_one(model: LandmarkDEQ) -> None:
    """torch.compile of the RwR step (inductor, on a CPU here): landmarks within parity of eager, and the dynamic
    batch dimension means batches 2 and 3 share one compiled graph (the engine's buckets do not recompile); a static
    bucket (4 here) gets its own batch-specialised graph."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = InferenceEngine(model)
    compiled = InferenceEngine(model, InferencePolicy(compile=True, static_batches=(4,)))
    for b in (2, 3, 4, 2):
        img = torch.randn(b, 3, 64, 64)
        z0 = model.cell.norm(torch.randn(model.z_shape(b)))
        ref, got = eager.fixed_steps(img, z0, 2), compiled.fixed_steps(img, z0, 2)
        assert float((got[0] - ref[0]).abs().max()) * 256 <= 0.1
        assert torch.allclose(got[1], ref[1], atol=1e-3) and torch.allclose(got[2], ref[2], rtol=1e-3, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 2  # dynamic (2, 3) + static 4; the second batch of 2 reuses


def _fitted_tiny_model() -> tuple[LandmarkDEQ, torch.Tensor]:
    """A tiny-preset model fitted (60 optimiser steps) to four images: trained-like peaked heatmaps, where the
    precision of the arithmetic, not the flatness of random-weight heatmaps, decides the landmark error."""
    from pipelines.train.config import TrainConfig
    from pipelines.train.loop import _train_step, parameter_groups

    cfg = TrainConfig.from_dict(
        {"model": {"preset": "tiny", "image_size": 64, "heatmap_size": 16}, "heatmap_loss_weight": 1.0}
    )
    torch.manual_seed(0)
    m = LandmarkDEQ(cfg.model_config()).train()
    opt = torch.optim.AdamW(parameter_groups(m, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 64, 64, generator=gen)
    target = torch.rand(4, m.cfg.n_landmarks, 2, generator=gen) * 0.6 + 0.2
    for _ in range(60):
        _train_step(m, opt, sched, x, target, cfg, 16, cfg.effective_train_nfe, torch.device("cpu"))
    return m.eval(), x


def test_fp16_is_far_closer_to_fp32_than_bf16_on_a_fitted_model() -> None:
    """Why the CUDA default is fp16, not bf16: 3 more mantissa bits. On a CPU (autocast) the fp16 landmark error
    must be several times below the bf16 one on the same inputs and warm start."""
    m, x = _fitted_tiny_model()
    with torch.no_grad():
        z0 = m(x).z_star
    ref = InferenceEngine(m, InferencePolicy(precision="fp32")).fixed_steps(x, z0, 2)[0]
    err = {
        p: float((InferenceEngine(m, InferencePolicy(precision=p)).fixed_steps(x, z0, 2)[0] - ref).abs().max())
        for p in ("fp16", "bf16")
    }
    assert 0 < err["fp16"] < err["bf16"] / 4


def test_tracker_warm_frames_use_the_engine_and_match_the_solver(model: LandmarkDEQ) -> None:
    """RwR through the engine: frame 0 a full solve, frames 1.. exactly budget steps from the previous z*."""
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.normal(size=(2, 3, 64, 64)).astype(np.float32)) for _ in range(3)]
    tracker = RwRTracker(model, RwRConfig(budget_nfe=2, crop_size=64))
    z = None
    for t, img in enumerate(images):
        res = tracker.step_crops(img, ["a", "b"])
        with torch.no_grad():
            ref = model(img) if t == 0 else model(img, z, solver=SolverConfig(method="fpi", max_nfe=2, tol=0.0))
        z = ref.z_star
        assert np.array_equal(res.coords, ref.coords.numpy() * 64)
        assert res.nfe.tolist() == ref.stats.nfe.tolist()
        assert np.allclose(res.rel_residual, ref.stats.rel_residual.numpy())
    assert res.nfe.tolist() == [2, 2] and not res.full_solve.any()


def test_tracker_rejects_an_engine_of_another_model(model: LandmarkDEQ) -> None:
    other = LandmarkDEQ(get_preset("tiny", **SMALL))
    with pytest.raises(ValueError, match="engine must wrap"):
        RwRTracker(model, engine=InferenceEngine(other))


@pytest.mark.parametrize("groups", [1, 4])
def test_group_norm_by_reduction_equals_aten_group_norm(groups: int) -> None:
    """The small-batch CUDA GroupNorm path is the same function as F.group_norm (checked here on a CPU)."""
    from ldeq_core.layers import GroupNorm, group_norm_by_reduction

    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 7) * 3 + 1
    gn = GroupNorm(groups, 8)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-1, 1)
    ref = torch.nn.functional.group_norm(x, groups, gn.weight, gn.bias, gn.eps)
    got = group_norm_by_reduction(x, groups, gn.weight, gn.bias, gn.eps)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(gn(x), ref)  # on a CPU the module keeps ATen's kernel
    assert isinstance(gn, torch.nn.GroupNorm) and set(gn.state_dict()) == {"weight", "bias"}
