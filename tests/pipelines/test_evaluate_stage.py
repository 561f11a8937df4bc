"""End to end: ``ldeq evaluate`` on a tiny prepared project writes every file, consistently; Ray == sequential."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ldeq_cli.main import app
from pipelines.evaluate import eval_settings, run_evaluate
from pipelines.evaluate.report import pct_change
from pipelines.formats.video_io import read_frames
from tests.pipelines.eval_helpers import tiny_project

N_VIDEOS, N_FRAMES = 4, 6
METHODS = [
    "per_frame",
    "rwr_nfe1",
    "rwr_nfe2",
    "rwr_nfe4",
    "rwr_upstream",
    "rwr_nfe2_gamma1",
    "per_frame+ema",
    "per_frame+one_euro",
    "per_frame+kalman",
]
SMALL_GRIDS = {
    "ema": {"alpha": [0.3, 0.7]},
    "one_euro": {"min_cutoff": [1.0, 5.0], "beta": [0.0, 0.05]},
    "kalman": {"q": [0.1, 1.0], "r": [4.0]},
}


def _evaluate_section(**overrides: Any) -> dict[str, Any]:
    return {
        "parallel": False,
        "torch_threads": 1,
        "videos_per_batch": 3,
        "worst_videos": 1,
        "tuning": {"grids": SMALL_GRIDS},
        **overrides,
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("project")
    params = tiny_project(root, n_videos=N_VIDEOS, n_frames=N_FRAMES)
    return root, params


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        eval_settings({"evaluate": {"actor": 2}})
    with pytest.raises(ValueError, match="model_source"):
        eval_settings({"evaluate": {"model_source": "s3"}})
    with pytest.raises(ValueError, match="videos_per_batch"):
        eval_settings({"evaluate": {"videos_per_batch": 0}})
    assert eval_settings({}).methods.budgets == (1, 2, 4)
    with pytest.raises(ValueError, match=r"params.yaml: unknown inference keys: \['precison'\]"):
        eval_settings({"evaluate": {"inference": {"precison": "tf32"}}})
    with pytest.raises(ValueError, match=r"inference\.precision"):
        eval_settings({"evaluate": {"inference": {"precision": "int8"}}})
    inf = eval_settings({"evaluate": {"inference": {"precision": "bf16", "cuda_graphs": False}}}).inference
    assert inf.resolve("cpu").describe() == "cpu: bf16, contiguous, eager"


@pytest.mark.slow
def test_cli_end_to_end_writes_every_file(project: tuple[Path, dict[str, Any]]) -> None:
    root, params = project
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = {**params, "train": {"mlflow_experiment": "ldeq-test"}, "evaluate": _evaluate_section(mlflow_uri=uri)}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["evaluate", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "Evaluation report" in result.output

    metrics = json.loads((root / "metrics/eval.json").read_text())
    summary = json.loads((root / "outputs/eval/summary.json").read_text())
    per_video = pd.read_parquet(root / "outputs/eval/per_video.parquet")

    # tuning and test videos: a disjoint, stratified split; tuning used exactly the tuning videos
    tune, test = summary["videos"]["tune"], summary["videos"]["test"]
    assert len(tune) == 2 and len(test) == 2 and not set(tune) & set(test)
    assert sorted(summary["filters"]["ids_used"]) == tune
    assert {per_video[per_video.key == k].split.iloc[0] for k in tune} == {"video_easy", "video_hard"}
    assert metrics["tuning.videos"] == 2 and metrics["test.videos"] == 2

    # parquet: one row per (video, method), roles as in the summary
    assert len(per_video) == N_VIDEOS * len(METHODS)
    assert sorted(per_video.method.unique()) == sorted(METHODS)
    assert sorted(per_video[per_video.role == "test"].key.unique()) == test
    assert set(per_video.columns) >= {
        "key",
        "split",
        "role",
        "group",
        "method",
        "n_frames",
        "nme_io",
        "nme_face",
        "nmf",
        "nmf_sqrt2",
        "nfe",
    }

    # metrics: per-video means of the test rows; comparisons follow the percent formula
    rows = per_video[(per_video.role == "test") & (per_video.method == "per_frame")]
    assert metrics["video.overall.per_frame.nmf"] == pytest.approx(rows.nmf.mean(), rel=1e-5)
    assert metrics["video.overall.videos"] == 2 and metrics["video.overall.frames"] == 2 * N_FRAMES
    assert metrics["video.overall.per_frame.nfe"] == pytest.approx(8.0)  # the tiny preset's full solve
    assert metrics["info.rwr_method"] == "rwr_nfe2"
    best = metrics["info.best_filter"]
    assert best in METHODS[-3:] and best == summary["best_filter"]
    # recomputed from the unrounded per-video rows: eval.json keeps 6 significant digits, so recomputing from its
    # rounded means would amplify their 5e-7 relative rounding by new / (new - base) (about 100 for a 1 % change)
    test_rows = per_video[per_video.role == "test"]
    for base, name in (("per_frame", "rwr_vs_per_frame"), (best, "rwr_vs_best_filter")):
        for m in ("nme_io", "nmf"):
            means = test_rows.groupby("method")[m].mean()
            expected = pct_change(float(means["rwr_nfe2"]), float(means[base]))
            # the stored percentage itself is rounded to 6 significant digits: relative error <= 5e-6
            assert metrics[f"compare.overall.{name}.{m}_pct"] == pytest.approx(expected, rel=5e-6, abs=1e-9)
    assert {k for k in metrics if k.startswith("video.pareto.")} == {f"video.pareto.{m}" for m in METHODS}
    assert sum(metrics[f"video.pareto.{m}"] for m in METHODS) == len(summary["pareto"]) >= 1
    for key in (
        "still.test.nme_pct",
        "still.test.fr_pct",
        "still.test.auc",
        "throughput.frames_per_s",
        "filters.ema.alpha",
        "filters.one_euro.min_cutoff",
        "filters.kalman.q",
        "video.video_easy.rwr_nfe1.nme_face_fw",
        "video.video_hard.per_frame+kalman.nmf_sqrt2",
    ):
        assert isinstance(metrics[key], int | float) and math.isfinite(metrics[key]), key
    assert metrics["still.test.images"] == 6
    assert metrics["filters.ema.alpha"] in (0.3, 0.7)

    # plots and their DVC data
    for name in ("eval_front", "eval_flicker", "eval_ced"):
        png = (root / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    front = pd.read_csv(root / "plots/eval_front.csv")
    assert sorted(front.method) == sorted(METHODS) and front.pareto.sum() == len(summary["pareto"])
    flicker = pd.read_csv(root / "plots/eval_flicker.csv")
    assert list(flicker.columns) == ["frame", "per_frame", "rwr"] and len(flicker) == N_FRAMES - 1
    worst = rows.sort_values("nmf", ascending=False).key.iloc[0]
    assert math.sqrt((flicker.per_frame**2).mean()) == pytest.approx(rows.set_index("key").nmf[worst], rel=1e-4)
    assert list(pd.read_csv(root / "plots/eval_ced.csv").columns) == ["nme", "fraction"]

    # one overlay (worst_videos: 1): per-frame | RwR side by side, every frame
    overlays = sorted((root / "outputs/overlays").glob("*.mp4"))
    assert len(overlays) == 1 and overlays[0].name == worst.replace("/", "__") + ".mp4"
    frames = read_frames(overlays[0])
    assert frames.shape == (N_FRAMES, 288, 2 * 384, 3)  # synthetic clips are 384x288, below overlay_max_height

    # MLflow: a finished run in the training experiment with the metrics and plots
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["ldeq.kind"] == "evaluate"
    assert client.get_experiment(run.info.experiment_id).name == "ldeq-test"
    assert run.data.metrics["video.overall.rwr_nfe2.nmf"] == pytest.approx(metrics["video.overall.rwr_nfe2.nmf"])
    assert "video.overall.per_frame-kalman.nmf" in run.data.metrics  # '+' is not allowed in MLflow keys
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/eval_front.png" in artifacts


@pytest.mark.slow
def test_stage_on_ray_equals_sequential_stage(
    project: tuple[Path, dict[str, Any]], tmp_path: Path, ray_local: str
) -> None:
    """The stage's Ray path (2 actors x 0.5 CPU) gives the same per-video numbers as its sequential path."""
    root, params = project
    seq_root = tmp_path / "seq"
    par_root = tmp_path / "par"
    for r in (seq_root, par_root):
        r.mkdir()
        (r / "data").symlink_to(root / "data")
        (r / "models").symlink_to(root / "models")
    common = {"mlflow_uri": "", "worst_videos": 0, "shards_dir": "no_shards_here"}  # videos only
    seq = run_evaluate({**params, "evaluate": _evaluate_section(**common)}, seq_root, progress=False)
    par = run_evaluate(
        {**params, "evaluate": _evaluate_section(**common, parallel=True, actors=2)}, par_root, progress=False
    )
    assert par["summary"]["run"]["mode"] == "ray" and seq["summary"]["run"]["mode"] == "sequential"
    a = pd.read_parquet(seq_root / "outputs/eval/per_video.parquet")
    b = pd.read_parquet(par_root / "outputs/eval/per_video.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    same = {k: v for k, v in seq["metrics"].items() if not k.startswith(("throughput.", "info."))}
    assert same == {k: v for k, v in par["metrics"].items() if not k.startswith(("throughput.", "info."))}
    # no still split: no still metrics, but every declared DVC plot output exists (a placeholder)
    assert not any(k.startswith("still.") for k in par["metrics"])
    assert (par_root / "plots/eval_ced.csv").read_text() == "nme,fraction\n"
    assert (par_root / "plots/eval_ced.png").stat().st_size > 0
    assert not list((par_root / "outputs/overlays").glob("*.mp4"))  # worst_videos: 0


@pytest.mark.slow
def test_model_from_the_mlflow_registry(project: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """evaluate.model_source=registry loads the registered version (alias) through the training helpers."""
    from mlflow import MlflowClient

    from pipelines.evaluate.stage import load_model
    from pipelines.train.tracking import register_checkpoint

    root, _ = project
    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("reg-test", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "best.pt").write_bytes((root / "models/model.pt").read_bytes())
    client.log_artifact(run.info.run_id, str(tmp_path / "best" / "best.pt"), "model")  # what training logs
    reg = register_checkpoint(uri, "ldeq-test-model", run.info.run_id, {"val_nme": 0.5})
    params = {
        "train": {"registered_model": "ldeq-test-model", "mlflow_uri": uri},
        "evaluate": {"model_source": "registry", "model_alias": "champion"},
    }
    model, info = load_model(eval_settings(params), tmp_path, params)
    assert info == {
        "source": "registry",
        "name": "ldeq-test-model",
        "alias": "champion",
        "version": str(reg["version"]),
        "train_run": run.info.run_id,
    }
    from ldeq_core.checkpoints import load_checkpoint

    expected = load_checkpoint(root / "models/model.pt").model.state_dict()
    for k, v in model.state_dict().items():
        assert bool((v == expected[k]).all()), k
    with pytest.raises(ValueError, match="not found"):
        load_model(
            eval_settings({**params, "evaluate": {"model_source": "registry", "model_alias": "nope"}}), tmp_path, params
        )
