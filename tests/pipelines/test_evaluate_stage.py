"""End to end: ``ldeq evaluate`` on a tiny prepared project writes every file, consistently; Ray == sequential."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ldeq_cli.main import app
from ldeq_shared.params import Params
from ldeq_shared.video_io import read_frames
from pipelines.evaluate import eval_settings, run_evaluate
from pipelines.evaluate.report import pct_change
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
    with pytest.raises(ValueError, match=r"params\.yaml: evaluate\.inference\.precison: unknown key"):
        eval_settings({"evaluate": {"inference": {"precison": "tf32"}}})
    with pytest.raises(ValueError, match=r"inference\.precision"):
        eval_settings({"evaluate": {"inference": {"precision": "int8"}}})
    inf = eval_settings({"evaluate": {"inference": {"precision": "bf16", "cuda_graphs": False}}}).inference
    assert inf.resolve("cpu").describe() == "cpu: bf16, contiguous, eager"


@dataclass(frozen=True)
class Evaluated:
    """What one ``ldeq evaluate`` run on the tiny project wrote (shared by the tests below)."""

    root: Path
    output: str
    mlflow_uri: str
    metrics: dict[str, Any]
    summary: dict[str, Any]
    per_video: pd.DataFrame

    def rows(self, method: str = "per_frame", split: str | None = None) -> pd.DataFrame:
        """The per-video rows of the test videos for ``method`` (and ``split`` when given)."""
        pv = self.per_video
        rows = pv[(pv.role == "test") & (pv.method == method)]
        return rows if split is None else rows[rows.split == split]

    @property
    def worst(self) -> str:
        """The test video of highest per-frame NMF."""
        return str(self.rows().sort_values("nmf", ascending=False).key.iloc[0])


@pytest.fixture(scope="module")
def evaluated(project: tuple[Path, dict[str, Any]]) -> Evaluated:
    """``ldeq evaluate`` through the CLI, once for this module, with MLflow tracking to a local SQLite store."""
    root, params = project
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = {**params, "train": {"mlflow_experiment": "ldeq-test"}, "evaluate": _evaluate_section(mlflow_uri=uri)}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["evaluate", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    return Evaluated(
        root=root,
        output=result.output,
        mlflow_uri=uri,
        metrics=json.loads((root / "metrics/eval.json").read_text()),
        summary=json.loads((root / "outputs/eval/summary.json").read_text()),
        per_video=pd.read_parquet(root / "outputs/eval/per_video.parquet"),
    )


@pytest.mark.slow
def test_cli_prints_the_report(evaluated: Evaluated) -> None:
    assert "Evaluation report" in evaluated.output


@pytest.mark.slow
def test_tuning_and_test_videos_are_a_disjoint_stratified_split(evaluated: Evaluated) -> None:
    metrics, summary, per_video = evaluated.metrics, evaluated.summary, evaluated.per_video
    tune, test = summary["videos"]["tune"], summary["videos"]["test"]
    assert len(tune) == 2 and len(test) == 2 and not set(tune) & set(test)
    assert sorted(summary["filters"]["ids_used"]) == tune  # tuning used exactly the tuning videos
    assert {per_video[per_video.key == k].split.iloc[0] for k in tune} == {"video_easy", "video_hard"}
    assert metrics["tuning.videos"] == 2 and metrics["test.videos"] == 2


@pytest.mark.slow
def test_per_video_parquet_has_one_row_per_video_and_method(evaluated: Evaluated) -> None:
    per_video, test = evaluated.per_video, evaluated.summary["videos"]["test"]
    assert len(per_video) == N_VIDEOS * len(METHODS)
    assert sorted(per_video.method.unique()) == sorted(METHODS)
    assert sorted(per_video[per_video.role == "test"].key.unique()) == test  # roles as in the summary
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


@pytest.mark.slow
def test_video_metrics_are_means_of_the_test_rows(evaluated: Evaluated) -> None:
    """eval.json's video metrics against the per-video rows: per-video means, frame-weighted means, percent changes
    and the Pareto flags."""
    metrics, summary, per_video = evaluated.metrics, evaluated.summary, evaluated.per_video
    rows = evaluated.rows()
    assert metrics["video.overall.per_frame.nmf"] == pytest.approx(rows.nmf.mean(), rel=1e-5)
    assert metrics["video.overall.videos"] == 2 and metrics["video.overall.frames"] == 2 * N_FRAMES
    assert metrics["video.overall.per_frame.nfe"] == pytest.approx(8.0)  # the tiny preset's full solve
    # per split: NME frame-weighted by frames, NMF per-video means (eval.json keeps 6 significant digits)
    easy = evaluated.rows("rwr_nfe1", "video_easy")
    fw = float((easy.nme_face * easy.n_frames).sum() / easy.n_frames.sum())
    assert len(easy) >= 1 and metrics["video.video_easy.rwr_nfe1.nme_face_fw"] == pytest.approx(fw, rel=1e-5)
    hard = evaluated.rows("per_frame+kalman", "video_hard")
    assert len(hard) >= 1
    assert metrics["video.video_hard.per_frame+kalman.nmf_sqrt2"] == pytest.approx(hard.nmf_sqrt2.mean(), rel=1e-5)
    assert float(hard.nmf_sqrt2.mean()) == pytest.approx(float(hard.nmf.mean()) / math.sqrt(2), rel=1e-9)
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
    # the Pareto set, recomputed: no other method is at least as good in both NME io and NMF and better in one
    means = test_rows.groupby("method")[["nme_io", "nmf"]].mean()
    for m in METHODS:
        x, y = means.loc[m]
        dominated = any(ox <= x and oy <= y and (ox < x or oy < y) for o, (ox, oy) in means.iterrows() if o != m)
        assert metrics[f"video.pareto.{m}"] == int(not dominated), m


@pytest.mark.slow
def test_still_metrics_match_an_independent_recomputation(evaluated: Evaluated) -> None:
    """The model run here on the still shards (same batches: one per shard file), scored by hand: inter-ocular
    NME (outer eye corners 60 and 72 of the 98-point layout) with the GT clipped to the 256 px crop, FR@0.1 and
    AUC@0.1 as the exact integral of the CED (the stage integrates on a 1e-4 grid: within 1e-3 of it)."""
    import cv2
    import pyarrow.parquet as pq
    import torch

    from ldeq_core.checkpoints import load_checkpoint
    from ldeq_core.geometry import to_model_input
    from pipelines.shards import decode_batch, split_files

    model = load_checkpoint(evaluated.root / "models/model.pt").model.eval()
    size = model.cfg.image_size
    preds, gts = [], []
    for path in split_files(evaluated.root / "data/shards", "test"):
        dec = decode_batch(pq.read_table(path))
        imgs = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in dec["image"]])
        with torch.no_grad():
            preds.append(model(to_model_input(imgs)).coords.double().numpy() * 256.0)
        gts.append(dec["landmarks"].astype(np.float64))
    pred, gt = np.concatenate(preds), np.clip(np.concatenate(gts), 0.0, 256.0)
    inter_ocular = np.linalg.norm(gt[:, 60] - gt[:, 72], axis=-1)
    nmes = np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / inter_ocular
    metrics = evaluated.metrics
    assert metrics["still.test.images"] == len(nmes) == 6
    assert metrics["still.test.nme_pct"] == pytest.approx(100.0 * nmes.mean(), rel=1e-4)
    assert metrics["still.test.fr_pct"] == pytest.approx(100.0 * np.mean(nmes > 0.1), abs=1e-9)
    assert metrics["still.test.auc"] == pytest.approx(np.mean(np.clip(0.1 - nmes, 0.0, None)) / 0.1, abs=1e-3)
    # the CED CSV ends at the threshold, where it reaches the fraction of images that did not fail
    ced = pd.read_csv(evaluated.root / "plots/eval_ced.csv")
    assert ced.nme.iloc[-1] == pytest.approx(0.1) and ced.nme.is_monotonic_increasing
    assert ced.fraction.iloc[-1] == pytest.approx(np.mean(nmes <= 0.1), abs=1e-6)


@pytest.mark.slow
def test_throughput_is_frames_times_methods_over_the_wall_time(evaluated: Evaluated) -> None:
    metrics, summary = evaluated.metrics, evaluated.summary
    tp = summary["throughput"]
    trackers = [m for m in METHODS if "+" not in m]  # filters smooth a tracker's output: no model calls of their own
    frames = N_VIDEOS * N_FRAMES
    assert (tp["videos"], tp["frames"], tp["workers"]) == (N_VIDEOS, frames, 1)
    assert 0.0 < tp["wall_s"] <= summary["wall_s"]  # the video pass is part of the whole stage
    assert metrics["throughput.wall_s"] == pytest.approx(tp["wall_s"], rel=1e-5)
    assert metrics["throughput.frames_per_s"] == pytest.approx(frames * len(trackers) / tp["wall_s"], rel=1e-5)
    # sequential (one worker): the compute seconds of the tracker methods add up to no more than the wall time
    method_s = [frames / metrics[f"throughput.{m}.frames_per_s"] for m in trackers]
    assert all(s > 0 for s in method_s) and sum(method_s) <= tp["wall_s"] * (1 + 1e-5)
    assert not any(k.startswith("throughput.per_frame+") for k in metrics)


@pytest.mark.slow
def test_tuned_filter_parameters_are_grid_points_chosen_on_the_tuning_videos(evaluated: Evaluated) -> None:
    """Each filter's parameters are a point of its (configured) grid, the one the constrained objective ranks
    first among tuning.csv's rows; tuning.csv's scores are the per-video means of the tuning videos."""
    metrics, summary, pv = evaluated.metrics, evaluated.summary, evaluated.per_video
    assert metrics["filters.ema.alpha"] in (0.3, 0.7)
    chosen = summary["filters"]["chosen"]
    assert set(chosen) == set(SMALL_GRIDS)
    for f, grid in SMALL_GRIDS.items():
        assert set(chosen[f]) == set(grid)
        for p, values in grid.items():
            assert chosen[f][p] in values and metrics[f"filters.{f}.{p}"] == chosen[f][p], (f, p)
    tuning = pd.read_csv(evaluated.root / "outputs/eval/tuning.csv")
    assert len(tuning) == sum(math.prod(len(v) for v in g.values()) for g in SMALL_GRIDS.values())
    tune_rows = pv[pv.role == "tune"]
    base = summary["filters"]["tuning_unfiltered"]
    assert base["nme_io"] == pytest.approx(tune_rows[tune_rows.method == "per_frame"].nme_io.mean(), rel=1e-9)
    keys: dict[str, tuple[bool, float]] = {}
    for f in SMALL_GRIDS:
        rows = tuning[tuning["filter"] == f]
        assert sorted(json.dumps(json.loads(p), sort_keys=True) for p in rows.params) == sorted(
            json.dumps(dict(zip(SMALL_GRIDS[f], combo, strict=True)), sort_keys=True)
            for combo in itertools.product(*SMALL_GRIDS[f].values())
        )
        bound = base["nme_io"] * 1.05  # the default constrained objective: NME io within 5 % of the unfiltered one
        feasible = rows.nme_io <= bound
        clear = (rows.nme_io / bound - 1).abs() > 1e-5  # tuning.csv keeps 6 significant digits
        assert (rows.feasible.astype(bool) == feasible)[clear].all(), f
        objective = np.where(rows.feasible.astype(bool), rows.nmf, rows.nme_io)
        np.testing.assert_allclose(rows.objective, objective, rtol=1e-5)
        rank = list(zip(~rows.feasible.astype(bool), rows.objective, strict=True))
        assert rows.chosen.sum() == 1, f
        keys[f] = rank[int(np.flatnonzero(rows.chosen.to_numpy() == 1)[0])]
        assert keys[f] == min(rank), f  # the chosen row ranks first
        row = rows[rows.chosen == 1].iloc[0]
        assert json.loads(row.params) == chosen[f]
        # its scores: per-video means over the tuning videos of the filtered per-frame track, as in the parquet
        filtered = tune_rows[tune_rows.method == f"per_frame+{f}"]
        assert len(filtered) == 2
        assert row.nme_io == pytest.approx(filtered.nme_io.mean(), rel=1e-5)
        assert row.nmf == pytest.approx(filtered.nmf.mean(), rel=1e-5)
    assert summary["best_filter"] == f"per_frame+{min(keys, key=keys.__getitem__)}"


@pytest.mark.slow
def test_plots_and_their_dvc_data(evaluated: Evaluated) -> None:
    root, summary = evaluated.root, evaluated.summary
    for name in ("eval_front", "eval_flicker", "eval_ced"):
        png = (root / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    front = pd.read_csv(root / "plots/eval_front.csv")
    assert sorted(front.method) == sorted(METHODS) and front.pareto.sum() == len(summary["pareto"])
    flicker = pd.read_csv(root / "plots/eval_flicker.csv")
    assert list(flicker.columns) == ["frame", "per_frame", "rwr"] and len(flicker) == N_FRAMES - 1
    nmf = evaluated.rows().set_index("key").nmf[evaluated.worst]
    assert math.sqrt((flicker.per_frame**2).mean()) == pytest.approx(nmf, rel=1e-4)
    assert list(pd.read_csv(root / "plots/eval_ced.csv").columns) == ["nme", "fraction"]


@pytest.mark.slow
def test_one_overlay_of_the_worst_video(evaluated: Evaluated) -> None:
    """worst_videos: 1: per-frame | RwR side by side, every frame."""
    overlays = sorted((evaluated.root / "outputs/overlays").glob("*.mp4"))
    assert len(overlays) == 1 and overlays[0].name == evaluated.worst.replace("/", "__") + ".mp4"
    frames = read_frames(overlays[0])
    assert frames.shape == (N_FRAMES, 288, 2 * 384, 3)  # synthetic clips are 384x288, below overlay_max_height


@pytest.mark.slow
def test_mlflow_run_has_the_metrics_and_plots(evaluated: Evaluated) -> None:
    """A finished run in the training experiment with the metrics and plots."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=evaluated.mlflow_uri)
    run = client.get_run(evaluated.summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["ldeq.kind"] == "evaluate"
    assert client.get_experiment(run.info.experiment_id).name == "ldeq-test"
    metrics = evaluated.metrics
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
    typed = Params.from_mapping(params)
    model, info = load_model(typed.evaluate, tmp_path, typed.train)
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
            eval_settings({**params, "evaluate": {"model_source": "registry", "model_alias": "nope"}}),
            tmp_path,
            typed.train,
        )
