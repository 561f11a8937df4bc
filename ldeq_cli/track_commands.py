"""``ldeq track INPUT... --out DIR``: landmarks for every face of video and image files in one command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import typer

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
    from rich.table import Table
    from tqdm import tqdm

    from ldeq_cli.track import TrackSummary, collect_inputs, load_boxes, output_stems, track_file
    from ldeq_core.face_tracking import FaceTrackingConfig
    from ldeq_core.landmarker import (
        FaceLandmarker,
        default_settings,
        load_model,
        onnx_device,
        onnx_engine,
        resolve_device,
    )
    from ldeq_shared.errors import DataError

    console = Console(stderr=True)
    try:
        params = json.loads(filter_params) if filter_params else None
        if params is not None and not isinstance(params, dict):
            raise ValueError("--filter-params must be a JSON object")
        tracking = FaceTrackingConfig(detect_every=detect_every, max_faces=max_faces)
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"--runtime must be torch or onnx, got {runtime!r}")
        if onnx_file is not None and runtime != "onnx":
            raise ValueError("--onnx-file needs --runtime onnx")
        dev = resolve_device(onnx_device(device) if runtime == "onnx" else device)
        ckpt = load_model(model, dev)
        base = default_settings(ckpt)  # the zoo card's recommended video mode; options override it
        given = {"mode": mode, "budget_nfe": budget_nfe, "gamma": gamma, "filter": filter_name, "warp_state": warp}
        changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if filter_name is not None and filter_name != base.filter:
            changes["filter_params"] = {}  # the card's parameters belong to the card's filter
        if params is not None:
            changes["filter_params"] = params
        settings = dataclasses.replace(base, **changes)
        # one engine for every input: the ONNX graphs are exported (or read) and loaded once
        engine = onnx_engine(ckpt, settings, onnx_file) if runtime == "onnx" else None
        if boxes is None:
            from ldeq_core.face_detect import make_detector

            det = make_detector(detector)
        else:
            det = None
    except (ValueError, OSError, ImportError, json.JSONDecodeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None

    def make(fps: float) -> FaceLandmarker:
        return FaceLandmarker(
            ckpt,
            settings,
            detector=det,
            tracking=tracking,
            fps=fps,
            device=str(dev),
            runtime="onnx" if engine is not None else "torch",
            engine=engine,
        )

    files, results = collect_inputs(inputs)
    name = str(ckpt.metadata.get("zoo_name") or f"{model} (sha256 {ckpt.sha256[:12]})")
    console.print(
        f"ldeq track: {len(files)} input(s), model {name} ({ckpt.model.cfg.n_landmarks} points, "
        f"{ckpt.model.cfg.image_size} px), mode {settings.mode}"
        + (f" {settings.budget_nfe} NFE" if settings.mode == "rwr" else "")
        + (" + state warp" if settings.mode == "rwr" and settings.warp_state else "")
        + (f", filter {settings.filter} {settings.filter_params}" if settings.filter != "none" else "")
        + f", device {dev}"
        + (f", runtime {engine.describe()}" if engine is not None else "")
    )
    for path, stem in zip(files, output_stems(files), strict=True):
        try:
            face_boxes = load_boxes(boxes, path, len(files))
            with tqdm(desc=stem[:30], unit="frame", disable=quiet, leave=False, dynamic_ncols=True) as bar:
                summary = track_file(
                    path,
                    stem,
                    out,
                    make,
                    boxes=face_boxes,
                    overlay=not no_overlay,
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
            console.print(f"  {r.path}: {r.error}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("track")(track)
