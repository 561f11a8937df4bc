"""A real ``dvc repro train`` (prepare -> preprocess -> train) in a throw-away copy of the repository: metrics,
model and MLflow records appear, the console shows one line per epoch; a second repro is a no-op and a train-only
parameter puts only train out of date. Then two real ``dvc exp run``s of evaluate settings through the headline
stage (train is not re-run), compared by ``dvc metrics diff`` (at most 40 numbers) and ``dvc plots diff``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ldeq_core.checkpoints import load_checkpoint
from pipelines.headline import count_numbers
from tests.pipelines.test_dvc_data_stages import DVC, _run, _stage_lines, make_dvc_repo
from tests.pipelines.test_train_reporting import EPOCH_LINE

REPO = Path(__file__).resolve().parents[2]
PLOTS = ("train_loss", "val_nme", "ced", "nme_nmf_front", "flicker")


def _write_params(path: Path, lr: float) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # 4 videos: one tuning and one test video per split (video_easy, video_hard)
    params["data"]["synthetic"].update(n_train=24, n_test=6, n_videos=4, n_frames=5, workers=1)
    params["preprocess"].update({"rows_per_shard": 16, "progress": False})
    params["model"].update(image_size=64, heatmap_size=16)
    params["train"].update(epochs=2, batch_size=4, val_batch_size=8, lr=lr, num_workers=2, checkpoint_every=1)
    params["evaluate"].update(parallel=False, torch_threads=1, worst_videos=0, mlflow_uri="")
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _json(args: list[str], repo: Path, env: dict[str, str]) -> Any:
    """The JSON a DVC command prints on stdout (its warnings go to stderr)."""
    res = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
    return json.loads(res.stdout)


def _check_headline(repo: Path) -> dict[str, Any]:
    """metrics/headline.json: at most 40 numbers, each one the value of the detailed file it comes from."""
    head = json.loads((repo / "metrics/headline.json").read_text())
    train = json.loads((repo / "metrics/train.json").read_text())
    ev = json.loads((repo / "metrics/eval.json").read_text())
    assert 20 <= count_numbers(head) <= 40
    assert head["val"]["nme_pct"] == pytest.approx(100 * train["val_nme"], rel=1e-5)
    assert head["still"]["auc"] == pytest.approx(ev["still.test.auc"], rel=1e-5)
    rwr, best = head["methods"]["rwr"], head["methods"]["best_filter"]
    assert rwr == ev["info.rwr_method"] and best == ev["info.best_filter"]
    assert {"per_frame", rwr, best} <= set(head["video_nmf"])
    for m, nmf in head["video_nmf"].items():
        assert nmf == pytest.approx(ev[f"video.overall.{m}.nmf"], rel=1e-5)
        assert head["video_nme"][m] == pytest.approx(ev[f"video.overall.{m}.nme_io"], rel=1e-5)
    for vs in ("rwr_vs_per_frame", "rwr_vs_best_filter"):
        assert head[vs]["nmf_pct"] == pytest.approx(ev[f"compare.overall.{vs}.nmf_pct"], rel=1e-5)
    assert head["throughput"]["eval_frames_per_s"] == pytest.approx(ev["throughput.frames_per_s"], rel=1e-5)
    return head


@pytest.mark.slow
def test_dvc_repro_train_stage_then_experiments(tmp_path, ray_local) -> None:
    repo = tmp_path / "repo"
    env = make_dvc_repo(repo, ray_local)
    _write_params(repo / "params.yaml", lr=0.002)

    out = _run([str(DVC), "repro", "train"], repo, env)
    assert _stage_lines(out)[0] == {"prepare", "preprocess", "train"}
    # the console: one line per epoch from rank 0, no per-report metric dicts from Ray Train
    epochs = [m.groups() for m in EPOCH_LINE.finditer(out)]
    assert epochs == [("1", "2"), ("2", "2")], out[-4000:]
    assert "Reporting training result" not in out and "TrainingReport(" not in out
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
    _write_params(repo / "params.yaml", lr=0.001)  # a train-only setting: only train is out of date
    status = _json([str(DVC), "status", "train", "--json"], repo, env)  # train and what it depends on
    assert set(status) == {"train"} and "params.yaml" in json.dumps(status["train"])
    _write_params(repo / "params.yaml", lr=0.002)

    # experiments start from a commit; the tracking store and Ray's run folders stay out of git
    (repo / ".gitignore").write_text("/mlflow.db\n/outputs/ray_results/\n/outputs/mlartifacts/\n__pycache__/\n")
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "baseline"], repo, env)
    heads = {}
    for name, budget in (("rwr1", 1), ("rwr4", 4)):  # two evaluate settings: the primary RwR budget
        out = _run(
            [str(DVC), "exp", "run", "headline", "-n", name, "-S", f"evaluate.methods.primary_budget={budget}"],
            repo,
            env,
        )
        assert _stage_lines(out) == ({"evaluate", "headline"}, {"prepare", "preprocess", "train"})
        heads[name] = _check_headline(repo)
        assert heads[name]["methods"]["rwr"] == f"rwr_nfe{budget}_warp"

    # `dvc metrics diff`: only the headline file (serve_smoke did not run), at most 40 numbers, RwR's changes moved
    diff = _json([str(DVC), "metrics", "diff", "rwr1", "rwr4", "--all", "--json"], repo, env)
    assert set(diff) == {"metrics/headline.json"}
    rows = diff["metrics/headline.json"]
    numbers = [r for r in rows.values() if isinstance(r["new"], int | float)]
    assert len(numbers) == count_numbers(heads["rwr4"]) <= 40
    old, new = rows["rwr_vs_per_frame.nmf_pct"]["old"], rows["rwr_vs_per_frame.nmf_pct"]["new"]
    assert (old, new) == (heads["rwr1"]["rwr_vs_per_frame"]["nmf_pct"], heads["rwr4"]["rwr_vs_per_frame"]["nmf_pct"])
    assert old != new and rows["val.nme_pct"]["old"] == rows["val.nme_pct"]["new"]  # the same trained model

    # `dvc plots diff`: every defined plot drawn with the data of both experiments
    plots = _json([str(DVC), "plots", "diff", "rwr1", "rwr4", "--json"], repo, env)["data"]
    for name in PLOTS:
        (plot,) = plots[name]
        assert plot["type"] == "vega" and plot["revisions"] == ["rwr1", "rwr4"], name
        assert {v["rev"] for v in plot["content"]["data"]["values"]} == {"rwr1", "rwr4"}, name
    front = [v for v in plots["nme_nmf_front"][0]["content"]["data"]["values"] if v["rev"] == "rwr4"]
    assert {v["method"] for v in front} >= {"per_frame", "rwr_nfe4_warp", heads["rwr4"]["methods"]["best_filter"]}
    assert {p["type"] for p in (plots["plots/train_curves.png"] + plots["plots/eval_front.png"])} == {"image"}
