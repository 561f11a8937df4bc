"""Losses and the LR schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.train.objectives import (
    WarmupCosine,
    coordinate_loss,
    gaussian_targets,
    heatmap_loss,
    reachable_targets,
    wing_loss,
)


def test_wing_loss_hand_values() -> None:
    # w = 10, eps = 2: |d| < 10 -> 10 ln(1 + |d| / 2); else |d| - C with C = 10 - 10 ln 6 = -7.9175946923
    d = torch.tensor([1.0, -1.0, 0.0, 10.0, -20.0])
    expected = [10 * math.log(1.5), 10 * math.log(1.5), 0.0, 10 + 7.917594692280550, 20 + 7.917594692280550]
    got = [float(wing_loss(v.view(1), torch.zeros(1))) for v in d]
    assert got == pytest.approx(expected, rel=1e-6)
    assert float(wing_loss(d, torch.zeros(5))) == pytest.approx(sum(expected) / 5, rel=1e-6)
    # continuous at |d| = w: both branches give 10 ln 6
    below = float(wing_loss(torch.tensor([10.0 - 1e-4]), torch.zeros(1)))
    assert below == pytest.approx(10 * math.log(6.0), abs=1e-3)


def test_wing_loss_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="w > 0"):
        wing_loss(torch.zeros(1), torch.zeros(1), w=0.0)


def test_coordinate_losses_are_in_256_px_units() -> None:
    target = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[1 / 256, 0.0], [0.0, -3 / 256]]])  # errors of 1 and 3 px in two coordinates
    assert float(coordinate_loss(pred, target, "l1")) == pytest.approx((1 + 3) / 4, rel=1e-6)
    wing = (10 * math.log(1.5) + 10 * math.log(2.5)) / 4
    assert float(coordinate_loss(pred, target, "wing")) == pytest.approx(wing, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        coordinate_loss(pred, target, "l2")


def test_reachable_targets() -> None:
    t = torch.tensor([[[-0.1, 0.5], [1.2, 15 / 16]]])
    out = reachable_targets(t, 16)
    assert out.tolist() == [[[0.0, 0.5], [15 / 16, 15 / 16]]]


def test_gaussian_targets_peak_and_width() -> None:
    t = torch.tensor([[[5 / 16, 3 / 16]]])  # x = cell 5, y = cell 3
    g = gaussian_targets(t, 16, sigma=1.5)
    assert g.shape == (1, 1, 16, 16)
    assert divmod(int(g.argmax()), 16) == (3, 5)
    assert float(g[0, 0, 3, 5]) == pytest.approx(1.0)
    assert float(g[0, 0, 3, 6]) == pytest.approx(math.exp(-1 / (2 * 1.5**2)), rel=1e-6)
    assert float(g[0, 0, 5, 7]) == pytest.approx(math.exp(-8 / (2 * 1.5**2)), rel=1e-6)
    assert float(heatmap_loss(g, t, 1.5)) == pytest.approx(0.0, abs=1e-12)
    assert float(heatmap_loss(torch.zeros_like(g), t, 1.5)) == pytest.approx(float(g.square().mean()))


def test_warmup_cosine_hand_values() -> None:
    f = WarmupCosine(warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert f(0) == pytest.approx(0.25)
    assert f(2) == pytest.approx(0.75)
    assert f(3) == pytest.approx(1.0)
    assert f(4) == pytest.approx(1.0)  # cosine starts at its top
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: (1 + cos(pi / 2)) / 2 = 0.5
    assert f(14) == pytest.approx(0.1)
    assert f(30) == pytest.approx(0.1)  # clipped after the end
    assert WarmupCosine(0, 10, 0.0)(5) == pytest.approx(0.5)
    assert WarmupCosine(2, 10, 0.0, cosine=False)(7) == 1.0


def test_schedule_drives_the_optimiser_lr() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=0.2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 6, 0.0))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # steps 0..5: 0.1, 0.2, then cosine over 4 steps: 0.2 (1 + cos(k pi / 4)) / 2 for k = 0..3
    expected = [0.1, 0.2] + [0.2 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected)
