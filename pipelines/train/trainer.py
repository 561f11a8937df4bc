"""Driver side of training: Ray cluster, datasets, ``TorchTrainer``, outputs for DVC, MLflow registry.

``run_training(cfg, shards_dir, out_dir)`` runs the distributed loop of :mod:`pipelines.train.loop` and writes

- ``<out>/models/model.pt``: the best validation checkpoint (our weights-only format);
- ``<out>/metrics/train.json``: best and final metrics (the headline stage copies the main ones for DVC);
- ``<out>/plots/train_curves.csv`` and ``.png``: per-epoch curves (DVC plots);

and logs the MLflow run's ``model/best.pt`` as an MLflow Model (pyfunc: ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` work) registered as a new version of ``cfg.registered_model`` with alias ``newest`` (and
``champion`` when its val NME beats the current champion's).

The Ray run is named ``<run_name>-<fingerprint>``, the fingerprint hashing the settings that shape the training
trajectory and the shard files (names, sizes, mtimes). Re-running the same run name with the same settings and
data resumes that Ray run from its latest checkpoint (a finished run just rewrites the outputs); any change
starts a new Ray run, so ``dvc repro`` after a parameter or data change never resumes a stale run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ldeq_core.fileio import atomic_path
from ldeq_shared.ray_session import start_or_attach
from pipelines.train import faults
from pipelines.train.config import TrainConfig
from pipelines.train.loop import BEST_FILE, STATE_FILE, train_loop_per_worker
from pipelines.train.reporting import plot_curves, train_verbose, write_curves_csv, write_json
from pipelines.train.tracking import (
    TAG_KIND,
    TAG_RAY_RUN,
    TAG_STORAGE,
    ensure_experiment,
    find_or_create_run,
    mlflow_client,
    project_root,
    register_checkpoint,
)

# Settings that do not change what is trained (bookkeeping, paths, fault tolerance): left out of the fingerprint.
_NOT_FINGERPRINTED = frozenset(
    {
        "run_name",
        "data_dir",
        "storage_path",
        "mlflow_uri",
        "mlflow_artifacts",
        "mlflow_experiment",
        "registered_model",
        "max_failures",
        "keep_checkpoints",
        "checkpoint_every",
        "async_checkpoint",
        "worker_cache_max_mb",
        "cpus_per_worker",
        "gpus_per_worker",
        "resources_per_worker",
        "data_threads",  # the prepared batches do not depend on the thread count or the prefetch depth
        "prefetch_batches",
    }
)


@dataclass
class TrainingResult:
    """What a finished run produced. ``history`` has one metrics dict per epoch (1-based ``epoch``)."""

    ray_run_name: str
    mlflow_run_id: str | None
    history: list[dict[str, float]]
    best_epoch: int
    best_val_nme: float
    start_epoch: int
    model_path: Path
    metrics_path: Path
    curves_csv: Path
    curves_png: Path
    checkpoint_path: str
    registered: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def ensure_ray() -> None:
    """Use the running Ray session, else attach to ``$RAY_ADDRESS``, else start a local cluster (with the dashboard:
    Ray Train's placement-group cleaner needs its State API to free the workers of a killed run)."""
    start_or_attach(include_dashboard=None, auth_off_on_attach=True)


def steps_per_epoch(n_rows: int, world: int, batch_size: int) -> int:
    """Optimiser steps per epoch and worker: Ray Train splits rows equally (extra rows dropped), last batch
    dropped."""
    return (n_rows // world) // batch_size


def data_fingerprint(shards_dir: str | os.PathLike[str], splits: tuple[str, ...]) -> str:
    """sha256 over the names, sizes and mtimes of the shard files of ``splits``."""
    from pipelines.shards import split_files

    h = hashlib.sha256()
    for split in splits:
        for path in split_files(shards_dir, split):
            st = path.stat()
            h.update(f"{split}/{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def ray_run_name(cfg: TrainConfig, data_hash: str) -> str:
    """``<run_name>-<10 hex>`` from the trajectory-shaping settings and the data fingerprint."""
    keep = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_FINGERPRINTED}
    blob = json.dumps({"cfg": keep, "data": data_hash}, sort_keys=True, default=str)
    return f"{cfg.run_name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build_trainer(
    cfg: TrainConfig,
    datasets: dict[str, Any],
    *,
    name: str,
    steps: int,
    mlflow_run_id: str | None,
    callbacks: list[Any] | None = None,
    verbose: bool | None = None,
) -> Any:
    """The ``TorchTrainer`` of one run (also used by each sweep trial).

    ``verbose`` (None: ``$LDEQ_TRAIN_VERBOSE``): keep Ray Train's INFO logs, the metrics dict of every report of
    every rank included; otherwise the console shows rank 0's line per epoch and Ray's warnings and errors.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    verbose = train_verbose() if verbose is None else verbose
    resources = {**cfg.resources_per_worker, "CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    loop_config: dict[str, Any] = {
        "train": cfg.to_dict(),
        "steps_per_epoch": steps,
        "mlflow_run_id": mlflow_run_id,
        "verbose": verbose,
    }
    fault = faults.plan_from_env()  # tests only: None unless a test armed fault injection
    if fault is not None:
        loop_config[faults.CONFIG_KEY] = fault
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks or [],
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
        ),
        datasets=datasets,
        # streamed: train rows are split across workers; cached: every worker reads all train rows once and takes
        # its share of each epoch's global permutation. Every worker sees all val rows, evaluates every world-th batch
        dataset_config=DataConfig(datasets_to_split=[] if cfg.worker_cache else ["train"]),
    )


def resolve_val_split(cfg: TrainConfig, shards_dir: str | os.PathLike[str]) -> TrainConfig:
    """``val_split: auto`` -> ``val`` when the shards have that split, else ``test``."""
    from pipelines.shards import list_splits

    if cfg.val_split != "auto":
        return cfg
    splits = list_splits(shards_dir)
    for name in ("val", "test"):
        if name in splits:
            return replace(cfg, val_split=name)
    raise ValueError(f"{shards_dir}: no 'val' or 'test' split to validate on (splits: {splits})")


def load_datasets(cfg: TrainConfig, shards_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """Ray datasets of the train and val splits, and the number of training rows.

    A materialised split is read once into the object store; a streamed one is re-read every epoch.
    """
    import ray.data

    from pipelines.shards import load_split

    ray.data.DataContext.get_current().enable_progress_bars = False
    train = load_split(shards_dir, cfg.train_split)
    val = load_split(shards_dir, cfg.val_split)
    if cfg.materialize_train:
        train = train.materialize()
    if cfg.materialize_val:
        val = val.materialize()
    return {"train": train, "val": val}, int(train.count())


def run_training(
    cfg: TrainConfig,
    shards_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    register: bool = True,
) -> TrainingResult:
    """Train with Ray Train (DDP) and write the DVC outputs under ``out_dir`` (default: the project root).

    ``shards_dir`` defaults to ``cfg.data_dir``; relative paths in ``cfg`` are resolved against ``root``
    (default: the folder of the nearest ``params.yaml``).
    """
    root_path = Path(root) if root is not None else project_root()
    cfg = cfg.resolved(root_path)
    shards = Path(shards_dir if shards_dir is not None else cfg.data_dir).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else root_path.resolve()

    cfg = resolve_val_split(cfg, shards)
    ensure_ray()
    datasets, n_train = load_datasets(cfg, shards)
    steps = steps_per_epoch(n_train, cfg.num_workers, cfg.batch_size)
    if steps < 1:
        raise ValueError(
            f"{shards / cfg.train_split}: {n_train} training rows give no full batch of {cfg.batch_size} "
            f"per worker for {cfg.num_workers} workers"
        )
    name = ray_run_name(cfg, data_fingerprint(shards, (cfg.train_split, cfg.val_split)))
    resuming = (Path(cfg.storage_path) / name).exists() if "://" not in cfg.storage_path else False

    run_id = None
    if cfg.mlflow_uri:
        exp = ensure_experiment(cfg.mlflow_uri, cfg.mlflow_experiment, cfg.mlflow_artifacts)
        run_id = find_or_create_run(
            cfg.mlflow_uri,
            exp,
            cfg.run_name,
            tags={TAG_RAY_RUN: name, TAG_STORAGE: cfg.storage_path, TAG_KIND: "train"},
            reuse=resuming,
        )

    finished = finished_run(cfg, name, run_id) if resuming else None
    if finished is not None:  # all epochs done earlier: rewrite the outputs without starting workers
        summary, checkpoint = finished
    else:
        result = build_trainer(cfg, datasets, name=name, steps=steps, mlflow_run_id=run_id).fit()
        if result.error is not None:
            if run_id:
                _mark_failed(cfg.mlflow_uri, run_id)
            raise RuntimeError(f"training run {name} failed: {result.error}") from result.error
        summary, checkpoint = result.return_value, result.checkpoint
        if not summary or checkpoint is None:
            raise RuntimeError(f"training run {name} returned no summary or checkpoint")
    return _write_outputs(cfg, summary, checkpoint, name, run_id, out, register)


def _mark_failed(uri: str, run_id: str) -> None:
    mlflow_client(uri).set_terminated(run_id, status="FAILED")


def finished_run(cfg: TrainConfig, name: str, run_id: str | None) -> tuple[dict[str, Any], Any] | None:
    """(summary, checkpoint) of a stored Ray run whose latest checkpoint has all ``cfg.epochs`` done, else None."""
    import ray.train
    import torch

    try:
        result = ray.train.Result.from_path(str(Path(cfg.storage_path) / name))
    except Exception:  # no snapshot (e.g. a run killed before its first checkpoint)
        return None
    if result.checkpoint is None:
        return None
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    if int(state["epochs_done"]) < cfg.epochs:
        return None
    summary = {
        "history": list(state["history"]),
        "best_epoch": int(state["best"]["epoch"]),
        "best_val_nme": float(state["best"]["val_nme"]),
        "start_epoch": int(state["epochs_done"]),
        "world_size": cfg.num_workers,
        "mlflow_run_id": run_id,
    }
    return summary, result.checkpoint


def _placement(node_ids: list[str] | None) -> dict[str, Any]:
    """``worker_nodes`` (distinct Ray nodes) and ``worker_node_ids`` (one per rank); empty when unknown (a run
    restored from its finished checkpoint starts no workers)."""
    if not node_ids:
        return {}
    return {"worker_nodes": len(set(node_ids)), "worker_node_ids": list(node_ids)}


def _write_outputs(
    cfg: TrainConfig,
    summary: dict[str, Any],
    checkpoint: Any,
    name: str,
    run_id: str | None,
    out: Path,
    register: bool,
) -> TrainingResult:
    """Write the DVC outputs (best model, metrics, curves), register the model, and collect the result."""
    history = summary["history"]
    model_path = _copy_best_model(checkpoint, out / "models" / "model.pt")
    best_row = next(r for r in history if r["epoch"] == summary["best_epoch"])
    metrics = _train_metrics(summary, best_row)
    registered = None
    if register and run_id and cfg.registered_model and summary["start_epoch"] < cfg.epochs:
        registered = _register_best(cfg, run_id, summary, best_row)
        metrics["registered_version"] = registered["version"]
    metrics_path = out / "metrics" / "train.json"
    write_json(metrics_path, metrics)
    csv_path, png_path = _write_curves(cfg, history, out / "plots")
    return TrainingResult(
        ray_run_name=name,
        mlflow_run_id=run_id,
        history=history,
        best_epoch=int(summary["best_epoch"]),
        best_val_nme=float(summary["best_val_nme"]),
        start_epoch=int(summary["start_epoch"]),
        model_path=model_path,
        metrics_path=metrics_path,
        curves_csv=csv_path,
        curves_png=png_path,
        checkpoint_path=str(checkpoint.path),
        registered=registered,
        metrics=metrics,
    )


def _copy_best_model(checkpoint: Any, model_path: Path) -> Path:
    """Copy the checkpoint's best model to ``model_path`` (atomically); returns ``model_path``."""
    with checkpoint.as_directory() as folder, atomic_path(model_path) as tmp:
        shutil.copyfile(Path(folder) / BEST_FILE, tmp)
    return model_path


def _train_metrics(summary: dict[str, Any], best_row: dict[str, float]) -> dict[str, Any]:
    """``metrics/train.json``: the best epoch's validation metrics, throughput, placement and final metrics."""
    history = summary["history"]
    last = history[-1]
    ips = [r["images_per_s"] for r in history[1:]] or [history[0]["images_per_s"]]  # epoch 1 includes warm-up
    return {
        "best_epoch": summary["best_epoch"],
        "val_nme": best_row["val_nme"],
        "val_fr": best_row["val_fr"],
        "val_auc": best_row["val_auc"],
        "val_nfe_mean": best_row["val_nfe_mean"],
        "epochs": len(history),
        "train_images_per_s": sum(ips) / len(ips),
        "world_size": summary["world_size"],
        **({"worker_cache": summary["worker_cache"]} if summary.get("worker_cache") else {}),
        # distinct Ray nodes the workers ran on; a run restored from its finished checkpoint started no workers
        **_placement(summary.get("worker_node_ids")),
        "final": {k: last[k] for k in ("train_loss", "val_loss", "val_nme", "val_fr", "val_auc")},
    }


def _register_best(
    cfg: TrainConfig, run_id: str, summary: dict[str, Any], best_row: dict[str, float]
) -> dict[str, Any]:
    """Register the MLflow run's best model as a new version of ``cfg.registered_model``."""
    return register_checkpoint(
        cfg.mlflow_uri,
        cfg.registered_model,
        run_id,
        {
            "val_nme": best_row["val_nme"],
            "val_fr": best_row["val_fr"],
            "val_auc": best_row["val_auc"],
            "epoch": summary["best_epoch"],
        },
    )


def _write_curves(cfg: TrainConfig, history: list[dict[str, float]], plots: Path) -> tuple[Path, Path]:
    """The per-epoch curves as ``train_curves.csv`` and ``.png`` under ``plots``; returns both paths."""
    csv_path, png_path = plots / "train_curves.csv", plots / "train_curves.png"
    write_curves_csv(csv_path, history)
    plot_curves(png_path, history, title=cfg.run_name)
    return csv_path, png_path
