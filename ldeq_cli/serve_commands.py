"""``ldeq serve``: start a local Ray + Serve on 127.0.0.1 running the landmark service of serve/app.py."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import typer


def _find(path: Path, config: Path) -> Path:
    """``path`` as given (cwd-relative), else relative to the config's repository (config's parent's parent)."""
    if path.is_absolute() or path.exists():
        return path
    alt = config.resolve().parent.parent / path
    return alt if alt.exists() else path


def resolve_service(config: Path, checkpoint: Path | None) -> tuple[Any, dict[str, Any], list[str]]:
    """(settings, the config document, warnings) for ``ldeq serve``; falls back to an untrained model with a
    warning when the configured checkpoint does not exist (never silently)."""
    import yaml

    from serve.model_source import UNTRAINED_WARNING
    from serve.settings import load_settings

    if not config.is_file():
        raise typer.BadParameter(f"{config}: Serve config not found", param_hint="--config")
    doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    apps = doc.get("applications") or [{}]
    args = dict(apps[0].get("args") or {})
    overrides = dict(args.get("settings") or {})
    params = args.get("params_file")
    params_path = _find(Path(params), config) if params else None
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise typer.BadParameter(f"{checkpoint}: checkpoint not found", param_hint="--checkpoint")
        overrides["model"] = {
            **(overrides.get("model") or {}),
            "checkpoint": str(checkpoint.resolve()),
            "mlflow_name": None,
            "mlflow_alias": None,
            "mlflow_version": None,
        }
    settings = load_settings(params_path, overrides, args.get("base_dir"))
    warnings: list[str] = []
    src = settings.model
    if not src.mlflow_name and not src.zoo and not (src.checkpoint and Path(src.checkpoint).is_file()):
        from ldeq_core.pretrained import default_pretrained

        where = src.checkpoint or "(none configured)"
        from serve.model_source import pick_device

        entry = default_pretrained(68, device=pick_device(src.device))
        if entry is not None:  # the best real-face zoo model for the device, said out loud
            warnings.append(f"checkpoint {where} not found: serving the zoo model {entry.name} ({entry.card.scheme})")
            model = src.model_copy(update={"checkpoint": None, "zoo": entry.name})
        else:
            warnings.append(f"WARNING: checkpoint {where} not found.")
            warnings.append(UNTRAINED_WARNING)
            model = src.model_copy(update={"checkpoint": None, "untrained_fallback": True})
        settings = settings.model_copy(update={"model": model})
    return settings, doc, warnings


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_command(
    config: Path = typer.Option(Path("serve/config.yaml"), "--config", help="Ray Serve config (serve/config.yaml)"),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="serve this checkpoint instead"),
    port: int | None = typer.Option(None, "--port", help="HTTP port (default: the config's http_options.port)"),
    check: bool = typer.Option(False, "--check", help="resolve the settings and load the model, then exit"),
) -> None:
    """Start Ray + Serve on 127.0.0.1 with the landmark service; Ctrl-C stops it.

    The model is the configured checkpoint (params.yaml serve.model.checkpoint, default models/model.pt) or
    MLflow model. If no checkpoint exists, a randomly initialised model is served with a loud warning.
    """
    settings, doc, warnings = resolve_service(config, checkpoint)
    for w in warnings:
        typer.secho(w, fg=typer.colors.RED, err=True, bold=True)
    http = dict(doc.get("http_options") or {})
    host = "127.0.0.1"
    if http.get("host", host) != host:
        typer.secho(f"note: http_options.host {http['host']!r} ignored; ldeq serve binds {host}", err=True)
    port = port or int(http.get("port", 8000))
    if check:
        import warnings as _warnings

        from serve.model_source import load_model

        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")  # already printed above
            loaded = load_model(settings.model)
        typer.echo(f"model: {loaded.source} sha256={loaded.sha256} trained={loaded.trained}")
        typer.echo(f"would serve on http://{host}:{port}")
        return
    import ray
    from ray import serve

    from ldeq_shared.ray_session import start_or_attach
    from serve.app import make_app

    apps = doc.get("applications") or [{}]
    app_cfg = apps[0]
    deployments = app_cfg.get("deployments") or [{}]
    options = {k: v for k, v in deployments[0].items() if k != "name"}
    start_or_attach(configure_logging=False, auth_off_on_attach=True)
    http_options = {"host": host, "port": port}
    if "request_timeout_s" in http:
        http_options["request_timeout_s"] = http["request_timeout_s"]
    serve.start(http_options=http_options, proxy_location="HeadOnly")
    name = app_cfg.get("name", "ldeq")
    serve.run(make_app(settings, **options), name=name, route_prefix=app_cfg.get("route_prefix", "/"), blocking=False)
    typer.echo(f"ldeq service '{name}' on http://{host}:{port}  (OpenAPI: /openapi.json, health: /healthz)")
    for w in warnings:
        typer.secho(w, fg=typer.colors.RED, err=True, bold=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill PID` stops Serve and Ray cleanly too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        serve.shutdown()
        ray.shutdown()


def serve_smoke_command(
    checkpoint: Path = typer.Option(Path("models/model.pt"), help="model to serve"),
    raw_dir: Path = typer.Option(Path("data/raw"), help="prepared data (videos are picked from it)"),
    out: Path = typer.Option(Path("metrics/serve_smoke.json"), help="where the result goes"),
    videos: int = typer.Option(2, help="videos in the request"),
) -> None:
    """Pipeline smoke test: deploy the service on 127.0.0.1, score held-out videos over HTTP, verify, record."""
    from serve.smoke import run_smoke

    result = run_smoke(Path.cwd(), checkpoint=checkpoint, raw_dir=raw_dir, out=out, n_videos=videos)
    typer.echo(
        f"serve smoke: {result['videos']} videos, {result['frames']} frames in {result['request_latency_s']} s "
        f"({result['frames_per_s']} frames/s), NME {result['nme_io_mean']:.2f} %, NMF {result['nmf_mean']:.1f} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("serve-smoke")(serve_smoke_command)
