"""A real 2-trial Ray Tune sweep over Ray Train (lr grid), with MLflow parent/child runs and a results table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipelines.train.sweep import SweepConfig, run_sweep
from tests.pipelines.train_helpers import tiny_config, write_tiny_shards

pytestmark = pytest.mark.slow


def test_two_trial_lr_sweep(ray_local: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = write_tiny_shards(tmp_path / "shards", n_train=32, n_val=8)
    cfg = tiny_config(tmp_path, materialize_train=True, epochs=1)
    sweep = SweepConfig(
        name="lr-grid", space={"lr": {"grid": [0.001, 0.004]}}, grace_period=1, out_dir=str(tmp_path / "sweeps")
    )
    res = run_sweep(cfg, sweep, shards, root=tmp_path)

    assert sorted(r["lr"] for r in res.rows) == [0.001, 0.004]
    assert all(r["status"] == "completed" and r["epochs"] == 1 for r in res.rows)
    nmes = [r["best_val_nme"] for r in res.rows]
    assert nmes == sorted(nmes) and all(0 < v < 2 for v in nmes)  # best first
    assert res.best is res.rows[0]
    printed = capsys.readouterr().out
    assert "sweep lr-grid" in printed and res.rows[0]["trial"] in printed

    with open(res.csv_path) as f:
        table = list(csv.DictReader(f))
    assert [float(r["lr"]) for r in table] == [r["lr"] for r in res.rows]
    md = res.markdown_path.read_text().splitlines()
    assert md[2].startswith("| trial | lr | epochs | val_nme |") and len(md) == 4 + 2

    from mlflow import MlflowClient

    uri = cfg.resolved(tmp_path).mlflow_uri
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_nme"] == pytest.approx(nmes[0])
    assert parent.data.params["sweep.space.lr.grid"] == "[0.001, 0.004]"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")
    assert len(children) == 2
    assert sorted(float(c.data.params["train.lr"]) for c in children) == [0.001, 0.004]
    by_lr = {float(c.data.params["train.lr"]): c for c in children}
    for row in res.rows:
        child = by_lr[row["lr"]]
        assert child.info.status == "FINISHED"
        assert child.data.metrics["val_nme"] == pytest.approx(row["val_nme"])
    artifacts = {a.path for a in client.list_artifacts(res.parent_run_id)}
    assert {"results.csv", "results.md"} <= artifacts
