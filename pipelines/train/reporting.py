"""Training outputs for people and DVC: the console line per epoch, curves CSV/PNG, metrics JSON, flattened params
for MLflow."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ldeq_core.fileio import atomic_path, write_text_atomic

CURVE_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_nme",
    "val_fr",
    "val_auc",
    "val_nfe_mean",
    "val_residual_mean",
    "train_nfe_mean",
    "lr",
    "images_per_s",
)


VERBOSE_ENV = "LDEQ_TRAIN_VERBOSE"  # 1: Ray Train's own INFO logs, per-report metric dicts included


def train_verbose() -> bool:
    """Whether ``$LDEQ_TRAIN_VERBOSE`` asks for Ray Train's INFO logs (``ldeq train --verbose`` sets it)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def epoch_line(row: Mapping[str, Any], epochs: int, best_val_nme: float, best_epoch: int) -> str:
    """The console line of one epoch, e.g.
    ``epoch 3/12  train_loss 8.194  val_loss 5.885  val_nme 8.36%  best 8.36% (ep 3)  127 img/s``."""
    return (
        f"epoch {int(row['epoch'])}/{epochs}  train_loss {row['train_loss']:.3f}  val_loss {row['val_loss']:.3f}  "
        f"val_nme {100 * row['val_nme']:.2f}%  best {100 * best_val_nme:.2f}% (ep {best_epoch})  "
        f"{row['images_per_s']:.0f} img/s"
    )


def quiet_ray_train_worker_logs() -> None:
    """In a Ray Train worker: drop Ray's INFO logs that repeat every epoch.

    Ray Train v2 (2.60) logs each ``ray.train.report`` of every rank with its whole metrics dict ("Reporting
    training result N: TrainingReport(...)") through a logger named after its source file, which
    ``RunConfig(logging_config=...)`` does not reach; Ray Data logs each validation pass. Both go to WARNING here
    (warnings and errors still show, but for Ray Data's note that progress bars are off); the metrics themselves
    are in MLflow and ``metrics/train.json``.
    """
    try:
        from ray.train.v2._internal.execution import context

        names = [context.logger.name]
    except (ImportError, AttributeError):  # another Ray version: nothing to quiet there
        names = []
    for name in (*names, "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled" (our choice)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}; lists and tuples become their string form."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(list(value)) if isinstance(value, list | tuple) else value
    return out


def write_curves_csv(path: str | os.PathLike[str], history: Sequence[Mapping[str, Any]]) -> None:
    """One row per epoch with ``CURVE_COLUMNS`` (missing values empty), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CURVE_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in CURVE_COLUMNS})
    write_text_atomic(path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def plot_curves(path: str | os.PathLike[str], history: Sequence[Mapping[str, Any]], title: str = "") -> None:
    """PNG with train/val loss and val NME per epoch (matplotlib, Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [int(r["epoch"]) for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r.get("train_loss", math.nan) for r in history], "o-", label="train loss")
    ax1.plot(epochs, [r.get("val_loss", math.nan) for r in history], "s-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (256-px units)")
    ax1.legend()
    ax2.plot(epochs, [100 * r.get("val_nme", math.nan) for r in history], "o-", color="C2")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("val NME (%)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Pretty JSON, written atomically."""
    write_text_atomic(path, json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
