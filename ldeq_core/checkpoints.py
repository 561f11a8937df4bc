"""Checkpoints: our safe format, and a converter for upstream-style checkpoints.

Our format is a plain dict ``{"format", "config", "state_dict", "metadata"}`` of tensors and builtin types, loaded
with ``torch.load(weights_only=True)``. Upstream checkpoints pickle an ``argparse.Namespace`` in ``ckpt['args']``
(spec §1.9, §10.8): they can only be read by unpickling arbitrary objects, so the converter refuses unless the
caller passes ``trust_pickle=True``, then maps the config fields and parameter names and loads strictly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ldeq_core.config import GradConfig, ModelConfig, SolverConfig
from ldeq_core.fileio import atomic_path, file_sha256
from ldeq_core.model import LandmarkDEQ

FORMAT = "ldeq-checkpoint/1"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | Path, model: LandmarkDEQ, metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` (config + CPU state dict) and JSON-like ``metadata`` atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {
            "format": FORMAT,
            "config": model.cfg.to_dict(),
            "state_dict": state,
            "metadata": dict(metadata or {}),
        },
        path,
    )


@dataclass
class LoadedCheckpoint:
    model: LandmarkDEQ
    metadata: dict[str, Any]
    sha256: str


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load our format safely (``weights_only=True``) and strictly; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, foreign objects
        raise ValueError(
            f"{path}: not a safe ldeq checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]}). "
            "Upstream checkpoints must be converted first: `ldeq convert-upstream --trust-pickle SRC DST`"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} checkpoint")
    model = LandmarkDEQ(ModelConfig.from_dict(ckpt["config"]))
    _load_strict(model, ckpt["state_dict"], str(path))
    return LoadedCheckpoint(model.to(map_location), ckpt.get("metadata", {}), file_sha256(path))


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: state dict does not match the model: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )


# ---------------------------------------------------------------------------------------------- upstream converter

_UPSTREAM_DECODER = {  # upstream hourglass decoder module -> (our stage, our block)
    "downchan1": (0, "reduce"),
    "downchan2": (0, "merge"),
    "same5": (0, "refine"),
    "downchan3": (1, "reduce"),
    "downchan4": (1, "merge"),
    "same6": (1, "refine"),
    "downchan5": (2, "reduce"),
    "downchan6": (2, "merge"),
    "same7": (2, "refine"),
    "downchan7": (3, "reduce"),
    "downchan8": (3, "merge"),
    "same8": (3, "refine"),
}
_UPSTREAM_STEM = {"0": "conv1", "1": "conv2", "3": "conv3"}


def map_upstream_key(key: str) -> str | None:
    """Our parameter name for an upstream parameter name, or None if it has no counterpart."""
    key = key.removeprefix("module.")
    if m := re.fullmatch(r"tail\.(\d)\.(.+)", key):
        return f"stem.{_UPSTREAM_STEM[m[1]]}.{m[2]}" if m[1] in _UPSTREAM_STEM else None
    if not key.startswith("deq_layer.cell."):
        return None
    rest = key.removeprefix("deq_layer.cell.")
    if m := re.fullmatch(r"tail\.(.+)", rest):
        return f"cell.inject.{m[1]}"
    if m := re.fullmatch(r"head\.(.+)", rest):
        return f"cell.head.{m[1]}"
    if m := re.fullmatch(r"hourglass\.(same|upchan)([1-4])\.(.+)", rest):
        return f"cell.hourglass.{m[1]}.{int(m[2]) - 1}.{m[3]}"
    if m := re.fullmatch(r"hourglass\.bottlneck\.(.+)", rest):
        return f"cell.hourglass.bottleneck.{m[1]}"
    if (m := re.fullmatch(r"hourglass\.(\w+?)\.(.+)", rest)) and m[1] in _UPSTREAM_DECODER:
        stage, block = _UPSTREAM_DECODER[m[1]]
        return f"cell.hourglass.up.{stage}.{block}.{m[2]}"
    return None


def config_from_upstream_args(args: Any) -> ModelConfig:
    """Map the upstream ``ckpt['args']`` fields (spec §1.9) to a :class:`ModelConfig`."""
    get = (lambda k, d=None: args.get(k, d)) if isinstance(args, dict) else (lambda k, d=None: getattr(args, k, d))
    if get("cell_name", "Cell0") != "Cell0":
        raise ValueError(f"unsupported upstream cell {get('cell_name')!r}")
    explicit_bn = bool(get("cell_use_bn_for_explicit", False)) and get("model_mode", "implicit") == "explicit"
    norm = get("cell_norm", "softargmax")
    beta = float(get("cell_softargmax_beta", 1.0))
    if get("cell_learn_softargmax_beta", False):
        # Upstream applied softplus to a never-registered beta: the effective value is softplus(init) (spec §1.6).
        beta = float(torch.nn.functional.softplus(torch.tensor(beta)))
    method = get("solver", "anderson")
    if method not in ("fpi", "anderson"):
        raise ValueError(f"unsupported upstream solver {method!r} (only fpi and anderson are implemented)")
    stop = get("stop_mode", "rel")
    max_iters = int(get("max_iters", 10))
    return ModelConfig(
        n_landmarks=int(get("n_keypoints", 98)),
        image_size=int(get("im_size", 256)),
        heatmap_size=int(get("heatmap_size", 64)),
        injection_width=int(get("injection_width", 224)),
        cell_base_width=int(get("cell_base_width", 224)),
        cell_width_increment=int(get("cell_width_increment", 24)),
        extra_latent_width=int(get("cell_extra_latent_width", 0)),
        cell_norm="bn" if explicit_bn else "gn",
        gn_groups=int(get("cell_gn_groups", 1)),
        heatmap_norm="none" if norm == "None" else norm,
        beta=beta,
        learn_beta=False,
        solver=SolverConfig(
            method=method,
            max_nfe=max_iters + (2 if method == "anderson" else 0) + 1,
            tol=float(get("rel_diff_target" if stop == "rel" else "abs_diff_target", 5e-3)),
            stop_mode=stop,
            anderson_m=int(get("anderson_m", 6)),
            anderson_lam=float(get("anderson_lam", 1e-4)),
            anderson_beta=float(get("anderson_beta", 1.0)),
            upstream=True,
            upstream_max_iters=max_iters,
            upstream_one_less_step=bool(get("take_one_less_inference_step", False)),
        ),
        grad=GradConfig(mode="one_step" if get("JFB", False) else "implicit"),
    )


@dataclass
class ConversionReport:
    config: ModelConfig
    mapped: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def convert_upstream(src: str | Path, dst: str | Path | None = None, *, trust_pickle: bool = False) -> ConversionReport:
    """Convert an upstream checkpoint to our format; raise listing every missing/unexpected key on mismatch.

    Unpickling runs arbitrary code from the file, so it is refused unless ``trust_pickle`` is True.
    """
    src = Path(src)
    if not trust_pickle:
        raise PermissionError(
            f"{src}: upstream checkpoints pickle an argparse.Namespace; unpickling can run arbitrary code. "
            "Pass trust_pickle=True (CLI: --trust-pickle) only for files you trust."
        )
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "args" not in ckpt:
        raise ValueError(f"{src}: expected a dict with 'args' and 'state_dict' (an upstream LDEQ checkpoint)")
    cfg = config_from_upstream_args(ckpt["args"])
    model = LandmarkDEQ(cfg)
    ours = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in ckpt["state_dict"].items():
        new = map_upstream_key(key)
        if new is None or new not in ours:
            unexpected.append(key)
        elif tuple(ours[new].shape) != tuple(value.shape):
            unexpected.append(f"{key} (shape {tuple(value.shape)} != {tuple(ours[new].shape)})")
        else:
            mapped[new] = value
    missing = sorted(set(ours) - set(mapped))
    report = ConversionReport(cfg, len(mapped), missing, unexpected)
    if not report.ok:
        raise ValueError(f"{src}: cannot convert strictly: missing {missing}, unexpected {unexpected}")
    model.load_state_dict(mapped, strict=True)
    if dst is not None:
        save_checkpoint(dst, model, {"source": "upstream", "converted_from": src.name})
    return report
