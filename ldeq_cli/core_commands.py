"""Core commands: model information, a quick RwR example, and the upstream checkpoint converter."""

from __future__ import annotations

from pathlib import Path

import typer


def info(
    preset: str = typer.Option("paper", help="model preset: paper | tiny"),
    checkpoint: Path | None = typer.Option(None, help="describe this checkpoint instead of a preset"),
    device: str = typer.Option("auto", help="device whose default inference path to report: auto | cpu | cuda"),
) -> None:
    """Print a model's configuration, parameter count, MACs per cell evaluation and default inference path."""
    import torch

    from ldeq_core.checkpoints import load_checkpoint
    from ldeq_core.config import get_preset
    from ldeq_core.inference import InferencePolicy
    from ldeq_core.profiling import model_cost

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        typer.echo(f"error: --device {device}: CUDA is not available here", err=True)
        raise typer.Exit(2)

    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)
        cfg = loaded.model.cfg
        typer.echo(f"checkpoint: {checkpoint} (sha256 {loaded.sha256[:16]}...)")
        for key, value in loaded.metadata.items():
            typer.echo(f"  {key}: {value}")
    else:
        cfg = get_preset(preset)
        typer.echo(f"preset: {preset}")
    cost = model_cost(cfg)
    typer.echo(
        f"landmarks: {cfg.n_landmarks}, image {cfg.image_size}px, heatmaps {cfg.heatmap_size}px, "
        f"widths {cfg.injection_width}/{cfg.cell_base_width}+{cfg.cell_width_increment}"
    )
    typer.echo(f"solver: {cfg.solver}")
    typer.echo(f"gradients: {cfg.grad}")
    typer.echo(cost.describe())
    typer.echo(f"GMAC per frame at 2 NFE (RwR): {cost.macs_per_frame(2) / 1e9:.2f}")
    typer.echo(f"inference path (default policy): {InferencePolicy().resolve(device).describe()}")


def example(frames: int = typer.Option(20, help="frames in the RwR stream"), seed: int = 0) -> None:
    """Build the tiny model, run a still image and a short RwR stream, and print NFE and landmarks."""
    import numpy as np
    import torch

    from ldeq_core import LandmarkDEQ, RwRConfig, RwRTracker, get_preset

    torch.manual_seed(seed)
    model = LandmarkDEQ(get_preset("tiny")).eval()
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    tracker = RwRTracker(model, RwRConfig(budget_nfe=2))
    for t in range(frames):
        box = np.array([[100.0 + t, 60.0, 220.0 + t, 180.0]])
        res = tracker.step([frame], box, stream_ids=["cam0"])
        typer.echo(f"frame {t:2d}: NFE {int(res.nfe[0]):2d}  landmark 0 at {np.round(res.landmarks[0, 0], 1)}")


def convert_upstream(
    src: Path = typer.Argument(..., help="upstream checkpoint (pickled, e.g. final.pth.tar)"),
    dst: Path = typer.Argument(..., help="output checkpoint in our weights-only format"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="allow unpickling (runs code from the file)"),
) -> None:
    """Convert an upstream LDEQ checkpoint (pickled argparse Namespace) to our safe format."""
    from ldeq_core.checkpoints import convert_upstream as convert

    try:
        report = convert(src, dst, trust_pickle=trust_pickle)
    except (PermissionError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"converted {report.mapped} tensors -> {dst}")


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(example)
    app.command("convert-upstream")(convert_upstream)
