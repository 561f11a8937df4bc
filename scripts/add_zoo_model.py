"""Add a trained checkpoint to the model zoo (ldeq_core/zoo), with its measured model card.

    python scripts/add_zoo_model.py --checkpoint outputs/zoo/models/model.pt --name ldeq68-small-w300-128px \\
        --recipe recipes/ldeq68-small-w300-128px.yaml \\
        --command "ldeq train --params recipes/ldeq68-small-w300-128px.yaml --no-register" \\
        --training-data "300-W HELEN train + AFW (../shared/data/300w), 80/20 hash split" \\
        --metrics-json outputs/zoo/metrics/train.json

The checkpoint is re-saved (our format, fp32, metadata trimmed to what matters plus the zoo name) as
``<zoo>/<name>-<sha256[:8]>.pt``; the card gets the parameter count and GMAC per RwR frame (stem + 2 cell
evaluations), the CPU frames/s of RwR at 2 NFE, batch 1 (``RwRTracker.step`` on a synthetic frame with a fixed box:
10 warm-up frames, then the median of >= 100 timed frames, torch on every core unless --threads), the metrics of
``--metrics-json`` (fractions there, percentages here: ``val_nme_pct``, ``val_fr_pct``; ``val_auc`` stays a
fraction), and ``git rev-parse HEAD`` (``-dirty`` when tracked files have uncommitted changes). The entry is
written into zoo.json atomically, replacing one of the same name. Measure on an otherwise idle machine: the load
average before the timing is recorded in the card.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from ldeq_core.checkpoints import load_checkpoint  # noqa: E402
from ldeq_core.model import LandmarkDEQ  # noqa: E402
from ldeq_core.pretrained import DEFAULT_BUDGET_NFE, make_card, register_pretrained, zoo_dir  # noqa: E402
from ldeq_core.profiling import cpu_name, rwr_step_seconds  # noqa: E402

MIN_BENCH_FRAMES = 100
WARMUP_FRAMES = 10


def measure_rwr_cpu_fps(
    model: LandmarkDEQ,
    frames: int = 200,
    warmup: int = WARMUP_FRAMES,
    budget_nfe: int = DEFAULT_BUDGET_NFE,
    frame_wh: tuple[int, int] = (640, 480),
    threads: int | None = None,
) -> tuple[float, str]:
    """Median-based frames/s of RwR (fixed budget, batch 1, one face) on the CPU, and a description of the run.

    ``threads``: torch threads while timing (default: every logical core); restored afterwards.
    """
    if frames < MIN_BENCH_FRAMES:
        raise ValueError(f"time at least {MIN_BENCH_FRAMES} frames, got {frames}")
    cores = os.cpu_count() or 1
    threads = threads or cores
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = model.cpu().eval()
        w, h = frame_wh
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        if load > 0.5:
            print(
                f"warning: the machine is busy (load average {load:.2f} on {cores} cores): the frames/s will be "
                "understated (torch threads contend with other processes); measure on an idle machine",
                file=sys.stderr,
            )
        times = rwr_step_seconds(model, frames, warmup, budget_nfe, frame_wh)
    finally:
        torch.set_num_threads(previous)
    fps = 1.0 / statistics.median(times)
    desc = (
        f"{cpu_name()} ({cores} logical cores, {threads} torch threads), torch {torch.__version__}, "
        f"load average {load:.2f} before timing; RwRTracker.step on a {w}x{h} synthetic frame with a fixed box, "
        f"budget_nfe={budget_nfe}, batch 1, one face, 1 / median of {frames} frames after {warmup} warm-up frames "
        "(scripts/add_zoo_model.py)"
    )
    return fps, desc


def git_commit() -> str:
    """``git rev-parse HEAD``, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def card_metrics(path: Path, val_images: int | None = None) -> dict[str, float]:
    """Validation metrics of a train metrics JSON (fractions) as card metrics (percentages for NME and FR)."""
    data: dict[str, Any] = json.loads(path.read_text())
    if "val_nme" not in data:
        raise ValueError(f"{path}: no val_nme (expected the metrics/train.json of `ldeq train`)")
    metrics = {"val_nme_pct": 100.0 * float(data["val_nme"])}
    if "val_fr" in data:
        metrics["val_fr_pct"] = 100.0 * float(data["val_fr"])
    if "val_auc" in data:
        metrics["val_auc"] = float(data["val_auc"])
    images = val_images if val_images is not None else data.get("val_images")
    if images is not None:
        metrics["val_images"] = float(int(images))
    if "val_nfe_mean" in data:
        metrics["val_nfe_mean"] = float(data["val_nfe_mean"])
    return {k: round(v, 6) for k, v in metrics.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="trained checkpoint (our format)")
    parser.add_argument("--name", required=True, help="zoo name, e.g. ldeq68-small-w300-128px")
    parser.add_argument("--recipe", required=True, help="params file that trained it, relative to the repo root")
    parser.add_argument("--command", required=True, help="the exact command(s) that trained it")
    parser.add_argument("--training-data", required=True, help="what it was trained on")
    parser.add_argument("--metrics-json", type=Path, required=True, help="metrics/train.json of the run")
    parser.add_argument("--val-images", type=int, default=None, help="validation images (if not in the JSON)")
    parser.add_argument("--notes", default="", help="free text for the card")
    parser.add_argument("--url", default=None, help="remote copy of the weights file (optional)")
    parser.add_argument("--licence", default=None, help="licence note (default: the iBUG 300-W note, 68 points)")
    parser.add_argument("--box-convention", default=None, help="box convention (default: the 68-point one)")
    parser.add_argument("--bench-frames", type=int, default=200, help=f"timed frames (>= {MIN_BENCH_FRAMES})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the timing (default: all cores)")
    parser.add_argument("--zoo-dir", type=Path, default=None, help="zoo (default: $LDEQ_ZOO_DIR or the package's)")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the bytes)")
    args = parser.parse_args(argv)

    recipe = Path(args.recipe)
    if recipe.is_absolute() or not (ROOT / recipe).is_file():
        parser.error(f"--recipe {args.recipe}: not a file relative to the repository root {ROOT}")
    try:
        metrics = card_metrics(args.metrics_json, args.val_images)
        loaded = load_checkpoint(args.checkpoint)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = loaded.model.float().eval()
    print(f"measuring RwR CPU speed ({args.bench_frames} frames)...", file=sys.stderr)
    fps, bench = measure_rwr_cpu_fps(model, frames=args.bench_frames, threads=args.threads)
    card = make_card(
        model.cfg,
        training_data=args.training_data,
        recipe=recipe.as_posix(),
        command=args.command,
        git_commit=git_commit(),
        metrics=metrics,
        cpu_frames_per_s=round(fps, 2),
        cpu_benchmark=bench,
        box_convention=args.box_convention,
        licence=args.licence,
        notes=args.notes,
    )
    entry = register_pretrained(loaded, args.name, card, url=args.url, zoo_dir=args.zoo_dir, half=args.half)
    folder = zoo_dir(args.zoo_dir)
    print(json.dumps(entry.to_dict(), indent=2))
    print(f"added {entry.name} -> {folder / entry.filename} ({entry.size_bytes} bytes, sha256 {entry.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
