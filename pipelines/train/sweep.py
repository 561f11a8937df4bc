"""Hyper-parameter sweeps: Ray Tune over Ray Train (v2 pattern), ASHA early stopping, MLflow parent/child runs.

Each Tune trial is a tiny driver (0.01 CPU) that launches a ``TorchTrainer`` (see
:func:`pipelines.train.trainer.build_trainer`) whose reports reach Tune through ``TuneReportCallback``. ASHA
stops weak trials on ``time_attr="epoch"``. One MLflow parent run holds the sweep settings and the results
table; each trial logs into a child run (tag ``mlflow.parentRunId``). Trials stopped by ASHA have their child run
closed as ``KILLED``.

Ray 2.60 caveat: a trial stopped early is killed with its Train controller; the controller's worker placement
group is then freed by Ray Train's ``PlacementGroupCleaner``, which needs the State API, i.e. a cluster started
with the dashboard (``ensure_ray`` starts local clusters with it). On a cluster without the dashboard, a stopped
trial's workers keep their CPUs until the job ends, and later trials wait for them (use ``grace_period`` =
epochs to disable early stopping there).

The ``sweep:`` section of ``params.yaml``::

    sweep:
      name: ldeq-sweep
      metric: val_nme          # minimised
      num_samples: 1           # repeats of the grid (random draws for choice/uniform/... entries)
      max_concurrent_trials: 1
      grace_period: 1          # ASHA: epochs before a trial can be stopped
      reduction_factor: 2
      overrides: {epochs: 4}   # train settings applied to every trial
      space:                   # dotted TrainConfig keys (as for --set) -> one distribution each
        lr: {grid: [0.001, 0.003]}
        train_max_nfe: {choice: [4, 8]}
        model.cell_base_width: {choice: [32, 48]}
        grad_mode: {grid: [implicit, one_step]}

Distributions: ``grid`` (every value), ``choice``, ``uniform`` [lo, hi], ``loguniform`` [lo, hi], ``randint``
[lo, hi).
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ldeq_core.fileio import write_text_atomic
from ldeq_shared.params import SweepConfig, load_params
from pipelines.train.config import TrainConfig
from pipelines.train.reporting import flatten
from pipelines.train.tracking import (
    TAG_KIND,
    TAG_RAY_RUN,
    TAG_STORAGE,
    ensure_experiment,
    find_or_create_run,
    mlflow_client,
    project_root,
)

TAG_TRIAL = "ldeq.trial_id"


def load_sweep_config(params_path: str | os.PathLike[str]) -> SweepConfig:
    """SweepConfig from the ``sweep:`` section of ``params_path`` (defaults when absent)."""
    return load_params(params_path).sweep


def search_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Tune's ``param_space`` from the YAML distributions."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        kind, values = next(iter(spec.items()))
        if kind == "grid":
            out[key] = tune.grid_search(list(values))
        elif kind == "choice":
            out[key] = tune.choice(list(values))
        else:
            if len(values) != 2:
                raise ValueError(f"sweep.space.{key}: {kind} needs [low, high], got {values!r}")
            fn = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind]
            out[key] = fn(values[0], values[1])
    return out


def _trial(config: dict[str, Any], base: dict[str, Any], static: dict[str, Any], datasets: dict[str, Any]) -> None:
    """One Tune trial: a TorchTrainer run with the sampled overrides, logging to an MLflow child run.

    Datasets come materialised from the sweep driver: Ray Data run from inside a trial (or from the Train
    SplitCoordinator it starts) is limited to the trial's placement group (0.01 CPU) and its read tasks would never
    be scheduled.
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.train.trainer import build_trainer, steps_per_epoch

    trial_id = ray.tune.get_context().get_trial_id()
    name = f"{static['sweep_run']}-{trial_id}"
    cfg = replace(TrainConfig.from_dict(base).with_overrides(dict(config)), run_name=name)
    steps = steps_per_epoch(static["n_train"], cfg.num_workers, cfg.batch_size)
    if steps < 1:
        raise ValueError(f"{static['shards']}: {static['n_train']} training rows give no full batch per worker")
    run_id = None
    if static.get("parent_run_id"):
        run_id = find_or_create_run(
            cfg.mlflow_uri,
            static["experiment_id"],
            name,
            tags={TAG_RAY_RUN: name, TAG_STORAGE: cfg.storage_path, TAG_KIND: "sweep-trial", TAG_TRIAL: trial_id},
            reuse=False,
            parent_run_id=static["parent_run_id"],
        )
    trainer = build_trainer(
        cfg, datasets, name=name, steps=steps, mlflow_run_id=run_id, callbacks=[TuneReportCallback()]
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"trial {trial_id} failed: {result.error}") from result.error


@dataclass
class SweepResult:
    """The results table (one dict per trial, best first), where it was written, and the MLflow parent run."""

    rows: list[dict[str, Any]]
    csv_path: Path
    markdown_path: Path
    parent_run_id: str | None
    best: dict[str, Any] | None


def run_sweep(
    cfg: TrainConfig,
    sweep: SweepConfig,
    shards_dir: str | os.PathLike[str] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    print_table: bool = True,
) -> SweepResult:
    """Run the sweep; print (rich) and save the results table as ``<out_dir>/<sweep run>/results.{csv,md}``."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    from pipelines.train.trainer import ensure_ray, load_datasets, resolve_val_split

    root_path = Path(root) if root is not None else project_root()
    cfg = cfg.resolved(root_path).with_overrides(dict(sweep.overrides))
    shards = str(Path(shards_dir if shards_dir is not None else cfg.data_dir).resolve())
    cfg = resolve_val_split(cfg, shards)
    sweep_run = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(sweep.out_dir)
    out_dir = (out_dir if out_dir.is_absolute() else root_path / out_dir).resolve() / sweep_run

    ensure_ray()
    # Loaded and materialised here, not in the trials (see _trial): Tune runs each trial in a placement group that
    # captures child tasks, so a lazily read split would be read by a SplitCoordinator limited to 0.01 CPU.
    datasets, n_train = load_datasets(replace(cfg, materialize_train=True, materialize_val=True), shards)
    parent_id, exp_id = None, None
    if cfg.mlflow_uri:
        exp_id = ensure_experiment(cfg.mlflow_uri, cfg.mlflow_experiment, cfg.mlflow_artifacts)
        parent_id = find_or_create_run(
            cfg.mlflow_uri, exp_id, sweep_run, tags={TAG_KIND: "sweep", TAG_RAY_RUN: sweep_run}, reuse=False
        )
        client = mlflow_client(cfg.mlflow_uri)
        params = flatten({"sweep": asdict(sweep)})
        params.update(flatten({"train": {k: v for k, v in cfg.to_dict().items() if k != "model"}}))
        params.update(flatten({"model": cfg.model.to_dict()}))
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(parent_id, params=items[i : i + 100])

    static = {
        "sweep_run": sweep_run,
        "shards": shards,
        "parent_run_id": parent_id,
        "experiment_id": exp_id,
        "n_train": n_train,
    }
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, base=cfg.to_dict(), static=static, datasets=datasets), {"CPU": 0.01}
    )
    # stop_last_trials=False: a trial that reaches max_t ends on its own (its TorchTrainer shuts its workers down)
    # instead of being killed by Tune while its final report is processed.
    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=cfg.epochs,
        grace_period=min(sweep.grace_period, cfg.epochs),
        reduction_factor=sweep.reduction_factor,
        stop_last_trials=False,
    )
    tuner = ray.tune.Tuner(
        trainable,
        param_space=search_space(sweep.space),
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=scheduler,
            num_samples=sweep.num_samples,
            max_concurrent_trials=sweep.max_concurrent_trials,
        ),
        run_config=ray.tune.RunConfig(name=sweep_run, storage_path=cfg.storage_path),
    )
    grid = tuner.fit()
    rows = results_table(grid, list(sweep.space), sweep.metric, sweep.mode, cfg.epochs)
    if parent_id:
        _close_children(cfg.mlflow_uri, exp_id, parent_id, rows)
    csv_path, md_path = out_dir / "results.csv", out_dir / "results.md"
    columns = _columns(rows, list(sweep.space))
    write_text_atomic(csv_path, _to_csv(rows, columns))
    write_text_atomic(md_path, f"# Sweep {sweep_run}\n\n" + to_markdown(rows, columns))
    best = rows[0] if rows and rows[0]["status"] != "error" else None
    if parent_id:
        client = mlflow_client(cfg.mlflow_uri)
        client.log_artifact(parent_id, str(csv_path))
        client.log_artifact(parent_id, str(md_path))
        if best is not None and best.get(f"best_{sweep.metric}") is not None:
            client.log_metric(parent_id, f"best_{sweep.metric}", float(best[f"best_{sweep.metric}"]))
            client.set_tag(parent_id, "best_trial", best["trial"])
        client.set_terminated(parent_id, "FINISHED")
    if print_table:
        print_rich_table(rows, columns, title=f"sweep {sweep_run}")
    return SweepResult(rows, csv_path, md_path, parent_id, best)


def results_table(grid: Any, keys: list[str], metric: str, mode: str, max_epochs: int) -> list[dict[str, Any]]:
    """One row per trial: its parameters, epochs run, final and best metric, FR/AUC, status; best first."""
    rows = []
    for res in grid:
        metrics = res.metrics or {}
        df = res.metrics_dataframe
        best = None
        if df is not None and metric in df:
            series = df[metric].dropna()
            if len(series):
                best = float(series.min() if mode == "min" else series.max())
        epochs = int(metrics.get("epoch", 0) or 0)
        status = "error" if res.error is not None else ("stopped" if epochs < max_epochs else "completed")
        row: dict[str, Any] = {"trial": str(metrics.get("trial_id") or Path(str(res.path)).name)}
        row.update({k: res.config.get(k) for k in keys})
        row.update(
            {
                "epochs": epochs,
                metric: metrics.get(metric),
                f"best_{metric}": best,
                "val_fr": metrics.get("val_fr"),
                "val_auc": metrics.get("val_auc"),
                "images_per_s": metrics.get("images_per_s"),
                "status": status,
            }
        )
        rows.append(row)
    sign = 1.0 if mode == "min" else -1.0

    def order(r: dict[str, Any]) -> tuple[int, float]:
        v = r[f"best_{metric}"]
        return (r["status"] == "error" or v is None, sign * v if v is not None else math.inf)

    return sorted(rows, key=order)


def _close_children(uri: str, exp_id: str | None, parent_id: str, rows: list[dict[str, Any]]) -> None:
    """Mark child runs that Tune stopped (still RUNNING) as KILLED, tagged ``ldeq.stopped_by=asha``."""
    client = mlflow_client(uri)
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    for run in children:
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "ldeq.stopped_by", "asha")
            client.set_terminated(run.info.run_id, "KILLED")


def _columns(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    return list(rows[0].keys()) if rows else ["trial", *keys, "status"]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_rich_table(rows: list[dict[str, Any]], columns: list[str], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col not in ("trial", "status") else "left")
    for row in rows:
        table.add_row(*(_fmt(row.get(k)) for k in columns))
    Console().print(table)
