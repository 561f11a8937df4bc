"""``ldeq demo``: reproduce the whole pipeline with DVC on the configured data and say where to look."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer

_HEADLINE = ("video.overall.", "compare.overall.", "still.", "info.")
_SKIP = ("per_video", "worker_node_ids", "_fw")


def _print_metrics(root: Path) -> None:
    """The headline numbers: the DVC metrics files (metrics/headline.json holds the main numbers of train.json and
    eval.json), else every metrics file (evaluation: overall per-method and comparison lines)."""
    headline = (root / "metrics" / "headline.json").is_file()
    for path in sorted((root / "metrics").glob("*.json")):
        if headline and path.stem in ("train", "eval"):
            continue
        typer.echo(f"\n== {path.relative_to(root)}")
        data = json.loads(path.read_text())
        for key, value in _flatten(data):
            if any(s in key for s in _SKIP) or (path.stem == "eval" and not key.startswith(_HEADLINE)):
                continue
            typer.echo(f"  {key:<48} {value}")
    if headline:
        typer.echo(
            "\nevery number: metrics/eval.json, metrics/train.json; `dvc metrics show`, `dvc plots show` (README)"
        )


def _flatten(data: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(data, dict):
        return [item for k, v in data.items() for item in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), round(data, 5) if isinstance(data, float) else data)]


def demo(
    root: Path = typer.Option(Path("."), help="project folder holding dvc.yaml and params.yaml"),
    force: bool = typer.Option(False, help="re-run every stage (dvc repro --force)"),
) -> None:
    """Run `dvc repro` of the whole pipeline, then print the metrics and where the plots, videos and runs are."""
    root = root.resolve()
    bin_dir = Path(sys.executable).parent  # the stages call `ldeq`: make this environment's scripts visible
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "DVC_NO_ANALYTICS": "1",
    }
    dvc = bin_dir / "dvc"
    cmd = [str(dvc) if dvc.exists() else "dvc", "repro", *(["--force"] if force else [])]
    typer.echo(f"$ {' '.join(cmd)}   (in {root})")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env)
    if proc.returncode != 0:
        typer.echo(f"dvc repro failed with exit code {proc.returncode}", err=True)
        raise typer.Exit(proc.returncode)
    typer.echo(f"\npipeline finished in {time.perf_counter() - start:.0f} s")
    _print_metrics(root)
    for label, pattern in (("plots", "plots/*.png"), ("overlay videos", "outputs/overlays/*.mp4")):
        found = sorted(root.glob(pattern))
        if found:
            typer.echo(f"\n{label}:")
            for p in found[:8]:
                typer.echo(f"  {p.relative_to(root)}")
    if (root / "mlflow.db").exists():
        typer.echo(f"\nMLflow UI: mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'} --port 5000")


def register(app: typer.Typer) -> None:
    app.command()(demo)
