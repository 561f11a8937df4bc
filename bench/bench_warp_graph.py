"""The crop-invariant RwR state warp on the hot path: warp inside the RwR step's CUDA graph vs before it (eager
``grid_sample``, the previous path) vs no warp, per batch size; and the tracker's whole ``step_crops`` (batched
theta computation on the host + the graphed step) with ``warp_state`` on and off.

Usage: python bench/bench_warp_graph.py --device cuda --model ldeq68-paper-w300-256px --out warp_graph.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from ldeq_core.checkpoints import load_checkpoint
from ldeq_core.geometry import to_model_input
from ldeq_core.inference import InferenceEngine, warp_state_batch
from ldeq_core.pretrained import pretrained_file
from ldeq_core.rwr import RwRConfig, RwRTracker, heatmap_warp_thetas

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import timed  # a sibling script (run from anywhere)


def jittered_affines(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, 2, 3) frame -> crop similarities of a ~200-px face with detector-like jitter (2 % shift, 2 % scale)."""
    s = size / 200.0 * rng.uniform(0.98, 1.02, n)
    a = rng.uniform(-0.02, 0.02, n)
    t = rng.uniform(-0.02, 0.02, (n, 2)) * size - 200.0 * s[:, None]
    return np.stack(
        [np.stack([s * np.cos(a), -s * np.sin(a), t[:, 0]], 1), np.stack([s * np.sin(a), s * np.cos(a), t[:, 1]], 1)],
        1,
    )


@torch.no_grad()
def bench(model_ref: str, batches: list[int], nfe: int, device: torch.device) -> list[dict]:
    path = Path(model_ref) if Path(model_ref).is_file() else pretrained_file(model_ref)
    model = load_checkpoint(path).model.to(device).eval()
    size, hm = model.cfg.image_size, model.cfg.heatmap_size
    engine = InferenceEngine(model)
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        img = to_model_input(rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8), device)
        z0 = engine.full_solve(img).z_star
        prev, cur = jittered_affines(rng, b, size), jittered_affines(rng, b, size)
        theta = torch.as_tensor(heatmap_warp_thetas(prev, cur, size, hm), dtype=torch.float32, device=device)
        t_none = timed(lambda img=img, z0=z0: engine.fixed_steps(img, z0, nfe), device)
        t_out = timed(lambda img=img, z0=z0, th=theta: engine.fixed_steps(img, warp_state_batch(z0, th), nfe), device)
        t_in = timed(lambda img=img, z0=z0, th=theta: engine.fixed_steps(img, z0, nfe, th), device)
        c_in = engine.fixed_steps(img, z0, nfe, theta)[0]
        c_out = engine.fixed_steps(img, warp_state_batch(z0, theta), nfe)[0]
        parity_px = float((c_in.float() - c_out.float()).abs().max()) * size
        row = {
            "batch": b,
            "nfe": nfe,
            "fps_no_warp": b / t_none,
            "fps_warp_outside_graph": b / t_out,
            "fps_warp_in_graph": b / t_in,
            "parity_in_vs_outside_px": parity_px,
        }
        for warp in (False, True):  # the tracker end to end: thetas on the host (batched), the graphed step
            tracker = RwRTracker(model, RwRConfig(budget_nfe=nfe, warp_state=warp), engine=engine)
            ids = list(range(b))
            affs = [jittered_affines(rng, b, size) for _ in range(2)]
            tracker.step_crops(img, ids, affines=affs[0])  # fresh: full solves
            k = [0]

            def step(
                tracker: RwRTracker = tracker, affs: list[np.ndarray] = affs, k: list[int] = k, img=img, ids=ids
            ) -> object:
                k[0] += 1
                return tracker.step_crops(img, ids, affines=affs[k[0] % 2])

            row[f"fps_tracker_warp_{'on' if warp else 'off'}"] = b / timed(step, device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="ldeq68-paper-w300-256px", help="a zoo name or a checkpoint path")
    p.add_argument("--batches", default="1,32,256")
    p.add_argument("--nfe", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    rows = bench(args.model, [int(b) for b in args.batches.split(",")], args.nfe, device)
    result = {"device": name, "model": args.model, "torch": torch.__version__, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
