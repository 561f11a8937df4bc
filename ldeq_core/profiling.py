"""Parameter counts and multiply-accumulate (MAC) counts of the stem and of one cell evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ldeq_core.config import ModelConfig
from ldeq_core.defaults import BUDGET_NFE
from ldeq_core.model import LandmarkDEQ


@dataclass(frozen=True)
class ModelCost:
    params_stem: int
    params_cell: int
    macs_stem: int
    macs_cell: int

    @property
    def params_total(self) -> int:
        return self.params_stem + self.params_cell

    def macs_per_frame(self, nfe: float) -> float:
        """MACs for one image: the stem once plus ``nfe`` cell evaluations."""
        return self.macs_stem + nfe * self.macs_cell

    def describe(self) -> str:
        return (
            f"parameters: {self.params_total / 1e6:.3f} M (stem {self.params_stem / 1e6:.3f} M, "
            f"cell {self.params_cell / 1e6:.3f} M)\n"
            f"MACs: stem {self.macs_stem / 1e9:.3f} G, one cell evaluation {self.macs_cell / 1e9:.3f} G"
        )


def _conv_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, acc: list[int]) -> None:
    assert isinstance(module, nn.Conv2d)
    k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
    acc.append(output.numel() * k)


def _count_macs(module: nn.Module, *args: torch.Tensor) -> int:
    acc: list[int] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o: _conv_macs(mod, i, o, acc))
        for m in module.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    return sum(acc)


def model_cost(cfg: ModelConfig) -> ModelCost:
    """Count parameters and per-image conv MACs (batch 1) on the meta device: no memory, no compute."""
    with torch.device("meta"):
        model = LandmarkDEQ(cfg).eval()
        img = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
        z = torch.zeros(model.z_shape(1))
        x = torch.zeros(1, cfg.injection_width, cfg.heatmap_size, cfg.heatmap_size)
    return ModelCost(
        params_stem=sum(p.numel() for p in model.stem.parameters()),
        params_cell=sum(p.numel() for p in model.cell.parameters()),
        macs_stem=_count_macs(model.stem, img),
        macs_cell=_count_macs(model.cell, z, x),
    )


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what :mod:`platform` reports."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rwr_step_seconds(
    model: LandmarkDEQ,
    frames: int = 200,
    warmup: int = 10,
    budget_nfe: int = BUDGET_NFE,
    frame_wh: tuple[int, int] = (640, 480),
) -> list[float]:
    """Wall seconds of each of ``frames`` RwR frames (fixed budget, batch 1, one face, crop + solve + map back) on a
    synthetic frame with a fixed centred box, after ``warmup`` frames (the first is the full solve)."""
    import time

    import numpy as np

    from ldeq_core.rwr import RwRConfig, RwRTracker

    tracker = RwRTracker(model, RwRConfig(mode="rwr", budget_nfe=budget_nfe, crop_size=model.cfg.image_size))
    w, h = frame_wh
    frame = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    side = 0.5 * min(w, h)
    box = np.array([[(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2]])
    for _ in range(warmup):
        tracker.step([frame], box, stream_ids=["bench"])
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        res = tracker.step([frame], box, stream_ids=["bench"])
        times.append(time.perf_counter() - start)
        if int(res.nfe[0]) != budget_nfe or bool(res.full_solve[0]):
            raise RuntimeError(f"benchmark frame was not a {budget_nfe}-NFE warm-started RwR step")
    return times
