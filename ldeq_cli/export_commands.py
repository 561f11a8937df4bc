"""``ldeq export --format onnx --out FILE``: the model as ONNX graphs (RwR step and full solve) for onnxruntime."""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_CHECKPOINT = Path("models/model.pt")
_OUT_HELP = "ONNX file to write (--mode both: the RwR step here, the solve in <stem>.solve.onnx beside it)"


def export(
    out: Path = typer.Option(..., "--out", help=_OUT_HELP),
    fmt: str = typer.Option("onnx", "--format", help="export format (onnx)"),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help=f"checkpoint file; default {DEFAULT_CHECKPOINT} (written by `make demo`)"
    ),
    model: str | None = typer.Option(None, "--model", help="zoo model name (ldeq models list) instead of a file"),
    mode: str = typer.Option("both", "--mode", help="rwr (warm-start step) | solve (from zeros) | both"),
    nfe: int | None = typer.Option(
        None, "--nfe", min=1, help="cell evaluations of the RwR step; default: the zoo card's budget, else 2"
    ),
    solve_nfe: int | None = typer.Option(
        None, "--solve-nfe", min=1, help="fixed budget of the solve graph; default: the model's solver max_nfe"
    ),
    exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (fast) | dynamo (torch.export)"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check landmarks against torch (onnxruntime)"),
) -> None:
    """Export the stem + fixed-budget RwR step and the fixed-NFE full solve as ONNX (dynamic batch), checked with
    onnx.checker; with --verify, landmark parity with torch on the CPU (limit 0.1 px at 256 px)."""
    from ldeq_core.landmarker import default_settings, load_model
    from ldeq_core.onnx_export import check_parity, export_model, read_metadata

    try:
        if fmt != "onnx":
            raise ValueError(f"--format {fmt!r}: only onnx is supported")
        if mode not in ("rwr", "solve", "both"):
            raise ValueError(f"--mode must be rwr, solve or both, got {mode!r}")
        if exporter not in ("torchscript", "dynamo"):
            raise ValueError(f"--exporter must be torchscript or dynamo, got {exporter!r}")
        if checkpoint is not None and model is not None:
            raise ValueError("pass --checkpoint PATH or --model NAME, not both")
        if model is None and checkpoint is None and not DEFAULT_CHECKPOINT.is_file():
            raise FileNotFoundError(
                f"{DEFAULT_CHECKPOINT}: checkpoint not found (run `make demo` to train it, or pass "
                "--model NAME from `ldeq models list`, or --checkpoint PATH)"
            )
        spec = model if model is not None else (checkpoint or DEFAULT_CHECKPOINT)
        if checkpoint is not None and not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
        loaded = load_model(spec, "cpu")
        budget = nfe if nfe is not None else default_settings(loaded).budget_nfe
        source = str(loaded.metadata.get("zoo_name") or spec)
        graphs = export_model(
            loaded.model,
            out,
            mode=mode,  # type: ignore[arg-type]
            nfe=budget,
            solve_nfe=solve_nfe,
            checkpoint_sha256=loaded.sha256,
            source=source,
            exporter=exporter,  # type: ignore[arg-type]
        )
    except (ValueError, OSError, ImportError) as err:
        typer.echo(f"error: {str(err).splitlines()[0]}", err=True)
        raise typer.Exit(code=2) from None
    cfg = loaded.model.cfg
    for g in graphs:
        meta = read_metadata(g.path)
        typer.echo(
            f"wrote {g.path} ({g.path.stat().st_size / 1e6:.1f} MB): {g.kind} graph, {g.nfe} NFE, "
            f"{meta['n_landmarks']} points, {cfg.image_size} px input, checkpoint sha256 {loaded.sha256[:12]}"
        )
    if verify:
        limit = 0.1 * cfg.image_size / 256
        diffs = check_parity(loaded.model, graphs)
        worst = max(diffs.values())
        parts = ", ".join(f"{k} {v:.2e} px" for k, v in diffs.items())
        typer.echo(f"parity with torch (onnxruntime, CPU): max landmark difference {parts} (limit {limit:.3g} px)")
        if worst > limit:
            typer.echo(f"error: ONNX landmarks differ from torch by {worst:.3g} px > {limit:.3g} px", err=True)
            raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
