"""Parameter counts and multiply-accumulate (MAC) counts of the stem and of one cell evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ldeq_core.config import ModelConfig
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
