"""Running the model over the evaluation videos: a sequential loop and a Ray Data pipeline with the same numbers.

Work unit. Videos are sorted by frame count (descending, then key) and cut into *groups* of at most
``group_size`` videos (:func:`make_groups`, as upstream batches its videos, spec §3.3). A group is run
frame-synchronously (:func:`run_group`): for each tracker method, one :class:`~ldeq_core.streams.FrameSyncRunner`
solves frame t of every video of the group still playing in one batch, each video keeping its own RwR state.

Exactness. Batched convolutions may round differently for different batch compositions (oneDNN/cuDNN choose
their kernels by shape), so the Ray path runs **the same groups, in the same order, through the same functions**
as :func:`evaluate_sequential` (:func:`decode_video`, then :func:`run_group`). The Ray dataset holds one row per
video and one block per group; decoding happens in CPU tasks (one task per group block, ``num_cpus`` 0.5) and
the model runs in an actor pool (``ActorPoolStrategy``, one model replica per actor) that takes one whole group
per batch (``batch_size=None``: the batch is the block). Output-block splitting is switched off for the job so
that a group is never cut in two, and an actor that receives a partial group raises instead of silently batching
differently. With the same torch thread count on both sides (``torch_threads``) the per-video landmarks, and
hence every metric, are bit-identical; tests check this.

Stills (:func:`evaluate_stills`) are predicted in the driver from the shard crops (full solve, the model's
solver), resized to the model's input size when it is not 256.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldeq_core.config import ModelConfig
from ldeq_core.defaults import EXTRA_SCALE
from ldeq_core.geometry import crop_face, to_model_input
from ldeq_core.inference import InferenceEngine, InferencePolicy
from ldeq_core.model import LandmarkDEQ
from ldeq_core.npyio import load_npy, load_npz
from ldeq_core.streams import FrameSyncRunner, VideoInput
from ldeq_shared.errors import DataError
from ldeq_shared.wflw_v import clip_paths, load_wflw_v_clip
from pipelines.evaluate.boxes import select_boxes
from pipelines.evaluate.methods import Method

# Memory requested per decode task: the process (~350 MiB with torch imported) + twice the group's crops, capped.
# Requesting it also keeps decoding in separate tasks: Ray Data does not fuse ops whose resources differ.
DECODE_MEMORY_BASE = 384 * 1024**2
DECODE_MEMORY_CAP = 1024**3


# ----------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class VideoRef:
    """One evaluation video: ``key`` = ``<dataset>/<id>``, its split, dataset root and frame count."""

    key: str
    dataset: str
    video_id: str
    split: str
    root: str
    n_frames: int


def count_frames(root: str | os.PathLike[str], video_id: str) -> int:
    """Frame count of a WFLW-V clip from its landmark array's header (no decoding); ``DataError`` if unreadable."""
    _, lm_path, _ = clip_paths(root, video_id)
    try:
        arr = load_npy(lm_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(lm_path, f"cannot read landmarks ({err})") from None
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise DataError(lm_path, f"landmarks must be (T, L, 2) with T >= 1, got shape {arr.shape}")
    return int(arr.shape[0])


def make_refs(video_sets: Sequence[tuple[str, str, Mapping[str, Sequence[str]]]]) -> list[VideoRef]:
    """VideoRefs of ``(dataset, absolute root, {split: ids})`` triples, in the given order."""
    refs = []
    for dataset, root, splits in video_sets:
        for split, ids in splits.items():
            refs.extend(VideoRef(f"{dataset}/{v}", dataset, v, split, str(root), count_frames(root, v)) for v in ids)
    keys = [r.key for r in refs]
    if len(set(keys)) != len(keys):
        raise ValueError("video sets: a video appears twice (same dataset and id)")
    return refs


def make_groups(refs: Sequence[VideoRef], group_size: int) -> list[list[VideoRef]]:
    """Videos sorted by (frame count descending, key) and cut into consecutive groups of <= ``group_size``."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    order = sorted(refs, key=lambda r: (-r.n_frames, r.key))
    return [order[i : i + group_size] for i in range(0, len(order), group_size)]


@dataclass
class DecodedVideo:
    """Crops fed to the model and what is needed to score them."""

    ref: VideoRef
    crops: np.ndarray  # (T, S, S, 3) uint8 RGB
    affines: np.ndarray  # (T, 2, 3) frame -> crop
    boxes: np.ndarray  # (T, 4) frame pixels
    landmarks: np.ndarray  # (T, L, 2) ground truth, frame pixels
    fps: float


def decode_video(
    ref: VideoRef, crop_size: int, extra_scale: float = EXTRA_SCALE, box_source: str = "given"
) -> DecodedVideo:
    """Load a clip, decode every frame and crop it around its box (spec §5.4); ``DataError`` on any mismatch.

    ``box_source`` picks the box track (:mod:`pipelines.evaluate.boxes`): the given boxes, smoothed, or a detector's.
    A clip without a bboxes file always uses the detector, anchored on its first frame's ground-truth face.
    """
    clip = load_wflw_v_clip(ref.root, ref.video_id, n_points=None, decode=False, require_boxes=False)
    frames = list(clip.frames())
    if len(frames) > len(clip.boxes):
        raise DataError(clip.path, f"video has more frames than its {len(clip.boxes)} annotations")
    if len(frames) != len(clip.landmarks):
        raise DataError(clip.path, f"decoded {len(frames)} frames but the annotations have {len(clip.landmarks)}")
    source = box_source if clip.boxes_given else "detector"
    try:
        boxes = select_boxes(source, frames, clip.boxes[: len(frames)], float(clip.fps))
    except ValueError as err:
        raise DataError(clip.path, str(err)) from None
    crops, affines = zip(
        *(crop_face(f, b, crop_size, extra_scale) for f, b in zip(frames, boxes, strict=True)), strict=True
    )
    return DecodedVideo(ref, np.stack(crops), np.stack(affines), boxes, clip.landmarks, float(clip.fps))


# --------------------------------------------------------------------------------------------- running
@dataclass
class Track:
    """One method's output on one video: landmarks (T, L, 2) frame pixels, NFE and full-solve flags (T,)."""

    landmarks: np.ndarray
    nfe: np.ndarray
    full_solve: np.ndarray


def run_group(
    model: LandmarkDEQ,
    videos: Sequence[DecodedVideo],
    trackers: Sequence[Method],
    device: torch.device | str | None = None,
    engine: InferenceEngine | None = None,
) -> tuple[list[dict[str, Track]], dict[str, float]]:
    """Run every tracker method over a group of videos, frame-synchronously; return tracks and seconds per method.

    Frame t of every video with more than t frames goes into one batch; each video is its own RwR stream of a
    :class:`~ldeq_core.streams.FrameSyncRunner`. The model runs where its parameters are (``device``, kept for
    callers, names that place). ``engine`` (default: the model's default inference policy) is shared by all
    methods and groups of a caller.
    """
    del device  # the tracker feeds the model on the model's own device
    size = model.cfg.image_size
    for v in videos:
        if v.crops.shape[1:] != (size, size, 3):
            raise ValueError(f"{v.ref.key}: crops of shape {v.crops.shape[1:]}, the model takes {size}x{size}")
    engine = engine or InferenceEngine(model)
    inputs = [VideoInput(v.ref.key, v.boxes, crops=v.crops, affines=v.affines) for v in videos]
    out: list[dict[str, Track]] = [{} for _ in videos]
    seconds: dict[str, float] = {}
    for method in trackers:
        if method.rwr is None:
            raise ValueError(f"method {method.name!r} is not a tracker")
        if method.rwr.crop_size != size:
            raise ValueError(f"method {method.name!r}: crop_size {method.rwr.crop_size} != model input {size}")
        t0 = time.perf_counter()
        tracks = FrameSyncRunner.from_model(model, method.rwr, engine=engine).run(inputs)
        seconds[method.name] = time.perf_counter() - t0
        for i, tr in enumerate(tracks):
            out[i][method.name] = Track(tr.landmarks, tr.nfe, tr.full_solve)
    return out, seconds


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (no change when ``n`` is None)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class VideoResult:
    """Every tracker's output on one video, with its ground truth."""

    ref: VideoRef
    group: int
    gt: np.ndarray
    fps: float
    tracks: dict[str, Track]


@dataclass
class RunResult:
    """All videos (in group order), the wall time and the compute seconds per tracker method."""

    videos: list[VideoResult]
    wall_s: float
    method_seconds: dict[str, float]
    mode: str
    workers: int
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def throughput(self) -> dict[str, float]:
        """``frames_per_s``: frames x tracker methods / wall time (decoding, start-up and all methods included);
        ``<method>.frames_per_s``: frames / compute seconds of that method, summed over workers."""
        frames = sum(len(v.gt) for v in self.videos)
        n_methods = len(self.method_seconds)
        out = {
            "wall_s": self.wall_s,
            "videos": len(self.videos),
            "frames": frames,
            "workers": self.workers,
            "frames_per_s": frames * n_methods / self.wall_s if self.wall_s > 0 else 0.0,
        }
        for name, sec in self.method_seconds.items():
            out[f"{name}.frames_per_s"] = frames / sec if sec > 0 else 0.0
        return out


def evaluate_sequential(
    model: LandmarkDEQ,
    refs: Sequence[VideoRef],
    trackers: Sequence[Method],
    *,
    group_size: int = 5,
    device: torch.device | str | None = None,
    threads: int | None = None,
    extra_scale: float = EXTRA_SCALE,
    inference: InferencePolicy | None = None,
    box_source: str = "given",
) -> RunResult:
    """The reference loop: decode each group, run it, in :func:`make_groups` order, in this process."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    engine = InferenceEngine(model, inference)
    t0 = time.perf_counter()
    videos: list[VideoResult] = []
    seconds = {m.name: 0.0 for m in trackers}
    with torch_threads(threads):
        for g, group in enumerate(make_groups(refs, group_size)):
            decoded = [decode_video(r, model.cfg.image_size, extra_scale, box_source) for r in group]
            tracks, secs = run_group(model, decoded, trackers, dev, engine)
            for name, s in secs.items():
                seconds[name] += s
            videos += [VideoResult(d.ref, g, d.landmarks, d.fps, t) for d, t in zip(decoded, tracks, strict=True)]
    return RunResult(
        videos, time.perf_counter() - t0, seconds, "sequential", 1, str(dev), extra={"inference": engine.describe()}
    )


# ------------------------------------------------------------------------------------------- Ray path
def model_to_bytes(model: LandmarkDEQ) -> bytes:
    """Config + CPU state dict, loadable with ``weights_only=True`` (what each actor rebuilds its replica from)."""
    buf = io.BytesIO()
    torch.save(
        {"config": model.cfg.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, buf
    )
    return buf.getvalue()


def model_from_bytes(blob: bytes) -> LandmarkDEQ:
    """Inverse of :func:`model_to_bytes` (strict state-dict load), in eval mode on the CPU."""
    data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    model = LandmarkDEQ(ModelConfig.from_dict(data["config"]))
    model.load_state_dict(data["state_dict"], strict=True)
    return model.eval()


def _pack(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _unpack(data: bytes) -> np.ndarray:
    return load_npy(io.BytesIO(data))


def _pack_tracks(tracks: Mapping[str, Track]) -> bytes:
    buf = io.BytesIO()
    arrays = {}
    for name, tr in tracks.items():
        arrays.update({f"{name}.landmarks": tr.landmarks, f"{name}.nfe": tr.nfe, f"{name}.full_solve": tr.full_solve})
    np.savez(buf, **arrays)
    return buf.getvalue()


def _unpack_tracks(data: bytes, names: Sequence[str]) -> dict[str, Track]:
    z = load_npz(io.BytesIO(data))
    return {n: Track(z[f"{n}.landmarks"], z[f"{n}.nfe"], z[f"{n}.full_solve"]) for n in names}


_REF_FIELDS = ("key", "dataset", "video_id", "split", "root", "n_frames")


def _group_table(g: int, group: Sequence[VideoRef]) -> Any:
    import pyarrow as pa

    cols: dict[str, list[Any]] = {f: [getattr(r, f) for r in group] for f in _REF_FIELDS}
    cols.update(group=[g] * len(group), order=list(range(len(group))), group_size=[len(group)] * len(group))
    return pa.table(cols)


def _ref_of(row: Mapping[str, Any]) -> VideoRef:
    return VideoRef(**{f: row[f] for f in _REF_FIELDS})


def decode_block(batch: Any, crop_size: int, extra_scale: float, box_source: str = "given") -> Any:
    """Ray Data task: decode and crop every video of a block (pyarrow table) into packed array columns."""
    import pyarrow as pa

    rows = batch.to_pylist()
    keys = (*rows[0].keys(), "crops", "affines", "boxes", "gt", "fps", "decode_pid") if rows else ()
    out: dict[str, list[Any]] = {k: [] for k in keys}
    for row in rows:
        d = decode_video(_ref_of(row), crop_size, extra_scale, box_source)
        for k, v in row.items():
            out[k].append(v)
        out["decode_pid"].append(os.getpid())
        out["crops"].append(_pack(d.crops))
        out["affines"].append(_pack(d.affines))
        out["boxes"].append(_pack(d.boxes))
        out["gt"].append(_pack(d.landmarks))
        out["fps"].append(d.fps)
    types = {k: pa.large_binary() for k in ("crops", "affines", "boxes", "gt")}
    return pa.table({k: pa.array(v, type=types.get(k)) for k, v in out.items()})


class GroupRunner:
    """Ray Data actor: one model replica; each batch must hold whole groups, which it runs with :func:`run_group`."""

    def __init__(
        self,
        model_blob: Any,
        trackers: Sequence[Method],
        threads: int | None = None,
        use_gpu: bool = False,
        inference: InferencePolicy | None = None,
    ) -> None:
        import ray

        blob = ray.get(model_blob) if isinstance(model_blob, ray.ObjectRef) else model_blob
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model = model_from_bytes(blob).to(self.device)
        self.engine = InferenceEngine(self.model, inference)
        self.trackers = list(trackers)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        groups: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(int(row["group"]), []).append(row)
        out: dict[str, list[Any]] = {
            k: []
            for k in (
                "key",
                "group",
                "order",
                "gt",
                "fps",
                "tracks",
                "seconds",
                "pid",
                "decode_pid",
                "device",
                "inference",
            )
        }
        for g, members in sorted(groups.items()):
            members.sort(key=lambda r: r["order"])
            size = members[0]["group_size"]
            if [r["order"] for r in members] != list(range(size)):
                raise RuntimeError(
                    f"group {g}: this batch holds videos {[r['order'] for r in members]} of {size}; "
                    "Ray Data split a group across batches, which would change the batching"
                )
            videos = [
                DecodedVideo(
                    _ref_of(r),
                    _unpack(r["crops"]),
                    _unpack(r["affines"]),
                    _unpack(r["boxes"]),
                    _unpack(r["gt"]),
                    float(r["fps"]),
                )
                for r in members
            ]
            tracks, secs = run_group(self.model, videos, self.trackers, self.device, self.engine)
            for j, (r, tr) in enumerate(zip(members, tracks, strict=True)):
                out["key"].append(r["key"])
                out["group"].append(g)
                out["order"].append(r["order"])
                out["gt"].append(r["gt"])
                out["fps"].append(r["fps"])
                out["tracks"].append(_pack_tracks(tr))
                out["seconds"].append(json.dumps(secs if j == 0 else {}))  # a group's time is counted once
                out["pid"].append(os.getpid())
                out["decode_pid"].append(r["decode_pid"])
                out["device"].append(str(self.device))
                out["inference"].append(self.engine.describe())
        types = {"gt": pa.large_binary(), "tracks": pa.large_binary()}
        return pa.table({k: pa.array(v, type=types.get(k)) for k, v in out.items()})


def evaluate_parallel(
    model: LandmarkDEQ,
    refs: Sequence[VideoRef],
    trackers: Sequence[Method],
    *,
    group_size: int = 5,
    actors: int = 2,
    cpus_per_actor: float = 0.5,
    gpus_per_actor: float = 0.0,
    decode_cpus: float = 0.5,
    threads: int | None = None,
    extra_scale: float = EXTRA_SCALE,
    inference: InferencePolicy | None = None,
    box_source: str = "given",
) -> RunResult:
    """The Ray Data path (see the module docstring); needs a running Ray (``ray.init`` or ``RAY_ADDRESS``)."""
    _check_parallel_args(actors, cpus_per_actor, gpus_per_actor, decode_cpus)
    groups = make_groups(refs, group_size)
    if not groups:
        return RunResult([], 0.0, {m.name: 0.0 for m in trackers}, "ray", actors, "none")
    t0 = time.perf_counter()
    with _whole_group_blocks():
        ds = _decode_dataset(groups, model.cfg.image_size, decode_cpus, extra_scale, box_source)
        ds = _run_dataset(ds, model, trackers, group_size, actors, cpus_per_actor, gpus_per_actor, threads, inference)
        rows = ds.take_all()
    wall = time.perf_counter() - t0
    videos, seconds = _collect_rows(rows, refs, groups, [m.name for m in trackers])
    devices = sorted({r["device"] for r in rows})
    return RunResult(
        videos,
        wall,
        seconds,
        "ray",
        actors,
        ",".join(devices),
        extra={
            "inference": " | ".join(sorted({r["inference"] for r in rows})),
            "actor_pids": sorted({int(r["pid"]) for r in rows}),
            "decode_pids": sorted({int(r["decode_pid"]) for r in rows}),
        },
    )


def _check_parallel_args(actors: int, cpus_per_actor: float, gpus_per_actor: float, decode_cpus: float) -> None:
    """Raise unless Ray is initialised and the actor pool and decode task resources are valid."""
    import ray

    if not ray.is_initialized():
        raise ValueError("evaluate_parallel: Ray is not initialised (call ray.init() or set RAY_ADDRESS)")
    if actors < 1 or cpus_per_actor <= 0 or decode_cpus <= 0 or gpus_per_actor < 0:
        raise ValueError("evaluate_parallel: need actors >= 1, cpus_per_actor > 0, decode_cpus > 0, gpus >= 0")


@contextlib.contextmanager
def _whole_group_blocks() -> Iterator[None]:
    """Ray Data settings that keep one block per group end to end, in order (restored on exit)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size, ctx.enable_progress_bars, ctx.execution_options.preserve_order
    try:
        ctx.target_max_block_size = None  # no output-block splitting: one block per group end to end
        ctx.enable_progress_bars = False
        # Groups are consecutive runs of group_size rows (the last may be shorter); in order, batches of
        # group_size rows are exactly the groups. (Ray Data needs a batch size for GPU actors.)
        ctx.execution_options.preserve_order = True
        yield
    finally:
        ctx.target_max_block_size, ctx.enable_progress_bars, ctx.execution_options.preserve_order = saved


def _decode_dataset(
    groups: Sequence[Sequence[VideoRef]], size: int, decode_cpus: float, extra_scale: float, box_source: str
) -> Any:
    """One block per group, decoded and cropped by :func:`decode_block` tasks (memory sized for the largest group)."""
    import ray.data

    max_group_bytes = max(sum(r.n_frames for r in g) for g in groups) * size * size * 3
    memory = int(min(DECODE_MEMORY_BASE + 2 * max_group_bytes, DECODE_MEMORY_CAP))
    ds = ray.data.from_arrow([_group_table(g, grp) for g, grp in enumerate(groups)])
    return ds.map_batches(
        decode_block,
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=decode_cpus,
        memory=memory,
        fn_kwargs={"crop_size": size, "extra_scale": extra_scale, "box_source": box_source},
    )


def _run_dataset(
    ds: Any,
    model: LandmarkDEQ,
    trackers: Sequence[Method],
    group_size: int,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float,
    threads: int | None,
    inference: InferencePolicy | None,
) -> Any:
    """The decoded groups run by a pool of :class:`GroupRunner` actors, one whole group per batch."""
    import ray
    import ray.data

    blob = ray.put(model_to_bytes(model))
    return ds.map_batches(
        GroupRunner,
        batch_size=group_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor if gpus_per_actor > 0 else None,
        fn_constructor_kwargs={
            "model_blob": blob,
            "trackers": list(trackers),
            "threads": threads,
            "use_gpu": gpus_per_actor > 0,
            "inference": inference,
        },
    )


def _collect_rows(
    rows: Sequence[Mapping[str, Any]],
    refs: Sequence[VideoRef],
    groups: Sequence[Sequence[VideoRef]],
    names: Sequence[str],
) -> tuple[list[VideoResult], dict[str, float]]:
    """The actors' result rows as VideoResults in group order, and the compute seconds per tracker method."""
    by_key = {r["key"]: r for r in rows}
    if len(by_key) != len(rows) or set(by_key) != {r.key for r in refs}:
        raise RuntimeError(f"evaluate_parallel: got {len(rows)} result rows for {len(refs)} videos")
    seconds = dict.fromkeys(names, 0.0)
    videos = []
    for g, group in enumerate(groups):
        for ref in group:
            r = by_key[ref.key]
            for name, s in json.loads(r["seconds"]).items():
                seconds[name] += s
            videos.append(VideoResult(ref, g, _unpack(r["gt"]), float(r["fps"]), _unpack_tracks(r["tracks"], names)))
    return videos, seconds


# --------------------------------------------------------------------------------------------- stills
@dataclass
class StillResult:
    """Predictions on one still split: landmarks in shard-crop pixels (N, L, 2), ground truth, names, NFE."""

    split: str
    pred: np.ndarray
    gt: np.ndarray
    names: list[str]
    nfe: np.ndarray


def evaluate_stills(
    model: LandmarkDEQ,
    shards_dir: str | os.PathLike[str],
    split: str,
    *,
    batch_size: int = 32,
    max_images: int | None = None,
    device: torch.device | str | None = None,
) -> StillResult:
    """Full-solve predictions on the still crops of shard split ``split`` (one shard file at a time)."""
    import cv2
    import pyarrow.parquet as pq

    from pipelines.shards import CROP_SIZE, check_table, decode_batch, split_files

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    size = model.cfg.image_size
    preds, gts, names, nfes = [], [], [], []
    n = 0
    for path in split_files(shards_dir, split):
        table = pq.read_table(path)
        check_table(table, os.fspath(path))
        for start in range(0, table.num_rows, batch_size):
            if max_images is not None and n >= max_images:
                break
            stop = min(start + batch_size, table.num_rows)
            if max_images is not None:
                stop = min(stop, start + max_images - n)
            dec = decode_batch(table.slice(start, stop - start))
            imgs = dec["image"]
            if size != CROP_SIZE:
                imgs = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in imgs])
            with torch.no_grad():
                out = model(to_model_input(imgs, dev))
            preds.append(out.coords.float().cpu().numpy().astype(np.float64) * CROP_SIZE)
            nfes.append(out.stats.nfe.cpu().numpy())
            gts.append(dec["landmarks"].astype(np.float64))
            names += [str(s) for s in dec["source_id"]]
            n += len(imgs)
    if not preds:
        raise ValueError(f"{Path(shards_dir) / split}: no still images to evaluate")
    return StillResult(split, np.concatenate(preds), np.concatenate(gts), names, np.concatenate(nfes))
