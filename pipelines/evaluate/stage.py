"""The ``evaluate`` stage: RwR vs per-frame inference vs classic filters, on the configured dataset.

``run_evaluate(params, root)`` reads the ``evaluate`` section of params.yaml, loads the model (a checkpoint file
or an MLflow registry version), runs every tracker method over every video of ``<data.out>/prepared.json``
(Ray Data actor pool, or the sequential loop), tunes the filters on the tuning videos, scores the test videos and
the still test splits, and writes (paths relative to ``root``):

- ``metrics/eval.json`` (one flat mapping, keys below; the ``headline`` stage copies the main ones for DVC);
- ``outputs/eval/per_video.parquet``: one row per (video, method): ``key``, ``dataset``, ``video_id``,
  ``split``, ``role`` (``tune``/``test``), ``group``, ``method``, ``n_frames``, ``nme_io``, ``nme_face``,
  ``nmf``, ``nmf_sqrt2``, ``nfe``;
- ``outputs/eval/summary.json`` (settings, model, tune/test ids, chosen filter parameters, Pareto set, the
  metric conventions), ``outputs/eval/tuning.csv`` (every grid point's tuning scores), ``outputs/eval/report.md``
  (tables);
- ``plots/eval_front.{png,csv}``, ``plots/eval_flicker.{png,csv}``, ``plots/eval_ced.{png,csv}`` (stills);
- ``outputs/overlays/<dataset>__<id>.mp4`` for the ``worst_videos`` test videos of highest per-frame NMF;

and logs the metrics, parameters and files to the training MLflow experiment when a tracking URI is configured.

``metrics/eval.json`` keys (units in :mod:`pipelines.evaluate.report`):

- ``video.<split>.videos`` / ``.frames``; ``video.<split>.<method>.<metric>`` with metric in ``nme_io``,
  ``nme_face``, ``nmf``, ``nmf_sqrt2`` (per-video means), the same with ``_fw`` (frame-weighted) and ``nfe``;
  ``<split>`` is each video split (``video_easy``, ``video_hard``, ...) and ``overall``;
- ``video.pareto.<method>``: 1 when the method is on the NME-io/NMF Pareto front (overall, per-video means);
- ``compare.<split>.rwr_vs_per_frame.<metric>_pct`` and ``compare.<split>.rwr_vs_best_filter.<metric>_pct``:
  relative change (%) of the primary RwR method (``info.rwr_method``) against per-frame inference and against the
  best filter (``info.best_filter``, chosen on the tuning videos), for ``nme_io``, ``nme_face``, ``nmf`` (+ ``_fw``);
- ``still.<split>.nme_pct`` / ``fr_pct`` / ``auc`` / ``images`` / ``nfe`` for every still test split;
- ``throughput.*`` (frames per second, wall time), ``filters.<filter>.<param>`` (chosen values),
  ``tuning.videos``, ``test.videos``, and ``info.*`` strings (methods compared, model, mode).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ldeq_core.fileio import atomic_path, write_text_atomic
from ldeq_core.filters import apply_filter
from ldeq_core.metrics import ced_curve, video_nme
from ldeq_shared.eval_settings import EvalSettings
from ldeq_shared.params import Params, as_params, load_params
from ldeq_shared.prepared import Prepared, load_prepared
from ldeq_shared.ray_session import start_or_attach
from ldeq_shared.train_settings import TrainConfig, resolve_tracking_uri
from pipelines.evaluate.methods import (
    PER_FRAME,
    Method,
    build_methods,
    primary_rwr,
    trackers,
)
from pipelines.evaluate.report import (
    OVERALL,
    VIDEO_METRICS,
    aggregate,
    compare,
    flat_metrics,
    frame_jitter,
    markdown_table,
    pareto_front,
    still_nmes,
    still_summary,
    video_scores,
)
from pipelines.evaluate.runner import (
    RunResult,
    VideoRef,
    evaluate_parallel,
    evaluate_sequential,
    evaluate_stills,
    make_refs,
)
from pipelines.evaluate.tune_filters import (
    TuneResult,
    TuneTrack,
    split_tune_test,
    tune_filters,
)

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]

METRICS_FILE = "metrics/eval.json"
OUT_DIR = "outputs/eval"
OVERLAY_DIR = "outputs/overlays"
PLOTS_DIR = "plots"


def eval_settings(params: Params | Mapping[str, Any], where: str = "params.yaml") -> EvalSettings:
    """The typed ``evaluate`` section of ``params`` (a :class:`Params`, or a mapping parsed by it)."""
    return as_params(params, where).evaluate


# ------------------------------------------------------------------------------------------------ helpers
def _abs(path: str | os.PathLike[str], root: Path) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    return p if p.is_absolute() else (root / p)


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(
    s: EvalSettings, root: Path, train: TrainConfig, checkpoint: PathLike | None = None
) -> tuple[Any, dict[str, Any]]:
    """The model to evaluate and a description of where it came from (registry defaults: the ``train`` section)."""
    if checkpoint is not None or s.model_source == "checkpoint":
        from ldeq_core.checkpoints import load_checkpoint

        path = _abs(checkpoint if checkpoint is not None else s.checkpoint, root)
        loaded = load_checkpoint(path)
        return loaded.model.eval(), {
            "source": "checkpoint",
            "path": str(path),
            "sha256": loaded.sha256,
            "train_run": str(loaded.metadata.get("mlflow_run_id", "")),
        }
    from ldeq_shared.registry import load_registered_checkpoint

    uri = resolve_tracking_uri(s.mlflow_uri or train.mlflow_uri, root)
    name = s.registered_model or train.registered_model
    loaded, mv = load_registered_checkpoint(name, s.model_alias, tracking_uri=uri)  # the resolver serve uses too
    return loaded.model.eval(), {
        "source": "registry",
        "name": name,
        "alias": s.model_alias,
        "version": str(mv.version),
        "train_run": str(mv.run_id or ""),
    }


def _start_ray(s: EvalSettings) -> bool:
    """Use the running Ray, or join ``RAY_ADDRESS``, or start a local cluster; True when this call started it."""
    return start_or_attach(
        num_cpus=os.cpu_count() or 1,
        object_store_mb=s.object_store_mb,
        log_to_driver=False,
        logging_level=logging.WARNING,
    ).owned


def _gpu_plan(s: EvalSettings) -> float:
    """GPUs per actor: 0 on CPU clusters; else the configured value or an even share (at most 1) per actor."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if s.use_gpu is False or (s.use_gpu == "auto" and gpus <= 0):
        return 0.0
    if gpus <= 0:
        raise ValueError("evaluate.use_gpu is true but the Ray cluster has no GPU")
    return float(s.gpus_per_actor) if s.gpus_per_actor else min(1.0, gpus / s.actors)


def video_sets(prep: Prepared, max_videos: int | None) -> list[tuple[str, str, dict[str, list[str]]]]:
    """(dataset, absolute root, {split: ids}) of every video set of ``prepared.json`` (ids sorted, capped)."""
    out = []
    for vs in prep.videos:
        splits = {split: sorted(entry["items"])[:max_videos] for split, entry in sorted(vs.splits.items())}
        out.append((vs.dataset, str(prep.resolve(vs.root)), {k: v for k, v in splits.items() if v}))
    return out


def still_splits(shards_dir: Path, wanted: list[str] | None) -> list[str]:
    """The still splits to score: ``wanted``, or every shard split ``test`` / ``test_*`` (``test`` first), or
    ``val`` when there is no test split (300-W: the held-out photos)."""
    from pipelines.shards import list_splits

    if not shards_dir.is_dir():
        if wanted:
            raise ValueError(f"{shards_dir}: shards folder does not exist but evaluate.still_splits is set")
        return []
    present = list_splits(shards_dir)
    if wanted:
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise ValueError(f"{shards_dir}: evaluate.still_splits {missing} not found (present: {present})")
        return list(wanted)
    tests = [s for s in present if s == "test" or s.startswith("test_")]
    if not tests and "val" in present:
        return ["val"]
    return sorted(tests, key=lambda s: (s != "test", s))


def _video_rows(
    run: RunResult,
    methods: list[Method],
    chosen: Mapping[str, Mapping[str, Mapping[str, float]]],
    roles: Mapping[str, str],
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Per-(video, method) scores and the landmark tracks of every method (filters applied here)."""
    rows = []
    tracks: dict[str, dict[str, np.ndarray]] = {}
    for v in run.videos:
        tracks[v.ref.key] = {}
        for m in methods:
            if m.kind == "tracker":
                lm, nfe = v.tracks[m.name].landmarks, v.tracks[m.name].nfe
            else:
                assert m.base is not None and m.filter is not None
                base = v.tracks[m.base]
                lm, nfe = apply_filter(m.filter, chosen[m.base][m.filter], base.landmarks, v.fps), base.nfe
            tracks[v.ref.key][m.name] = lm
            rows.append(
                {
                    "key": v.ref.key,
                    "dataset": v.ref.dataset,
                    "video_id": v.ref.video_id,
                    "split": v.ref.split,
                    "role": roles[v.ref.key],
                    "group": v.group,
                    "method": m.name,
                    "n_frames": len(v.gt),
                    **video_scores(lm, v.gt, nfe),
                }
            )
    return pd.DataFrame(rows), tracks


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace("/", "__"))


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n")


def _write_figures(
    root: Path,
    s: EvalSettings,
    video_agg: Mapping[str, Any] | None,
    names: list[str],
    pareto: list[str],
    rwr: str,
    test_rows: pd.DataFrame,
    run: RunResult | None,
    tracks: Mapping[str, Mapping[str, np.ndarray]],
    ced: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, str]:
    """The plots (a placeholder where there is nothing to show, so every DVC output exists) and the overlays."""
    from ldeq_shared.video_io import read_frames
    from pipelines.evaluate import plots

    plots_dir, overlay_dir = root / PLOTS_DIR, root / OVERLAY_DIR
    for d in (plots_dir, overlay_dir):
        d.mkdir(parents=True, exist_ok=True)
    for stale in overlay_dir.glob("*.mp4"):
        stale.unlink()
    files = {
        "front_png": f"{PLOTS_DIR}/eval_front.png",
        "front_csv": f"{PLOTS_DIR}/eval_front.csv",
        "flicker_png": f"{PLOTS_DIR}/eval_flicker.png",
        "flicker_csv": f"{PLOTS_DIR}/eval_flicker.csv",
        "ced_png": f"{PLOTS_DIR}/eval_ced.png",
        "ced_csv": f"{PLOTS_DIR}/eval_ced.csv",
    }
    worst: list[str] = []
    if video_agg is not None and run is not None:
        overall = video_agg[OVERALL]["methods"]
        plots.plot_front(
            root / files["front_png"],
            root / files["front_csv"],
            {m: overall[m] for m in names if m in overall},
            pareto,
            highlight=rwr,
        )
        per_frame = test_rows[test_rows["method"] == PER_FRAME]
        worst = per_frame.sort_values(["nmf", "key"], ascending=[False, True])["key"].tolist()
    else:
        plots.placeholder(
            root / files["front_png"],
            root / files["front_csv"],
            ["method", "nme_io", "nmf", "nfe", "pareto"],
            "no test videos",
        )
    by_key = {v.ref.key: v for v in run.videos} if run is not None else {}
    if worst:
        v, tr = by_key[worst[0]], tracks[worst[0]]
        plots.plot_flicker(
            root / files["flicker_png"],
            root / files["flicker_csv"],
            worst[0],
            frame_jitter(tr[PER_FRAME], v.gt),
            frame_jitter(tr[rwr], v.gt),
            rwr,
        )
    else:
        plots.placeholder(
            root / files["flicker_png"], root / files["flicker_csv"], ["frame", "per_frame", "rwr"], "no test videos"
        )
    if ced:
        plots.plot_ced(root / files["ced_png"], root / files["ced_csv"], ced)
    else:
        plots.placeholder(root / files["ced_png"], root / files["ced_csv"], ["nme", "fraction"], "no still test split")
    for key in worst[: s.worst_videos]:
        v = by_key[key]
        path = overlay_dir / f"{_safe_name(key)}.mp4"
        plots.write_overlay(
            path,
            read_frames(Path(v.ref.root) / "videos" / f"{v.ref.video_id}.mp4"),
            v.gt,
            tracks[key][PER_FRAME],
            tracks[key][rwr],
            ("per-frame", rwr),
            v.fps,
            s.overlay_max_height,
        )
        files[f"overlay:{key}"] = str(path.relative_to(root))
    return files


# -------------------------------------------------------------------------------------------------- stage
def run_evaluate(
    params: Params | Mapping[str, Any],
    root: PathLike = ".",
    *,
    checkpoint: PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the evaluate stage with ``params`` (a :class:`Params`, or a mapping parsed by it); paths relative to
    ``root``. Returns ``{"metrics": flat metrics, "summary": summary.json content, "files"}``."""
    t_start = time.perf_counter()
    root = Path(root).resolve()
    typed = as_params(params)
    s = typed.evaluate
    raw_dir = _abs(s.raw_dir or typed.data.out, root)
    shards_dir = _abs(s.shards_dir or typed.preprocess.out, root)
    say = print if progress else (lambda *_a, **_k: None)

    model, model_info = load_model(s, root, typed.train, checkpoint)
    device = _device(s.device)
    model = model.to(device).eval()
    methods = build_methods(s.methods, model.cfg.image_size)
    tracker_methods = trackers(methods)
    rwr = primary_rwr(s.methods)

    # videos: deterministic tuning / test split per (dataset, split)
    prep = load_prepared(raw_dir)
    if prep.n_landmarks != model.cfg.n_landmarks:
        raise ValueError(
            f"{prep.path}: the data has {prep.n_landmarks} landmarks but the model predicts {model.cfg.n_landmarks}"
        )
    sets = video_sets(prep, s.max_videos)
    roles: dict[str, str] = {}
    tune_keys: list[str] = []
    test_keys: list[str] = []
    for dataset, _, splits in sets:
        tune, test = split_tune_test(splits, s.tuning.fraction, s.tuning.salt)
        for split in splits:
            tune_keys += [f"{dataset}/{v}" for v in tune[split]]
            test_keys += [f"{dataset}/{v}" for v in test[split]]
    roles.update({k: "tune" for k in tune_keys})
    roles.update({k: "test" for k in test_keys})
    refs: list[VideoRef] = make_refs(sets)

    run: RunResult | None = None
    if refs:
        say(
            f"evaluate: {len(refs)} videos ({len(tune_keys)} tuning, {len(test_keys)} test), "
            f"{len(tracker_methods)} tracker methods, {'Ray Data' if s.parallel else 'sequential'}"
        )
        if s.parallel:
            import ray

            started = _start_ray(s)
            try:
                run = evaluate_parallel(
                    model,
                    refs,
                    tracker_methods,
                    group_size=s.videos_per_batch,
                    actors=s.actors,
                    cpus_per_actor=s.cpus_per_actor,
                    gpus_per_actor=_gpu_plan(s),
                    decode_cpus=s.decode_cpus,
                    threads=s.torch_threads,
                    extra_scale=s.methods.extra_scale,
                    inference=s.inference,
                    box_source=s.box_source,
                )
            finally:
                if started:
                    ray.shutdown()
        else:
            run = evaluate_sequential(
                model,
                refs,
                tracker_methods,
                group_size=s.videos_per_batch,
                device=device,
                threads=s.torch_threads,
                extra_scale=s.methods.extra_scale,
                inference=s.inference,
                box_source=s.box_source,
            )

    # filter tuning on the tuning videos only
    filters = [m.filter for m in methods if m.kind == "filter" and m.filter and m.base == PER_FRAME]
    bases = list(dict.fromkeys(m.base for m in methods if m.kind == "filter" and m.base))
    tune_result: TuneResult
    tuned_by_base: dict[str, TuneResult] = {}
    per_video = pd.DataFrame()
    tracks: dict[str, dict[str, np.ndarray]] = {}
    if run is not None:
        by_key = {v.ref.key: v for v in run.videos}
        reference = None
        if s.tuning.reference == PER_FRAME and tune_keys:  # one accuracy budget for filters on every base
            reference = float(
                np.mean([video_nme(by_key[k].tracks[PER_FRAME].landmarks, by_key[k].gt) for k in tune_keys])
            )
        for base in bases:  # each base's filters are tuned on that base's tracks of the tuning videos
            base_filters = [m.filter for m in methods if m.kind == "filter" and m.base == base and m.filter]
            tune_tracks = {
                k: TuneTrack(by_key[k].tracks[base].landmarks, by_key[k].gt, by_key[k].fps) for k in tune_keys
            }
            tuned_by_base[base] = tune_filters(tune_tracks, tune_keys, base_filters, s.tuning, reference)
        tune_result = tuned_by_base.get(PER_FRAME) or tune_filters({}, [], filters, s.tuning)
        per_video, tracks = _video_rows(run, methods, {b: r.chosen for b, r in tuned_by_base.items()}, roles)
    else:
        tune_result = tune_filters({}, [], filters, s.tuning)
    best_filter = f"{PER_FRAME}+{tune_result.best_filter}" if tune_result.best_filter else None

    # aggregation over the test videos
    names = [m.name for m in methods]
    video_agg: dict[str, dict[str, Any]] | None = None
    pareto: list[str] = []
    comparisons: dict[str, dict[str, float]] = {}
    test_rows = per_video[per_video["role"] == "test"] if not per_video.empty else per_video
    if not test_rows.empty:
        video_agg = aggregate(test_rows, names)
        overall = video_agg[OVERALL]["methods"]
        pareto = pareto_front({m: (overall[m]["nme_io"], overall[m]["nmf"]) for m in names if m in overall})
        for split, entry in video_agg.items():
            comparisons[f"{split}.rwr_vs_per_frame"] = compare(entry["methods"], rwr, PER_FRAME)
            if best_filter:
                comparisons[f"{split}.rwr_vs_best_filter"] = compare(entry["methods"], rwr, best_filter)

    # stills
    still_agg: dict[str, dict[str, float]] = {}
    ced: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in still_splits(shards_dir, s.still_splits):
        res = evaluate_stills(
            model, shards_dir, split, batch_size=s.still_batch_size, max_images=s.max_stills, device=device
        )
        nmes = still_nmes(res.pred, res.gt)
        still_agg[split] = {**still_summary(nmes), "nfe": float(np.mean(res.nfe))}
        ced[split] = ced_curve(nmes)

    # files
    out_dir = root / OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_figures(root, s, video_agg, names, pareto, rwr, test_rows, run, tracks, ced)
    from pipelines.evaluate import plots

    throughput = run.throughput() if run is not None else {}
    extra: dict[str, Any] = {f"throughput.{k}": v for k, v in throughput.items()}
    for f, p in tune_result.chosen.items():
        extra.update({f"filters.{f}.{k}": v for k, v in p.items()})
    for base, res in tuned_by_base.items():
        if base != PER_FRAME:
            for f, p in res.chosen.items():
                extra.update({f"filters.{base}+{f}.{k}": v for k, v in p.items()})
    extra.update(
        {
            "tuning.videos": len(tune_keys),
            "test.videos": len(test_keys),
            "info.rwr_method": rwr,
            "info.best_filter": best_filter or "",
            "info.mode": run.mode if run is not None else "none",
            "info.device": run.device if run is not None else str(device),
            "info.inference": run.extra.get("inference", "") if run is not None else "",
            "info.model": model_info.get("path") or f"{model_info.get('name')}@{model_info.get('alias')}",
        }
    )
    metrics = flat_metrics(video_agg, still_agg, comparisons, pareto, extra)
    _write_json(root / METRICS_FILE, metrics)
    files["metrics"] = METRICS_FILE

    if not per_video.empty:
        _write_parquet(per_video, out_dir / "per_video.parquet")
        files["per_video"] = f"{OUT_DIR}/per_video.parquet"
    plots.write_csv(
        out_dir / "tuning.csv",
        ["filter", "params", "nme_io", "nmf", "feasible", "objective", "chosen"],
        [
            [
                r["filter"],
                r["params"],
                f"{r['nme_io']:.6g}",
                f"{r['nmf']:.6g}",
                int(r["feasible"]),
                f"{r['objective']:.6g}",
                int(r["chosen"]),
            ]
            for r in tune_result.scores
        ],
    )
    files["tuning"] = f"{OUT_DIR}/tuning.csv"
    uri = s.mlflow_uri if s.mlflow_uri is not None else typed.train.mlflow_uri
    mlflow_run = _start_mlflow_run(uri, s, typed.train, root, model_info) if uri else None
    try:
        summary = {
            "conventions": VIDEO_METRICS,
            "methods": {m.name: m.label for m in methods},
            "rwr_method": rwr,
            "best_filter": best_filter,
            "pareto": pareto,
            "filters": {
                "chosen": tune_result.chosen,
                "chosen_by_base": {b: r.chosen for b, r in tuned_by_base.items()},
                "tuned": tune_result.tuned,
                "objective": s.tuning.objective,
                "tuning_unfiltered": tune_result.base,
                "ids_used": tune_result.ids_used,
            },
            "videos": {"tune": sorted(tune_keys), "test": sorted(test_keys)},
            "still_splits": list(still_agg),
            "model": model_info,
            "run": {"mode": run.mode, "workers": run.workers, "device": run.device, **run.extra} if run else None,
            "throughput": throughput,
            "mlflow_run_id": mlflow_run[1] if mlflow_run else None,
            "wall_s": time.perf_counter() - t_start,
        }
        _write_json(out_dir / "summary.json", _jsonable(summary))
        files["summary"] = f"{OUT_DIR}/summary.json"
        if video_agg is not None:
            write_text_atomic(
                out_dir / "report.md", _report_md(video_agg, names, pareto, comparisons, still_agg, rwr, best_filter)
            )
            files["report"] = f"{OUT_DIR}/report.md"
        summary["files"] = files
        if mlflow_run:
            _log_mlflow(*mlflow_run, s, root, metrics, summary, files)
    except BaseException:
        if mlflow_run:
            mlflow_run[0].set_terminated(mlflow_run[1], "FAILED")
        raise
    say(f"evaluate: wrote {METRICS_FILE} ({len(metrics)} values) in {time.perf_counter() - t_start:.1f} s")
    return {"metrics": metrics, "summary": summary, "files": files}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _report_md(
    video: Mapping[str, Any],
    names: list[str],
    pareto: list[str],
    comparisons: Mapping[str, Any],
    stills: Mapping[str, Mapping[str, float]],
    rwr: str,
    best_filter: str | None,
) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Primary RwR method: `{rwr}`; best filter (chosen on the tuning videos): `{best_filter}`.",
        "",
        markdown_table(video, names, pareto),
        "## RwR vs baselines (per-video means)",
        "",
        "| split | vs | NME io % change | NME face % change | NMF % change |",
        "|---|---|---|---|---|",
    ]
    for name, res in comparisons.items():
        split, vs = name.split(".", 1)
        lines.append(
            f"| {split} | {vs.removeprefix('rwr_vs_')} | {res['nme_io_pct']:+.1f} | "
            f"{res['nme_face_pct']:+.1f} | {res['nmf_pct']:+.1f} |"
        )
    if stills:
        lines += [
            "",
            "## Still images",
            "",
            "| split | images | NME % (io) | FR@0.1 % | AUC@0.1 | NFE |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['images']} | {v['nme_pct']:.3f} | {v['fr_pct']:.2f} | {v['auc']:.4f} | {v['nfe']:.2f} |"
            for k, v in stills.items()
        ]
    return "\n".join(lines) + "\n"


def _mlflow_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "-", key)


def _start_mlflow_run(
    uri: str, s: EvalSettings, train: TrainConfig, root: Path, model_info: Mapping[str, Any]
) -> tuple[Any, str]:
    """(client, run id) of a new ``evaluate`` run in the training experiment (tagged with the model's source)."""
    from mlflow import MlflowClient

    from pipelines.train.tracking import ensure_experiment

    uri = resolve_tracking_uri(uri, root)
    experiment = s.mlflow_experiment or train.mlflow_experiment
    exp_id = ensure_experiment(uri, experiment, str(_abs(train.mlflow_artifacts, root)))
    client = MlflowClient(tracking_uri=uri)
    tags = {"ldeq.kind": "evaluate", "ldeq.model_source": str(model_info["source"])}
    if model_info.get("train_run"):
        tags["ldeq.train_run"] = str(model_info["train_run"])
    run = client.create_run(exp_id, run_name="evaluate", tags=tags)
    return client, str(run.info.run_id)


def _log_mlflow(
    client: Any,
    rid: str,
    s: EvalSettings,
    root: Path,
    metrics: Mapping[str, Any],
    summary: Mapping[str, Any],
    files: Mapping[str, str],
) -> None:
    """Numeric metrics, settings, model and chosen filter parameters as params, the files as artifacts."""
    from mlflow.entities import Metric, Param

    ts = int(time.time() * 1000)
    ms = [
        Metric(_mlflow_key(k), float(v), ts, 0)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    from pipelines.train.reporting import flatten

    flat = flatten({"evaluate": dataclasses.asdict(s)})
    flat.update({f"chosen.{f}.{k}": v for f, p in summary["filters"]["chosen"].items() for k, v in p.items()})
    flat.update({f"model.{k}": v for k, v in summary["model"].items()})
    ps = [Param(_mlflow_key(k), str(v)[:6000]) for k, v in flat.items()]
    for i in range(0, len(ms), 500):
        client.log_batch(rid, metrics=ms[i : i + 500])
    for i in range(0, len(ps), 100):
        client.log_batch(rid, params=ps[i : i + 100])
    for name, rel in files.items():
        sub = "overlays" if name.startswith("overlay:") else ("plots" if rel.startswith("plots/") else "eval")
        client.log_artifact(rid, str(root / rel), sub)
    client.set_terminated(rid, "FINISHED")


def run_evaluate_from_params(
    params_path: PathLike = "params.yaml", *, checkpoint: PathLike | None = None, progress: bool = True
) -> dict[str, Any]:
    """``run_evaluate`` with the settings of ``params_path``; paths resolve against that file's folder."""
    params = load_params(params_path)
    return run_evaluate(params, Path(params_path).resolve().parent, checkpoint=checkpoint, progress=progress)
