"""``ldeq train`` (the DVC train stage) and ``ldeq sweep`` (Ray Tune over the trainer)."""

from __future__ import annotations

from pathlib import Path

import typer

_SET_HELP = "override a setting: train.lr=3e-4, lr=3e-4, model.image_size=64, augment.flip_prob=0 (repeatable)"


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=2)


def train(
    params: Path = typer.Option(Path("params.yaml"), help="params file (sections 'model' and 'train')"),
    overrides: list[str] = typer.Option([], "--set", help=_SET_HELP),
    shards: Path | None = typer.Option(None, help="shards folder (default: train.data_dir)"),
    out: Path | None = typer.Option(None, help="where models/, metrics/ and plots/ go (default: the project root)"),
    no_register: bool = typer.Option(False, "--no-register", help="do not add a model-registry version"),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="also Ray Train's INFO logs, every report's metrics dict included"
    ),
) -> None:
    """Train the Landmark DEQ with Ray Train (DDP), log to MLflow, write models/model.pt and metrics.

    The console shows one line per epoch; every metric goes to MLflow and metrics/train.json.
    """
    import os

    from pipelines.train.config import load_train_config
    from pipelines.train.reporting import VERBOSE_ENV
    from pipelines.train.trainer import run_training

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    try:
        cfg = load_train_config(params, overrides)
        result = run_training(cfg, shards, out, root=params.resolve().parent, register=not no_register)
    except (ValueError, OSError, RuntimeError) as err:
        raise _fail(err) from None
    m = result.metrics
    typer.echo(
        f"train: {m['epochs']} epochs (resumed at {result.start_epoch}), best epoch {m['best_epoch']}: "
        f"val NME {100 * m['val_nme']:.2f} %, FR@0.1 {100 * m['val_fr']:.1f} %, AUC@0.1 {m['val_auc']:.3f}; "
        f"{m['train_images_per_s']:.1f} images/s on {m['world_size']} workers"
    )
    typer.echo(f"model: {result.model_path}  (ray run {result.ray_run_name}, mlflow run {result.mlflow_run_id})")
    if result.registered:
        reg = result.registered
        typer.echo(f"registered: {reg['name']} v{reg['version']} aliases {', '.join(reg['aliases'])}")


def sweep(
    params: Path = typer.Option(Path("params.yaml"), help="params file (sections 'model', 'train', 'sweep')"),
    overrides: list[str] = typer.Option([], "--set", help=_SET_HELP + "; applies to every trial"),
    shards: Path | None = typer.Option(None, help="shards folder (default: train.data_dir)"),
    samples: int | None = typer.Option(None, help="override sweep.num_samples"),
    name: str | None = typer.Option(None, help="override sweep.name"),
) -> None:
    """Ray Tune sweep (ASHA) over trainer settings; MLflow parent run with one child run per trial."""
    import dataclasses

    from pipelines.train.config import load_train_config
    from pipelines.train.sweep import load_sweep_config, run_sweep

    try:
        cfg = load_train_config(params, overrides)
        sw = load_sweep_config(params)
        changes = {k: v for k, v in (("num_samples", samples), ("name", name)) if v is not None}
        sw = dataclasses.replace(sw, **changes)
        res = run_sweep(cfg, sw, shards, root=params.resolve().parent)
    except (ValueError, OSError, RuntimeError) as err:
        raise _fail(err) from None
    typer.echo(f"results: {res.csv_path} and {res.markdown_path}")
    if res.best:
        typer.echo(f"best trial: {res.best['trial']}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("sweep")(sweep)
