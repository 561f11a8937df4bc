"""``ldeq track INPUT... --out DIR``: landmarks for every face of video and image files in one command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer

if TYPE_CHECKING:  # the command imports torch and the model only when it runs (a fast `ldeq --help`)
    import torch
    from rich.console import Console

    from ldeq_cli.track import TrackSummary
    from ldeq_core.checkpoints import LoadedCheckpoint
    from ldeq_core.face_detect import FaceDetector
    from ldeq_core.face_tracking import FaceTrackingConfig
    from ldeq_core.landmarker import FaceLandmarker, VideoSettings

_MODEL_HELP = "zoo model name (ldeq models list) or checkpoint path; default: the best 68-point zoo model"


def track(
    inputs: list[Path] = typer.Argument(..., help="video files, image files, or folders of them"),
    out: Path = typer.Option(Path("outputs/track"), "--out", help="output folder for <stem>.csv and overlays"),
    model: str | None = typer.Option(None, "--model", help=_MODEL_HELP),
    mode: str | None = typer.Option(
        None, "--mode", help="rwr (warm-started, stable) | per_frame; default: the model's"
    ),
    budget_nfe: int | None = typer.Option(None, "--budget-nfe", help="RwR cell evaluations per warm frame"),
    gamma: float | None = typer.Option(None, "--gamma", help="proximal RwR weight (0: plain RwR)"),
    filter_name: str | None = typer.Option(
        None, "--filter", help="streaming filter on the landmarks: none|ema|one_euro|kalman; default: the model's"
    ),
    filter_params: str | None = typer.Option(
        None, "--filter-params", help='JSON, e.g. {"min_cutoff": 1, "beta": 0.05}'
    ),
    warp: bool | None = typer.Option(None, "--warp/--no-warp", help="warp the RwR state into each new crop"),
    boxes: Path | None = typer.Option(
        None, "--boxes", help="(T, 4) x1,y1,x2,y2 .npy for one input, or a folder of <stem>.npy"
    ),
    max_faces: int | None = typer.Option(None, "--max-faces", min=1, help="at most this many faces per frame"),
    detect_every: int = typer.Option(10, "--detect-every", min=1, help="run the face detector every N frames"),
    detector: str = typer.Option("auto", "--detector", help="face detector (ldeq_core.face_detect)"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    runtime: str = typer.Option(
        "torch", "--runtime", help="torch | onnx (onnxruntime on the CPU; exported once into the cache)"
    ),
    onnx_file: Path | None = typer.Option(
        None, "--onnx-file", help="with --runtime onnx: an `ldeq export` RwR-step file (its .solve.onnx beside it)"
    ),
    no_overlay: bool = typer.Option(False, "--no-overlay", help="write only the CSVs"),
    require_face: bool = typer.Option(False, "--require-face", help="an input without any face is an error"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Track every face in each input; write <out>/<stem>.csv (one row per frame and face) and an overlay."""
    from rich.console import Console

    from ldeq_core.face_tracking import FaceTrackingConfig

    console = Console(stderr=True)
    try:
        setup = _set_up(
            model,
            device,
            runtime,
            onnx_file,
            detector=detector if boxes is None else None,
            tracking=FaceTrackingConfig(detect_every=detect_every, max_faces=max_faces),
            options={"mode": mode, "budget_nfe": budget_nfe, "gamma": gamma, "filter": filter_name, "warp_state": warp},
            filter_params=filter_params,
        )
    except (ValueError, OSError, ImportError, json.JSONDecodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    from ldeq_cli.track import collect_inputs

    files, results = collect_inputs(inputs)
    console.print(f"ldeq track: {len(files)} input(s), {setup.describe(model)}")
    results += _track_files(files, out, setup, boxes, overlay=not no_overlay, require_face=require_face,
                            quiet=quiet, console=console)  # fmt: skip
    if not _report(results, out, console):
        raise typer.Exit(code=1)


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What every input of one ``ldeq track`` call shares: the model, its video settings, the detector (None with
    ``--boxes``), the tracking settings and, with ``--runtime onnx``, the engine."""

    ckpt: LoadedCheckpoint
    device: torch.device
    runtime: Literal["torch", "onnx"]
    settings: VideoSettings
    tracking: FaceTrackingConfig
    detector: FaceDetector | None
    engine: Any  # ldeq_core.onnx_runtime.OnnxEngine with --runtime onnx, else None

    def landmarker(self, fps: float) -> FaceLandmarker:
        """A fresh :class:`~ldeq_core.landmarker.FaceLandmarker` for one input of frame rate ``fps``."""
        from ldeq_core.landmarker import FaceLandmarker

        return FaceLandmarker(
            self.ckpt,
            self.settings,
            detector=self.detector,
            tracking=self.tracking,
            fps=fps,
            device=str(self.device),
            runtime=self.runtime,
            engine=self.engine,
        )

    def describe(self, model: str | None) -> str:
        """The model, the video mode and where it runs, in one line."""
        ckpt, s = self.ckpt, self.settings
        name = str(ckpt.metadata.get("zoo_name") or f"{model} (sha256 {ckpt.sha256[:12]})")
        return (
            f"model {name} ({ckpt.model.cfg.n_landmarks} points, {ckpt.model.cfg.image_size} px), mode {s.mode}"
            + (f" {s.budget_nfe} NFE" if s.mode == "rwr" else "")
            + (" + state warp" if s.mode == "rwr" and s.warp_state else "")
            + (f", filter {s.filter} {s.filter_params}" if s.filter != "none" else "")
            + f", device {self.device}"
            + (f", runtime {self.engine.describe()}" if self.engine is not None else "")
        )


def _set_up(
    model: str | None,
    device: str,
    runtime: str,
    onnx_file: Path | None,
    *,
    detector: str | None,
    tracking: FaceTrackingConfig,
    options: dict[str, Any],
    filter_params: str | None,
) -> _Setup:
    """Check the runtime options, pick the device, load the model, settle its video settings (the zoo card's,
    with the ``options`` that are not None in their place), then the face detector (``detector`` None: boxes are
    given) and the ONNX engine (exported or read, and loaded, once for every input)."""
    from ldeq_core.landmarker import default_settings, load_model, onnx_device, onnx_engine, resolve_device

    if runtime not in ("torch", "onnx"):
        raise ValueError(f"--runtime must be torch or onnx, got {runtime!r}")
    if onnx_file is not None and runtime != "onnx":
        raise ValueError("--onnx-file needs --runtime onnx")
    rt: Literal["torch", "onnx"] = "onnx" if runtime == "onnx" else "torch"
    params = json.loads(filter_params) if filter_params else None
    if params is not None and not isinstance(params, dict):
        raise ValueError("--filter-params must be a JSON object")
    dev = resolve_device(onnx_device(device) if rt == "onnx" else device)
    ckpt = load_model(model, dev)
    base = default_settings(ckpt)
    changes = {k: v for k, v in options.items() if v is not None}
    if changes.get("filter", base.filter) != base.filter:
        changes["filter_params"] = {}  # the card's parameters belong to the card's filter
    if params is not None:
        changes["filter_params"] = params
    settings = dataclasses.replace(base, **changes)
    det = None
    if detector is not None:
        from ldeq_core.face_detect import make_detector

        det = make_detector(detector)
    engine = onnx_engine(ckpt, settings, onnx_file) if rt == "onnx" else None
    return _Setup(ckpt, dev, rt, settings, tracking, det, engine)


def _track_files(
    files: list[Path],
    out: Path,
    setup: _Setup,
    boxes: Path | None,
    *,
    overlay: bool,
    require_face: bool,
    quiet: bool,
    console: Console,
) -> list[TrackSummary]:
    """Track each file in turn; a file that fails gets a summary with its error and the others go on."""
    from tqdm import tqdm

    from ldeq_cli.track import TrackSummary, load_boxes, output_stems, track_file
    from ldeq_shared.errors import DataError

    results: list[TrackSummary] = []
    for path, stem in zip(files, output_stems(files), strict=True):
        try:
            face_boxes = load_boxes(boxes, path, len(files))
            with tqdm(desc=stem[:30], unit="frame", disable=quiet, leave=False, dynamic_ncols=True) as bar:
                summary = track_file(
                    path,
                    stem,
                    out,
                    setup.landmarker,
                    boxes=face_boxes,
                    overlay=overlay,
                    require_face=require_face,
                    progress=bar.update,
                )
            if summary.rows == 0:
                console.print(f"[yellow]{path}: no face found in {summary.frames} frame(s); CSV has a header only")
        except (DataError, ValueError, OSError) as err:  # NoFaceError (--require-face) is a DataError
            summary = TrackSummary(path, error=str(err))
        results.append(summary)
        if summary.error:  # soft wrap: a narrow terminal never folds the path inside the message
            console.print(f"[red]failed: {summary.error}", soft_wrap=True)
    return results


def _report(results: list[TrackSummary], out: Path, console: Console) -> bool:
    """Print the summary table, then every failed input with its whole path; True when none failed."""
    from rich.table import Table

    table = Table(title=f"ldeq track -> {out}")
    for col in ("input", "frames", "face ids", "rows", "frames/s", "status"):
        table.add_column(col, justify="right" if col in ("frames", "face ids", "rows", "frames/s") else "left")
    for r in results:
        fps = f"{r.frames / r.seconds:.1f}" if r.seconds > 0 else "-"
        status = "ok" if r.ok else f"[red]{(r.error or '')[:80]}"
        table.add_row(str(r.path), str(r.frames), str(r.face_ids), str(r.rows), fps, status)
    console.print(table)
    failed = [r for r in results if not r.ok]
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} input(s) failed:", soft_wrap=True)
        for r in failed:  # the table may shorten paths to fit the terminal; these lines never do
            message = (r.error or "").removeprefix(f"{r.path}: ")  # most errors already start with the path
            console.print(f"  {r.path}: {message}", soft_wrap=True, markup=False, highlight=False)
    return not failed


def register(app: typer.Typer) -> None:
    app.command("track")(track)
