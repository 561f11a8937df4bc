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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    VideoResult,
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


# ------------------------------------------------------------------------------------------- run context
@dataclass
class _Setup:
    """The run's settings, its folders (resolved against ``root``) and its progress printer."""

    t_start: float
    root: Path
    params: Params
    s: EvalSettings
    raw_dir: Path
    shards_dir: Path
    say: Callable[..., None]

    @property
    def out_dir(self) -> Path:
        """``<root>/outputs/eval``."""
        return self.root / OUT_DIR


@dataclass
class _Subject:
    """The model under evaluation on its device, where it came from, and the methods compared."""

    model: Any
    info: dict[str, Any]
    device: Any
    methods: list[Method]
    trackers: list[Method]
    rwr: str  # the primary RwR method

    @property
    def names(self) -> list[str]:
        """Every compared method's name, in order."""
        return [m.name for m in self.methods]


@dataclass
class _Videos:
    """The evaluation videos and their deterministic tuning / test roles (per dataset and split)."""

    refs: list[VideoRef]
    tune_keys: list[str]
    test_keys: list[str]
    roles: dict[str, str]


@dataclass
class _Tuning:
    """Filter parameters chosen on the tuning videos: per filter base, and the per-frame filters' result."""

    by_base: dict[str, TuneResult]
    result: TuneResult

    @property
    def best_filter(self) -> str | None:
        """The best per-frame filter method (``per_frame+<filter>``), None without one."""
        return f"{PER_FRAME}+{self.result.best_filter}" if self.result.best_filter else None

    @property
    def chosen_by_base(self) -> dict[str, dict[str, dict[str, float]]]:
        """Chosen parameters per base method and filter."""
        return {b: r.chosen for b, r in self.by_base.items()}


@dataclass
class _VideoScores:
    """Per-(video, method) rows and tracks; the test videos' aggregates, Pareto front and RwR comparisons."""

    per_video: pd.DataFrame
    tracks: dict[str, dict[str, np.ndarray]]
    test_rows: pd.DataFrame
    agg: dict[str, dict[str, Any]] | None = None
    pareto: list[str] = dataclasses.field(default_factory=list)
    comparisons: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


@dataclass
class _Stills:
    """Per still test split: the summary (NME, FR, AUC, images, NFE) and the CED curve."""

    agg: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    ced: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)


@dataclass
class _Evaluation:
    """Everything one run computed, which the writing steps read."""

    setup: _Setup
    subject: _Subject
    videos: _Videos
    run: RunResult | None
    tuning: _Tuning
    scores: _VideoScores
    stills: _Stills

    def throughput(self) -> dict[str, float]:
        """The run's throughput figures (empty without videos)."""
        return self.run.throughput() if self.run is not None else {}


# ------------------------------------------------------------------------------------------- run steps
def _setup(params: Params | Mapping[str, Any], root: PathLike, progress: bool) -> _Setup:
    """Parse the params and resolve the data and shard folders against ``root``."""
    t_start = time.perf_counter()
    root = Path(root).resolve()
    typed = as_params(params)
    s = typed.evaluate
    raw_dir = _abs(s.raw_dir or typed.data.out, root)
    shards_dir = _abs(s.shards_dir or typed.preprocess.out, root)
    say: Callable[..., None] = print if progress else (lambda *_a, **_k: None)
    return _Setup(t_start, root, typed, s, raw_dir, shards_dir, say)


def _load_subject(setup: _Setup, checkpoint: PathLike | None) -> _Subject:
    """Load the model onto the configured device and build the compared methods for its input size."""
    s = setup.s
    model, model_info = load_model(s, setup.root, setup.params.train, checkpoint)
    device = _device(s.device)
    model = model.to(device).eval()
    methods = build_methods(s.methods, model.cfg.image_size)
    return _Subject(model, model_info, device, methods, trackers(methods), primary_rwr(s.methods))


def _load_videos(setup: _Setup, n_landmarks: int) -> _Videos:
    """Read ``prepared.json`` and split every (dataset, split) deterministically into tuning and test videos."""
    s = setup.s
    prep = load_prepared(setup.raw_dir)
    if prep.n_landmarks != n_landmarks:
        raise ValueError(f"{prep.path}: the data has {prep.n_landmarks} landmarks but the model predicts {n_landmarks}")
    sets = video_sets(prep, s.max_videos)
    tune_keys: list[str] = []
    test_keys: list[str] = []
    for dataset, _, splits in sets:
        tune, test = split_tune_test(splits, s.tuning.fraction, s.tuning.salt)
        for split in splits:
            tune_keys += [f"{dataset}/{v}" for v in tune[split]]
            test_keys += [f"{dataset}/{v}" for v in test[split]]
    roles = {k: "tune" for k in tune_keys} | {k: "test" for k in test_keys}
    return _Videos(make_refs(sets), tune_keys, test_keys, roles)


def _run_trackers(setup: _Setup, subject: _Subject, videos: _Videos) -> RunResult | None:
    """Run every tracker method over every video (Ray Data or the sequential loop); None without videos."""
    s = setup.s
    if not videos.refs:
        return None
    setup.say(
        f"evaluate: {len(videos.refs)} videos ({len(videos.tune_keys)} tuning, {len(videos.test_keys)} test), "
        f"{len(subject.trackers)} tracker methods, {'Ray Data' if s.parallel else 'sequential'}"
    )
    if s.parallel:
        return _run_on_ray(s, subject, videos.refs)
    return evaluate_sequential(
        subject.model,
        videos.refs,
        subject.trackers,
        group_size=s.videos_per_batch,
        device=subject.device,
        threads=s.torch_threads,
        extra_scale=s.methods.extra_scale,
        inference=s.inference,
        box_source=s.box_source,
    )


def _run_on_ray(s: EvalSettings, subject: _Subject, refs: list[VideoRef]) -> RunResult:
    """The Ray Data path, on the running Ray, ``RAY_ADDRESS``, or a local cluster started (and stopped) here."""
    import ray

    started = _start_ray(s)
    try:
        return evaluate_parallel(
            subject.model,
            refs,
            subject.trackers,
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


def _tune_on_tuning_videos(
    s: EvalSettings, methods: list[Method], run: RunResult | None, tune_keys: list[str]
) -> _Tuning:
    """Tune each filter base's filters on that base's tracks of the tuning videos only."""
    filters = [m.filter for m in methods if m.kind == "filter" and m.filter and m.base == PER_FRAME]
    if run is None:
        return _Tuning({}, tune_filters({}, [], filters, s.tuning))
    by_key = {v.ref.key: v for v in run.videos}
    reference = _tuning_reference(s, by_key, tune_keys)
    by_base: dict[str, TuneResult] = {}
    for base in dict.fromkeys(m.base for m in methods if m.kind == "filter" and m.base):
        base_filters = [m.filter for m in methods if m.kind == "filter" and m.base == base and m.filter]
        tune_tracks = {k: TuneTrack(by_key[k].tracks[base].landmarks, by_key[k].gt, by_key[k].fps) for k in tune_keys}
        by_base[base] = tune_filters(tune_tracks, tune_keys, base_filters, s.tuning, reference)
    return _Tuning(by_base, by_base.get(PER_FRAME) or tune_filters({}, [], filters, s.tuning))


def _tuning_reference(s: EvalSettings, by_key: Mapping[str, VideoResult], tune_keys: list[str]) -> float | None:
    """Per-frame NME of the tuning videos, one accuracy budget for the filters of every base (``tuning.reference``)."""
    if s.tuning.reference != PER_FRAME or not tune_keys:
        return None
    return float(np.mean([video_nme(by_key[k].tracks[PER_FRAME].landmarks, by_key[k].gt) for k in tune_keys]))


def _score_videos(run: RunResult | None, subject: _Subject, tuning: _Tuning, roles: Mapping[str, str]) -> _VideoScores:
    """Score every (video, method), filters applied with their chosen parameters, and aggregate the test videos."""
    per_video, tracks = (
        _video_rows(run, subject.methods, tuning.chosen_by_base, roles) if run is not None else (pd.DataFrame(), {})
    )
    test_rows = per_video[per_video["role"] == "test"] if not per_video.empty else per_video
    scores = _VideoScores(per_video, tracks, test_rows)
    if not test_rows.empty:
        _aggregate_test_videos(scores, subject.names, subject.rwr, tuning.best_filter)
    return scores


def _aggregate_test_videos(scores: _VideoScores, names: list[str], rwr: str, best_filter: str | None) -> None:
    """Per-split means of the test rows, the overall Pareto front and RwR vs per-frame / best-filter changes."""
    scores.agg = aggregate(scores.test_rows, names)
    overall = scores.agg[OVERALL]["methods"]
    scores.pareto = pareto_front({m: (overall[m]["nme_io"], overall[m]["nmf"]) for m in names if m in overall})
    for split, entry in scores.agg.items():
        scores.comparisons[f"{split}.rwr_vs_per_frame"] = compare(entry["methods"], rwr, PER_FRAME)
        if best_filter:
            scores.comparisons[f"{split}.rwr_vs_best_filter"] = compare(entry["methods"], rwr, best_filter)


def _score_stills(setup: _Setup, subject: _Subject) -> _Stills:
    """Full-solve predictions on every still test split of the shards: NME summary and CED curve."""
    s, stills = setup.s, _Stills()
    for split in still_splits(setup.shards_dir, s.still_splits):
        res = evaluate_stills(
            subject.model,
            setup.shards_dir,
            split,
            batch_size=s.still_batch_size,
            max_images=s.max_stills,
            device=subject.device,
        )
        nmes = still_nmes(res.pred, res.gt)
        stills.agg[split] = {**still_summary(nmes), "nfe": float(np.mean(res.nfe))}
        stills.ced[split] = ced_curve(nmes)
    return stills


# ------------------------------------------------------------------------------------------- figures
FIGURE_FILES = {
    "front_png": f"{PLOTS_DIR}/eval_front.png",
    "front_csv": f"{PLOTS_DIR}/eval_front.csv",
    "flicker_png": f"{PLOTS_DIR}/eval_flicker.png",
    "flicker_csv": f"{PLOTS_DIR}/eval_flicker.csv",
    "ced_png": f"{PLOTS_DIR}/eval_ced.png",
    "ced_csv": f"{PLOTS_DIR}/eval_ced.csv",
}


def _write_figures(ev: _Evaluation) -> dict[str, str]:
    """The plots (a placeholder where there is nothing to show, so every DVC output exists) and the overlays."""
    root = ev.setup.root
    for d in (root / PLOTS_DIR, root / OVERLAY_DIR):
        d.mkdir(parents=True, exist_ok=True)
    for stale in (root / OVERLAY_DIR).glob("*.mp4"):
        stale.unlink()
    files = dict(FIGURE_FILES)
    worst = _plot_front(ev, files)
    _plot_flicker(ev, files, worst)
    _plot_ced(ev, files)
    _write_overlays(ev, files, worst[: ev.setup.s.worst_videos])
    return files


def _plot_front(ev: _Evaluation, files: Mapping[str, str]) -> list[str]:
    """The NME / NMF front of the test videos; returns the test videos by per-frame NMF, worst first."""
    from pipelines.evaluate import plots

    root, scores = ev.setup.root, ev.scores
    if scores.agg is None or ev.run is None:
        plots.placeholder(
            root / files["front_png"],
            root / files["front_csv"],
            ["method", "nme_io", "nmf", "nfe", "pareto"],
            "no test videos",
        )
        return []
    overall = scores.agg[OVERALL]["methods"]
    plots.plot_front(
        root / files["front_png"],
        root / files["front_csv"],
        {m: overall[m] for m in ev.subject.names if m in overall},
        scores.pareto,
        highlight=ev.subject.rwr,
    )
    per_frame = scores.test_rows[scores.test_rows["method"] == PER_FRAME]
    return per_frame.sort_values(["nmf", "key"], ascending=[False, True])["key"].tolist()


def _plot_flicker(ev: _Evaluation, files: Mapping[str, str], worst: list[str]) -> None:
    """Per-frame jitter of per-frame inference and the primary RwR method on the worst test video."""
    from pipelines.evaluate import plots

    root, rwr = ev.setup.root, ev.subject.rwr
    if not worst:
        plots.placeholder(
            root / files["flicker_png"], root / files["flicker_csv"], ["frame", "per_frame", "rwr"], "no test videos"
        )
        return
    v, tr = _video_by_key(ev)[worst[0]], ev.scores.tracks[worst[0]]
    plots.plot_flicker(
        root / files["flicker_png"],
        root / files["flicker_csv"],
        worst[0],
        frame_jitter(tr[PER_FRAME], v.gt),
        frame_jitter(tr[rwr], v.gt),
        rwr,
    )


def _plot_ced(ev: _Evaluation, files: Mapping[str, str]) -> None:
    """The cumulative error distribution of every still test split."""
    from pipelines.evaluate import plots

    root, ced = ev.setup.root, ev.stills.ced
    if ced:
        plots.plot_ced(root / files["ced_png"], root / files["ced_csv"], ced)
    else:
        plots.placeholder(root / files["ced_png"], root / files["ced_csv"], ["nme", "fraction"], "no still test split")


def _write_overlays(ev: _Evaluation, files: dict[str, str], keys: list[str]) -> None:
    """Overlay videos (ground truth, per-frame, primary RwR) of the test videos ``keys``; adds them to ``files``."""
    from ldeq_shared.video_io import read_frames
    from pipelines.evaluate import plots

    root, rwr, by_key = ev.setup.root, ev.subject.rwr, _video_by_key(ev)
    for key in keys:
        v = by_key[key]
        path = root / OVERLAY_DIR / f"{_safe_name(key)}.mp4"
        plots.write_overlay(
            path,
            read_frames(Path(v.ref.root) / "videos" / f"{v.ref.video_id}.mp4"),
            v.gt,
            ev.scores.tracks[key][PER_FRAME],
            ev.scores.tracks[key][rwr],
            ("per-frame", rwr),
            v.fps,
            ev.setup.s.overlay_max_height,
        )
        files[f"overlay:{key}"] = str(path.relative_to(root))


def _video_by_key(ev: _Evaluation) -> dict[str, VideoResult]:
    """The run's videos by key (empty without videos)."""
    return {v.ref.key: v for v in ev.run.videos} if ev.run is not None else {}


# ------------------------------------------------------------------------------------------- metrics and files
def _metrics(ev: _Evaluation) -> dict[str, Any]:
    """The flat ``metrics/eval.json`` mapping: video, still and comparison metrics, throughput, filters, info."""
    run, videos, tuning, model_info = ev.run, ev.videos, ev.tuning, ev.subject.info
    extra: dict[str, Any] = {f"throughput.{k}": v for k, v in ev.throughput().items()}
    for f, p in tuning.result.chosen.items():
        extra.update({f"filters.{f}.{k}": v for k, v in p.items()})
    for base, res in tuning.by_base.items():
        if base != PER_FRAME:
            for f, p in res.chosen.items():
                extra.update({f"filters.{base}+{f}.{k}": v for k, v in p.items()})
    extra.update(
        {
            "tuning.videos": len(videos.tune_keys),
            "test.videos": len(videos.test_keys),
            "info.rwr_method": ev.subject.rwr,
            "info.best_filter": tuning.best_filter or "",
            "info.mode": run.mode if run is not None else "none",
            "info.device": run.device if run is not None else str(ev.subject.device),
            "info.inference": run.extra.get("inference", "") if run is not None else "",
            "info.model": model_info.get("path") or f"{model_info.get('name')}@{model_info.get('alias')}",
        }
    )
    return flat_metrics(ev.scores.agg, ev.stills.agg, ev.scores.comparisons, ev.scores.pareto, extra)


def _write_tables(ev: _Evaluation, metrics: Mapping[str, Any], files: dict[str, str]) -> None:
    """Write ``metrics/eval.json``, ``per_video.parquet`` (with videos) and ``tuning.csv``; add them to ``files``."""
    from pipelines.evaluate import plots

    root, out_dir = ev.setup.root, ev.setup.out_dir
    _write_json(root / METRICS_FILE, metrics)
    files["metrics"] = METRICS_FILE
    if not ev.scores.per_video.empty:
        _write_parquet(ev.scores.per_video, out_dir / "per_video.parquet")
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
            for r in ev.tuning.result.scores
        ],
    )
    files["tuning"] = f"{OUT_DIR}/tuning.csv"


def _summary(ev: _Evaluation, mlflow_run_id: str | None) -> dict[str, Any]:
    """The ``summary.json`` content (settings, model, tune / test ids, chosen filters, Pareto set, conventions)."""
    run, tuning, s = ev.run, ev.tuning, ev.setup.s
    return {
        "conventions": VIDEO_METRICS,
        "methods": {m.name: m.label for m in ev.subject.methods},
        "rwr_method": ev.subject.rwr,
        "best_filter": tuning.best_filter,
        "pareto": ev.scores.pareto,
        "filters": {
            "chosen": tuning.result.chosen,
            "chosen_by_base": tuning.chosen_by_base,
            "tuned": tuning.result.tuned,
            "objective": s.tuning.objective,
            "tuning_unfiltered": tuning.result.base,
            "ids_used": tuning.result.ids_used,
        },
        "videos": {"tune": sorted(ev.videos.tune_keys), "test": sorted(ev.videos.test_keys)},
        "still_splits": list(ev.stills.agg),
        "model": ev.subject.info,
        "run": {"mode": run.mode, "workers": run.workers, "device": run.device, **run.extra} if run else None,
        "throughput": ev.throughput(),
        "mlflow_run_id": mlflow_run_id,
        "wall_s": time.perf_counter() - ev.setup.t_start,
    }


def _write_summary_and_log(ev: _Evaluation, metrics: Mapping[str, Any], files: dict[str, str]) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.md``, and log the run to MLflow when a tracking URI is configured."""
    setup, subject = ev.setup, ev.subject
    s, out_dir = setup.s, setup.out_dir
    uri = s.mlflow_uri if s.mlflow_uri is not None else setup.params.train.mlflow_uri
    mlflow_run = _start_mlflow_run(uri, s, setup.params.train, setup.root, subject.info) if uri else None
    try:
        summary = _summary(ev, mlflow_run[1] if mlflow_run else None)
        _write_json(out_dir / "summary.json", _jsonable(summary))
        files["summary"] = f"{OUT_DIR}/summary.json"
        if ev.scores.agg is not None:
            report = _report_md(
                ev.scores.agg,
                subject.names,
                ev.scores.pareto,
                ev.scores.comparisons,
                ev.stills.agg,
                subject.rwr,
                ev.tuning.best_filter,
            )
            write_text_atomic(out_dir / "report.md", report)
            files["report"] = f"{OUT_DIR}/report.md"
        summary["files"] = files
        if mlflow_run:
            _log_mlflow(*mlflow_run, s, setup.root, metrics, summary, files)
    except BaseException:
        if mlflow_run:
            mlflow_run[0].set_terminated(mlflow_run[1], "FAILED")
        raise
    return summary


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
    setup = _setup(params, root, progress)
    subject = _load_subject(setup, checkpoint)
    videos = _load_videos(setup, subject.model.cfg.n_landmarks)
    run = _run_trackers(setup, subject, videos)
    tuning = _tune_on_tuning_videos(setup.s, subject.methods, run, videos.tune_keys)
    scores = _score_videos(run, subject, tuning, videos.roles)
    stills = _score_stills(setup, subject)
    ev = _Evaluation(setup, subject, videos, run, tuning, scores, stills)
    setup.out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_figures(ev)
    metrics = _metrics(ev)
    _write_tables(ev, metrics, files)
    summary = _write_summary_and_log(ev, metrics, files)
    setup.say(f"evaluate: wrote {METRICS_FILE} ({len(metrics)} values) in {time.perf_counter() - setup.t_start:.1f} s")
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
