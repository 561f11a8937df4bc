"""``ldeq data ...``: the prepare and preprocess stages, and direct access to the dataset builders."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="Datasets: DVC stages (prepare, preprocess) and dataset builders.", no_args_is_help=True)


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=2)


@data_app.command("prepare")
def prepare_cmd(
    params: Path = typer.Option(Path("params.yaml"), help="params file (section 'data')"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
) -> None:
    """Prepare stage: build or reference the raw data of data.source and write <data.out>/prepared.json."""
    from pipelines.prepare import prepare_from_params

    try:
        prepare_from_params(params, progress=not quiet)
    except (ValueError, OSError) as err:
        raise _fail(err) from None


@data_app.command("preprocess")
def preprocess_cmd(
    params: Path = typer.Option(Path("params.yaml"), help="params file (sections 'data' and 'preprocess')"),
) -> None:
    """Preprocess stage (Ray Data): crop every still and video frame to 256x256 Parquet shards."""
    from pipelines.preprocess import preprocess_from_params

    try:
        report = preprocess_from_params(params)
    except (ValueError, OSError) as err:
        raise _fail(err) from None
    splits = ", ".join(f"{k}: {v['rows']}" for k, v in report["splits"].items())
    typer.echo(
        f"preprocess: {report['rows']} rows ({splits}), {report['n_bad_items']} bad item(s), "
        f"{report['wall_seconds']} s (Ray job {report['job_seconds']} s, {report['rows_per_second']} rows/s)"
    )


@data_app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., help="output root (gets wflw/ and wflw_v/)"),
    n_train: int = typer.Option(2000, help="training stills"),
    n_test: int = typer.Option(300, help="test stills"),
    n_videos: int = typer.Option(12, help="videos (half easy, half hard)"),
    n_frames: int = typer.Option(90, help="frames per video"),
    seed: int = typer.Option(0),
    image_format: str = typer.Option("png", help="stills as png (lossless) or jpg (JPEG-95)"),
    workers: int = typer.Option(1, help="worker processes"),
) -> None:
    """Generate the synthetic WFLW-layout stills and WFLW-V-layout videos directly."""
    from pipelines.synthetic.generate import generate_dataset

    try:
        summary = generate_dataset(
            out,
            n_train=n_train,
            n_test=n_test,
            n_videos=n_videos,
            n_frames=n_frames,
            seed=seed,
            workers=workers,
            image_format=image_format,
        )
    except (ValueError, OSError) as err:
        raise _fail(err) from None
    typer.echo(json.dumps(summary, indent=1))


@data_app.command("animate")
def animate_cmd(
    src: Path = typer.Option(..., help="300-W root (or any folder of .jpg/.png + .pts)"),
    out: Path = typer.Option(..., help="output root (WFLW-V layout)"),
    n_videos: int = typer.Option(10, help="videos to make"),
    n_frames: int = typer.Option(60, help="frames per video"),
    subsets: str = typer.Option("", help="comma-separated sub-folders of SRC (default: all with .pts files)"),
    width: int = typer.Option(640),
    height: int = typer.Option(480),
    fps: float = typer.Option(30.0),
    seed: int = typer.Option(0),
) -> None:
    """Animate annotated stills into short videos with exact per-frame landmarks (WFLW-V layout)."""
    from pipelines.animated_stills import build_animated_stills_dataset
    from pipelines.formats.w300 import scan_300w

    try:
        items, bad = scan_300w(src, [s for s in subsets.split(",") if s] or None)
        ids = build_animated_stills_dataset(
            items, out, n_videos, n_frames=n_frames, size=(width, height), fps=fps, seed=seed, skip_existing=True
        )
    except (ValueError, OSError) as err:
        raise _fail(err) from None
    typer.echo(f"animate: {len(ids)} videos in {out} from {len(items)} stills ({len(bad)} bad skipped)")


@data_app.command("wflw-v")
def wflw_v_cmd(
    out: Path = typer.Option(..., help="output root (videos/, landmarks/, bboxes/, manifest.csv)"),
    annotations: list[str] = typer.Option([], help="annotation archive or folder, URL or path (repeatable)"),
    archive: str = typer.Option(
        "", help="a packaged WFLW-V archive (zip/tar/folder, URL or path) instead of downloading"
    ),
    url_template: str = typer.Option("https://www.youtube.com/watch?v={id}", help="video URL, {id} replaced"),
    ids: list[str] = typer.Option(
        [], help="comma-separated video ids (repeatable); an id starting with '-' as --ids=-abc"
    ),
    ids_file: Path | None = typer.Option(None, help="file with one video id per line"),
    split: str = typer.Option("all", help="easy | hard | all"),
    max_videos: int | None = typer.Option(None, help="download at most this many videos"),
    video_format: str = typer.Option("", "--format", help="yt-dlp format selector (default: best mp4 with audio)"),
    cookies: Path | None = typer.Option(None, help="cookies.txt for yt-dlp"),
    lists_dir: Path | None = typer.Option(None, help="folder with custom id/range lists (default: shipped)"),
    workers: int = typer.Option(4),
    retries: int = typer.Option(3),
    backoff: float = typer.Option(1.0, help="base retry delay in seconds (doubles per retry)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="a progress bar"),
    strict: bool = typer.Option(False, "--strict", help="exit 1 unless every video is usable"),
) -> None:
    """Acquire WFLW-V: download + cut from YouTube (with the annotation archive), or install an archive.

    Exit codes: 0 done, 1 with --strict when a video is unusable, 2 on bad input.
    """
    from pipelines.acquire_wflw_v import acquire_from_archive, acquire_from_youtube
    from pipelines.wflw_v_lists import load_lists_from_dir, load_shipped_lists

    common = {"workers": workers, "retries": retries, "backoff_s": backoff, "progress": progress}
    try:
        lists = load_lists_from_dir(lists_dir) if lists_dir else load_shipped_lists()
        if archive:
            summary = acquire_from_archive(out, archive, lists=lists, **common)
        else:
            if split not in ("easy", "hard", "all"):
                raise ValueError(f"--split must be easy, hard or all, got {split!r}")
            chosen = [v.strip() for chunk in ids for v in chunk.split(",") if v.strip()]
            if ids_file is not None:
                chosen += [ln.strip() for ln in ids_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
            summary = acquire_from_youtube(
                out,
                annotations or None,
                url_template=url_template,
                ids=chosen or None,
                lists=lists,
                split=split,
                max_videos=max_videos,  # type: ignore[arg-type]
                **({"format_spec": video_format} if video_format else {}),
                ydl_options={"cookiefile": str(cookies)} if cookies else None,
                **common,
            )
    except (ValueError, OSError) as err:
        raise _fail(err) from None
    typer.echo(str(summary))
    if strict and len(summary.usable_ids) != len(summary.rows):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``data`` sub-app to the ``ldeq`` command."""
    app.add_typer(data_app, name="data")
