"""The training console: one line per epoch, Ray Train's per-report logs quiet unless verbose."""

from __future__ import annotations

import logging
import re

import pytest

from pipelines.train.reporting import VERBOSE_ENV, epoch_line, quiet_ray_train_worker_logs, train_verbose

# what the DVC train-stage test looks for in `dvc repro` output
EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+)  train_loss [\d.]+  val_loss [\d.]+  val_nme [\d.]+%  best [\d.]+% \(ep \d+\)  \d+ img/s"
)


def test_epoch_line() -> None:
    row = {"epoch": 3, "train_loss": 8.19391, "val_loss": 5.88532, "val_nme": 0.0835689, "images_per_s": 126.788}
    line = epoch_line(row, 12, 0.0801, 2)
    assert line == "epoch 3/12  train_loss 8.194  val_loss 5.885  val_nme 8.36%  best 8.01% (ep 2)  127 img/s"
    assert EPOCH_LINE.fullmatch(line)


def test_verbose_switch_and_quiet_loggers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert not train_verbose()
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert train_verbose()
    from ray.train.v2._internal.execution import context

    loggers = [logging.getLogger(n) for n in (context.logger.name, "ray.data", "ray.data._internal.progress")]
    before = [lg.level for lg in loggers]
    try:
        quiet_ray_train_worker_logs()
        assert not context.logger.isEnabledFor(logging.INFO)  # "Reporting training result N: TrainingReport(...)"
        assert context.logger.isEnabledFor(logging.WARNING)
        assert not logging.getLogger("ray.data").isEnabledFor(logging.INFO)
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)
