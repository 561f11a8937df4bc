"""A real ``dvc repro train`` (prepare -> preprocess -> train) in a throw-away copy of the repository: metrics,
model and MLflow records appear; a second repro is a no-op; a train-only parameter re-runs only train."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from ldeq_core.checkpoints import load_checkpoint
from tests.pipelines.test_dvc_data_stages import DVC, _run, _stage_lines, make_dvc_repo

REPO = Path(__file__).resolve().parents[2]


def _write_params(path: Path, lr: float) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["synthetic"].update(n_train=24, n_test=6, n_videos=2, n_frames=5, workers=1)
    params["preprocess"].update({"rows_per_shard": 16, "progress": False})
    params["model"].update(image_size=64, heatmap_size=16)
    params["train"].update(epochs=2, batch_size=4, val_batch_size=8, lr=lr, num_workers=2, checkpoint_every=1)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_train_stage(tmp_path, ray_local) -> None:
    repo = tmp_path / "repo"
    env = make_dvc_repo(repo, ray_local)
    _write_params(repo / "params.yaml", lr=0.002)

    out = _run([str(DVC), "repro", "train"], repo, env)
    assert _stage_lines(out)[0] == {"prepare", "preprocess", "train"}
    metrics = json.loads((repo / "metrics" / "train.json").read_text())
    assert metrics["epochs"] == 2 and metrics["world_size"] == 2 and 0 < metrics["val_nme"] < 1
    assert load_checkpoint(repo / "models" / "model.pt").model.cfg.image_size == 64
    curves = (repo / "plots" / "train_curves.csv").read_text().splitlines()
    assert curves[0].startswith("epoch") and len(curves) == 3
    with sqlite3.connect(repo / "mlflow.db") as db:  # the embedded default tracking store, in the project folder
        (runs,) = db.execute("select count(*) from runs where status = 'FINISHED'").fetchone()
        (steps,) = db.execute("select count(*) from metrics where key = 'val_nme'").fetchone()
        (versions,) = db.execute("select count(*) from model_versions").fetchone()
    assert runs == 1 and steps == 2 and versions == 1

    assert _stage_lines(_run([str(DVC), "repro", "train"], repo, env)) == (set(), {"prepare", "preprocess", "train"})
    _write_params(repo / "params.yaml", lr=0.001)  # a train-only setting
    assert _stage_lines(_run([str(DVC), "repro", "train"], repo, env)) == ({"train"}, {"prepare", "preprocess"})
