"""``ldeq models ...``: the pretrained model zoo (ldeq_core/zoo/zoo.json, or $LDEQ_ZOO_DIR)."""

from __future__ import annotations

from typing import Any

import typer

models_app = typer.Typer(help="Pretrained models: list the zoo and show a model's card.", no_args_is_help=True)


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {str(err).splitlines()[0]}", err=True)
    return typer.Exit(code=2)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


@models_app.command("list")
def list_cmd(
    points: int | None = typer.Option(None, "--points", help="only models with this many landmarks (68 or 98)"),
) -> None:
    """Table of the zoo's models: points, input size, parameters, GMAC per RwR frame, CPU frames/s, val NME."""
    from rich.console import Console
    from rich.table import Table

    from ldeq_core.pretrained import default_pretrained, list_pretrained, zoo_dir

    try:
        entries = list_pretrained(points)
    except ValueError as err:
        raise _fail(err) from None
    if not entries:
        typer.echo(f"no pretrained models{f' with {points} points' if points else ''} in {zoo_dir() / 'zoo.json'}")
        return
    points_set = {e.n_landmarks for e in entries}
    defaults = {
        dev: {n: default_pretrained(n, device=dev) for n in points_set} for dev in ("cpu", "cuda")
    }  # what ldeq track / Serve pick without --model, per device
    table = Table(title=f"ldeq model zoo ({zoo_dir()})")
    for column in ("name", "points", "input", "params", "GMAC/frame", "CPU fps", "val NME %"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for e in entries:
        nme = e.card.metrics.get("val_nme_pct")
        picked = [dev for dev in ("cpu", "cuda") if (d := defaults[dev].get(e.n_landmarks)) and d.name == e.name]
        label = {("cpu", "cuda"): " (default)", ("cpu",): " (CPU default)", ("cuda",): " (GPU default)"}
        table.add_row(
            e.name + label.get(tuple(picked), ""),
            str(e.n_landmarks),
            f"{e.card.input_size}px",
            f"{e.card.params / 1e6:.2f} M",
            f"{e.card.gmac_per_rwr_frame:.3f}",
            f"{e.card.cpu_frames_per_s:.1f}",
            "-" if nme is None else f"{nme:.2f}",
        )
    Console(width=max(100, Console().width)).print(table)
    typer.echo("GMAC and CPU fps: RwR at 2 NFE per frame, batch 1; `ldeq models info NAME` for the whole card.")


@models_app.command("info")
def info_cmd(name: str = typer.Argument(..., help="zoo model name (see `ldeq models list`)")) -> None:
    """The whole model card of one zoo model: weights file and hash, sizes, speed, metrics, recipe, licence."""
    from ldeq_core.pretrained import get_pretrained, zoo_dir

    try:
        entry = get_pretrained(name)
    except ValueError as err:
        raise _fail(err) from None
    card = entry.card
    rows: list[tuple[str, Any]] = [
        ("name", entry.name),
        ("scheme", card.scheme),
        ("weights", f"{zoo_dir() / entry.filename} ({entry.size_bytes} bytes)"),
        ("sha256", entry.sha256),
        ("url", entry.url or "-"),
        ("input size", f"{card.input_size}px (heatmaps {card.heatmap_size}px)"),
        ("parameters", f"{card.params} ({card.params / 1e6:.3f} M)"),
        ("GMAC per RwR frame", f"{card.gmac_per_rwr_frame:.4f} (stem + 2 cell evaluations)"),
        ("CPU frames/s", f"{card.cpu_frames_per_s:.2f} (RwR 2 NFE, batch 1, one face)"),
        ("CPU benchmark", card.cpu_benchmark),
        ("metrics", ", ".join(f"{k} {_number(v)}" for k, v in card.metrics.items()) or "-"),
        ("training data", card.training_data),
        ("recipe", card.recipe),
        ("command", card.command),
        ("git commit", card.git_commit),
        ("video defaults", ", ".join(f"{k}={v}" for k, v in entry.video_defaults.items()) or "-"),
        ("box convention", card.box_convention),
        ("licence", card.licence),
        ("notes", card.notes or "-"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
