"""ONNX export: parity with torch and CPU frames/s of torch vs onnxruntime (BENCHMARKS.md section 20).

    python bench/bench_onnx.py [--threads 2] [--repeats 7] [--iters 50] [--video CLIP.mp4]
                               [--out bench/results/onnx_cpu.json]

For the zoo model ``ldeq68-small-w300-128px`` (128 px) and a random ``tiny`` model at 256 px (98 points; its
state's input weights scaled by 0.1 so that the cell is contractive like a trained one; the parity of the raw random
model is recorded too): export both graphs
(:mod:`ldeq_core.onnx_export`, timed), check landmark parity against torch, then time at batch 1 on the CPU

* the RwR step at 2 NFE (``forward_fixed`` vs the ``rwr`` graph), from the state of a full solve;
* the per-frame full solve (torch: the model's Anderson solver with its early stop; ONNX: the same solver unrolled
  to the fixed budget, so it always pays every cell evaluation);
* ``RwRTracker.step`` on a 640x480 frame with a moving box and the state warp (crop + warp + model + map back: what
  ``ldeq track`` does per face), with the default torch engine and with :class:`~ldeq_core.onnx_runtime.OnnxEngine`.

Each measurement is ``--repeats`` blocks of ``--iters`` calls; torch and onnxruntime blocks alternate so they share
the machine's load; the median block median is reported with the spread, and the process CPU time per call (all
threads: less sensitive to other jobs on the machine than wall time). ``--video`` also times ``ldeq track``
end to end (``ldeq_cli.track.track_file``, no overlay) on a real clip with both runtimes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldeq_core.config import get_preset
from ldeq_core.model import LandmarkDEQ
from ldeq_core.onnx_export import check_parity, export_model, parity_inputs
from ldeq_core.onnx_runtime import OnnxEngine, OnnxGraph
from ldeq_core.pretrained import load_pretrained
from ldeq_core.profiling import cpu_name
from ldeq_core.rwr import RwRConfig, RwRTracker

ZOO = "ldeq68-small-w300-128px"


def _blocks(fns: dict[str, Callable[[], Any]], repeats: int, iters: int) -> dict[str, dict[str, Any]]:
    """Alternating timed blocks of each function: the median ms per call of each block, then their summary."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    per: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times = []
            cpu0 = time.process_time()
            for _ in range(iters):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            per[name].append(1000 * float(np.median(times)))
            cpu[name].append(1000 * (time.process_time() - cpu0) / iters)
    return {
        k: {
            "ms_median": round(float(np.median(v)), 3),
            "ms_min_block": round(min(v), 3),
            "ms_max_block": round(max(v), 3),
            "frames_per_s": round(1000 / float(np.median(v)), 1),
            "cpu_ms_per_call": round(float(np.median(cpu[k])), 3),  # process CPU time, all threads
            "blocks_ms": [round(x, 3) for x in v],
        }
        for k, v in per.items()
    }


def _tracker_step(tracker: RwRTracker, size: int) -> Callable[[], Any]:
    """One face on a 640x480 frame whose box drifts 1 px per frame (a warm RwR step with the state warp)."""
    frame = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    state = {"t": 0}

    def step() -> Any:
        t = state["t"] = state["t"] + 1
        box = np.array([[200.0 + t % 20, 120.0, 200.0 + t % 20 + 200, 320.0]])
        res = tracker.step([frame], box, ["bench"])
        if t > 1 and (res.full_solve[0] or int(res.nfe[0]) != 2):
            raise RuntimeError("the benchmark frame was not a warm 2-NFE step")
        return res

    step()  # the fresh frame (full solve)
    return step


@torch.no_grad()
def bench_model(
    name: str, model: LandmarkDEQ, sha: str, folder: Path, repeats: int, iters: int, threads: int
) -> dict[str, Any]:
    model = model.eval()
    t0 = time.perf_counter()
    graphs = export_model(model, folder / f"{name}.onnx", mode="both", nfe=2, checkpoint_sha256=sha, source=name)
    export_s = time.perf_counter() - t0
    parity = check_parity(model, graphs, threads=threads)
    size = model.cfg.image_size
    first, second = parity_inputs(model, 1)
    z = model(first).z_star
    rwr, solve = OnnxGraph(graphs[0].path, threads), OnnxGraph(graphs[1].path, threads)
    img1, img2, z_np = first.numpy(), second.numpy(), z.numpy()
    step = _blocks(
        {
            "torch": lambda: model.forward_fixed(second, z, 2),
            "onnxruntime": lambda: rwr.run(image=img2, state=z_np),
        },
        repeats,
        iters,
    )
    full = _blocks(
        {"torch": lambda: model(first), "onnxruntime": lambda: solve.run(image=img1)}, repeats, max(5, iters // 5)
    )
    cfg = RwRConfig(budget_nfe=2, crop_size=size, warp_state=True)
    engine = OnnxEngine(model, graphs[0].path, graphs[1].path, threads=threads)
    tracker = _blocks(
        {
            "torch": _tracker_step(RwRTracker(model, cfg), size),
            "onnxruntime": _tracker_step(RwRTracker(model, cfg, engine=engine), size),
        },
        repeats,
        iters,
    )
    return {
        "model": name,
        "image_size": size,
        "n_landmarks": model.cfg.n_landmarks,
        "solver": f"{model.cfg.solver.method} max_nfe {model.cfg.solver.max_nfe} tol {model.cfg.solver.tol}",
        "solve_nfe_torch_on_bench_image": int(model(first).stats.nfe[0]),
        "export_s_both_graphs": round(export_s, 2),
        "file_mb": {g.kind: round(g.path.stat().st_size / 1e6, 2) for g in graphs},
        "parity_max_px": {k: float(f"{v:.3g}") for k, v in parity.items()},
        "parity_limit_px": 0.1 * size / 256,
        "rwr_step_2nfe_batch1": step,
        "full_solve_batch1": full,
        "tracker_step_warp_batch1": tracker,
    }


def bench_video(video: Path, folder: Path, threads: int) -> list[dict[str, Any]]:
    """``ldeq track`` (no overlay) on ``video`` with each runtime, the zoo model and its video defaults."""
    from ldeq_cli.track import track_file
    from ldeq_core.face_detect import make_detector
    from ldeq_core.landmarker import FaceLandmarker, default_settings, load_model
    from ldeq_core.onnx_runtime import engine_for_checkpoint

    ckpt = load_model(ZOO, "cpu")
    settings = default_settings(ckpt)
    det = make_detector("auto")
    engine = engine_for_checkpoint(ckpt, settings.budget_nfe, threads=threads, cache=folder)
    rows = []
    for runtime in ("torch", "onnx", "torch", "onnx"):

        def make(fps: float, rt: str = runtime) -> FaceLandmarker:
            eng = engine if rt == "onnx" else None
            return FaceLandmarker(ckpt, settings, detector=det, fps=fps, device="cpu", runtime=rt, engine=eng)  # type: ignore[arg-type]

        t0 = time.perf_counter()
        summ = track_file(video, f"bench-{runtime}", folder, make, overlay=False)
        wall = time.perf_counter() - t0
        rows.append({"runtime": runtime, "frames": summ.frames, "face_rows": summ.rows, "wall_s": round(wall, 2),
                     "frames_per_s": round(summ.frames / wall, 2)})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--video", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/results/onnx_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        zoo = load_pretrained(ZOO)
        torch.manual_seed(0)
        raw = LandmarkDEQ(get_preset("tiny")).eval()
        # parity of the raw random model: its cell is not contractive, so fp32 differences grow with every step
        raw_parity = check_parity(raw, export_model(raw, Path(tmp) / "raw.onnx", mode="both"), threads=args.threads)
        tiny = copy.deepcopy(raw)
        with torch.no_grad():  # contractive like a trained DEQ (as in tests/core/test_onnx_export.py)
            tiny.cell.inject.conv.weight[:, : tiny.cfg.z_width] *= 0.1
        for name, model, sha in ((ZOO, zoo.model, zoo.sha256), ("tiny-256px-random-contractive", tiny, "")):
            res = bench_model(name, model, sha, Path(tmp), args.repeats, args.iters, args.threads)
            if model is tiny:
                res["parity_max_px_raw_random_init"] = {k: float(f"{v:.3g}") for k, v in raw_parity.items()}
            print(json.dumps({k: v for k, v in res.items() if "batch1" not in k}), flush=True)
            for key in ("rwr_step_2nfe_batch1", "full_solve_batch1", "tracker_step_warp_batch1"):
                print(key, {k: v["ms_median"] for k, v in res[key].items()}, flush=True)
            results.append(res)
        video = bench_video(args.video, Path(tmp), args.threads) if args.video else None
    out = {
        "command": "python bench/bench_onnx.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "models": results,
        "track_video": None if video is None else {"video": os.fspath(args.video), "runs": video},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
