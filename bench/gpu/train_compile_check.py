"""Where do NaNs come from in the compiled bf16 training step? Same weights and batch, eager vs torch.compile
backends (aot_eager = graph capture without inductor's code generation, inductor = the real thing), fp32/TF32 and
bf16; per step: loss, gradient norm, and which tensors are non-finite. A diagnostic for the GPU machine."""

from __future__ import annotations

import json
import os
import sys

import torch

from ldeq_core.model import LandmarkDEQ
from pipelines.train.config import TrainConfig
from pipelines.train.loop import coordinate_loss, parameter_groups, reachable_targets

PRESET, SIZE, DEVICE = (
    os.environ.get("CHECK_PRESET", "paper"),
    int(os.environ.get("CHECK_SIZE", "256")),
    os.environ.get("CHECK_DEVICE", "cuda"),
)


def run(backend: str, bf16: bool, steps: int = 4, batch: int = int(os.environ.get("CHECK_BATCH", "32"))) -> dict:
    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": PRESET, "image_size": SIZE, "heatmap_size": SIZE // 4},
            "grad_mode": "one_step",
            "train_max_nfe": 4,
        }
    )
    torch.manual_seed(0)
    model = LandmarkDEQ(cfg.model_config()).to(DEVICE).train()
    if backend != "eager":
        torch._dynamo.reset()
        model.cell.compile(backend=backend)
    opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(batch, 3, SIZE, SIZE, device=DEVICE, generator=gen)
    target = reachable_targets(torch.rand(batch, 98, 2, device=DEVICE, generator=gen) * 0.5 + 0.25, SIZE // 4)
    log = []
    for step in range(steps):
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=bf16):
            out = model(x, max_nfe=cfg.effective_train_nfe)
        loss = coordinate_loss(out.coords, target, cfg.loss, wing_w=cfg.wing_w, wing_eps=cfg.wing_eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else 1e9)
        opt.step()
        log.append(
            {
                "step": step,
                "loss": float(loss),
                "grad_norm": float(norm),
                "heatmaps_finite": bool(torch.isfinite(out.heatmaps).all()),
                "coords_finite": bool(torch.isfinite(out.coords).all()),
                "nfe": float(out.stats.nfe.float().mean()),
                "nonfinite_grads": bad[:6] + ([f"... {len(bad)} in all"] if len(bad) > 6 else []),
            }
        )
    return {"backend": backend, "bf16": bf16, "steps": log}


def main() -> None:
    combos = [
        tuple(c.split(":"))
        for c in os.environ.get("CHECK_COMBOS", "eager:1,aot_eager:1,inductor:1,inductor:0").split(",")
    ]
    results = []
    for backend, bf16 in combos:
        try:
            results.append(run(backend, bf16 == "1"))
        except Exception as exc:  # keep the other combinations
            results.append({"backend": backend, "bf16": bf16, "error": repr(exc)[:400]})
        print(json.dumps(results[-1]), flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
