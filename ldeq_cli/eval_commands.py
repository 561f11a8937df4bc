"""``ldeq evaluate``: the evaluate stage (RwR vs per-frame inference vs filters on the configured data)."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    params: Path = typer.Option(Path("params.yaml"), help="params file (sections 'evaluate', 'data', 'preprocess')"),
    checkpoint: Path | None = typer.Option(None, help="evaluate this checkpoint instead of evaluate.model_source"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
) -> None:
    """Evaluate stage: video NME/NMF per method, Pareto front, still NME/FR/AUC; writes metrics/eval.json."""
    from pipelines.evaluate.stage import run_evaluate_from_params

    try:
        result = run_evaluate_from_params(
            params, checkpoint=checkpoint.resolve() if checkpoint else None, progress=not quiet
        )
    except (ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    report = result["files"].get("report")
    if report and not quiet:
        typer.echo((params.resolve().parent / report).read_text(encoding="utf-8"))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
