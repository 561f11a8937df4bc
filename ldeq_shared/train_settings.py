"""Typed training configuration: the ``train`` section of a params file (``model`` is its ``model`` section).

``model:`` is a preset name plus any :class:`ldeq_core.config.ModelConfig` field overrides (``solver``/``grad`` as
nested dicts; :class:`ldeq_shared.params.ModelSection`). ``train:`` maps one to one onto :class:`TrainConfig`
(``augment:`` nested). Command-line overrides are ``key=value`` strings: ``train.lr=3e-4``, ``lr=3e-4`` (bare keys
mean ``train.``), ``model.image_size=64``, ``train.augment.flip_prob=0``; values are parsed as YAML scalars.

Relative paths (``data_dir``, ``storage_path``, ``mlflow_artifacts`` and a ``sqlite:///relative.db`` tracking URI)
are relative to the project root (the folder of ``params.yaml``); :meth:`TrainConfig.resolved` makes them absolute.
Read through :func:`ldeq_shared.params.load_params` (``Params.train``); pipelines/train/config.py re-exports these.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from ldeq_core.config import ModelConfig
from ldeq_shared.params import ModelSection, ParamsError, parse_section, plain


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentation recipe (defaults: ours)."""

    enabled: bool = True
    flip_prob: float = 0.5
    rotate_prob: float = 0.5
    max_rotate_deg: float = 30.0
    scale_prob: float = 0.5
    min_scale: float = 0.9
    max_scale: float = 1.1
    translate_prob: float = 0.5
    max_translate: float = 0.12  # fraction of the crop side (HIH: +-30 px of 256)
    blur_prob: float = 0.3
    max_blur_sigma: float = 3.0  # pixels of a 256 crop
    occlude_prob: float = 0.3
    max_occlude_frac: float = 0.4  # occluder side, fraction of the crop side
    color_prob: float = 0.5
    brightness: float = 0.25  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.25
    saturation: float = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"train.augment.{f.name} must be in [0, 1], got {value}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"train.augment: need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        for name in ("max_rotate_deg", "max_translate", "max_blur_sigma", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.augment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.max_occlude_frac <= 1:
            raise ValueError(f"train.augment.max_occlude_frac must be in (0, 1], got {self.max_occlude_frac}")


# automatic decode + augment threads per worker: on 4x H200, 2 threads trained faster than 12 (398 vs 361 images/s on
# one GPU, 1,391 vs 1,164 on four; BENCHMARKS.md 14) and one thread prepares ~800 images/s (section 4a)
AUTO_DATA_THREADS_MAX = 2
# Keys that TrainConfig no longer has; configs written before (a saved train_config.yaml, a params.yaml) may still
# carry them with their null default, which is ignored. Test-only fault injection is pipelines/train/faults.py.
_REMOVED_KEYS = ("fail_at_epoch", "fail_marker")
LossKind = Literal["l1", "wing"]
GradModeName = Literal["implicit", "one_step", "unrolled"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see ``params.yaml`` for the documented defaults."""

    model: ModelSection = field(default_factory=ModelSection)  # the ``model`` section
    run_name: str = "ldeq-train"
    data_dir: str = "data/shards"
    train_split: str = "train"
    val_split: str = "auto"  # auto: "val" when the shards have it, else "test" (the synthetic source has no val)
    materialize_train: bool = False  # keep the decoded-on-the-fly shard bytes in the object store (small sets)
    materialize_val: bool = True  # the val split is read once, not once per epoch and worker
    # every worker holds the whole (encoded) train split in memory and takes its share of a global per-epoch
    # permutation (pipelines/train/cache.py); false: stream the worker's Ray Data shard every epoch
    worker_cache: bool = True
    worker_cache_max_mb: float = 2048.0  # per worker; a larger split is refused with a clear error
    # optimisation
    epochs: int = 12
    batch_size: int = 16  # per worker
    val_batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    cosine: bool = True
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    loss: LossKind = "l1"
    wing_w: float = 10.0  # wing loss width, pixels of a 256 crop
    wing_eps: float = 2.0  # wing loss curvature, pixels of a 256 crop
    heatmap_loss_weight: float = 0.0  # optional MSE to Gaussian target heatmaps (0 disables)
    heatmap_sigma: float = 1.0  # Gaussian target std, heatmap cells
    # DEQ training settings (override the model's grad config; the model's solver is the inference setting)
    grad_mode: GradModeName = "one_step"
    train_max_nfe: int | None = 4  # forward budget while training; None = the model's solver.max_nfe
    stochastic_budget: bool = False  # training budget ~ Uniform{1..train_max_nfe} per step
    jac_reg_weight: float = 0.0
    nme_norm: str = "inter_ocular"  # inter_ocular | face
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # hardware
    bf16: bool = True  # bf16 autocast, GPU only
    channels_last: bool = False
    compile: bool = False  # torch.compile the DEQ cell (nn.Module.compile: state-dict keys unchanged); needs bf16 false
    # compile under DDP: true splits the compiled cell at DDP bucket boundaries (torch's DDPOptimizer, torch's default)
    # so the all-reduce overlaps the backward; false (measured faster: 0.3 ms of all-reduce per step) keeps one graph
    compile_ddp_split: bool = False
    grad_allreduce: str = "fp32"  # fp32 | bf16: DDP gradient all-reduce in bfloat16 (half the bytes; train/comm.py)
    seed: int = 0
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 1.0
    # threads per worker that decode + augment a batch's samples; None or 0: min(2, max(1, round(cpus_per_worker)))
    data_threads: int | None = None
    prefetch_batches: int = 2  # batches prepared ahead, in a background thread, while one trains (0: inline)
    # extra Ray resources per worker, e.g. {"trainer_slot": 1} with nodes started by `ray start --resources=...`
    # (CPU and GPU are set by cpus_per_worker / gpus_per_worker); empty: none
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    # fault tolerance and tracking
    checkpoint_every: int = 1
    async_checkpoint: bool = True  # rank 0 uploads checkpoints in the background (Ray's CheckpointUploadMode.ASYNC)
    keep_checkpoints: int = 2
    max_failures: int = 1
    storage_path: str = "outputs/ray_results"
    mlflow_uri: str = "sqlite:///mlflow.db"
    mlflow_artifacts: str = "outputs/mlartifacts"  # artifact root of new experiments (local tracking stores)
    mlflow_experiment: str = "ldeq"
    registered_model: str = "ldeq-landmarks"

    def __post_init__(self) -> None:
        if self.loss not in ("l1", "wing"):
            raise ValueError(f"train.loss must be 'l1' or 'wing', got {self.loss!r}")
        if self.grad_mode not in ("implicit", "one_step", "unrolled"):
            raise ValueError(f"train.grad_mode must be implicit, one_step or unrolled, got {self.grad_mode!r}")
        for name in ("epochs", "batch_size", "val_batch_size", "num_workers", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.grad_clip < 0:
            raise ValueError("train: need lr > 0 and weight_decay, warmup_epochs, grad_clip >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.train_max_nfe is not None and self.train_max_nfe < 1:
            raise ValueError(f"train.train_max_nfe must be >= 1 or null, got {self.train_max_nfe}")
        if self.data_threads is not None and self.data_threads < 0:
            raise ValueError(f"train.data_threads must be >= 0 or null (0, null: auto), got {self.data_threads}")
        if self.worker_cache_max_mb <= 0:
            raise ValueError(f"train.worker_cache_max_mb must be > 0, got {self.worker_cache_max_mb}")
        if self.prefetch_batches < 0:
            raise ValueError(f"train.prefetch_batches must be >= 0 (0: no prefetch), got {self.prefetch_batches}")
        if self.compile and self.bf16:
            # H100, torch 2.13: the inductor-compiled cell under bf16 autocast gives NaN gradients from the second
            # step (eager bf16 and compiled fp32/TF32 stay finite; bench/gpu/train_compile_check.py, BENCHMARKS 13).
            raise ValueError(
                "train.compile: true needs train.bf16: false (compiled bf16 training gave NaN gradients on an H100; "
                "compiled fp32/TF32 is finite and the fastest measured step, BENCHMARKS.md section 13)"
            )
        if self.grad_allreduce not in ("fp32", "bf16"):
            raise ValueError(f"train.grad_allreduce must be fp32 or bf16, got {self.grad_allreduce!r}")
        if self.max_failures < -1:
            raise ValueError(f"train.max_failures must be >= -1 (-1: unlimited), got {self.max_failures}")
        if self.nme_norm not in ("inter_ocular", "face"):
            raise ValueError(f"train.nme_norm must be inter_ocular or face, got {self.nme_norm!r}")
        _check_resources(self.resources_per_worker)
        if isinstance(self.model, Mapping):  # TrainConfig(model={"preset": ...}): the section as written
            object.__setattr__(self, "model", ModelSection.from_params(self.model))
        self.model_config()  # validates the model section early

    # ------------------------------------------------------------------ derived values

    def model_config(self) -> ModelConfig:
        """The preset with the ``model:`` overrides, and the training gradient settings of this config."""
        return self.model.config().replace(
            grad={
                "mode": self.grad_mode,
                "stochastic_budget": self.stochastic_budget,
                "jac_reg_weight": self.jac_reg_weight,
            }
        )

    @property
    def effective_train_nfe(self) -> int:
        return self.train_max_nfe if self.train_max_nfe is not None else self.model_config().solver.max_nfe

    @property
    def effective_data_threads(self) -> int:
        """``data_threads``, or (None, 0) one per reserved CPU of the worker, at least 1 and at most
        ``AUTO_DATA_THREADS_MAX``: more threads contend with the training thread for the GIL (BENCHMARKS.md 14)."""
        return self.data_threads or min(AUTO_DATA_THREADS_MAX, max(1, round(self.cpus_per_worker)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``model`` as written in params.yaml); :meth:`from_dict` reads it back."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> TrainConfig:
        """Build from a (partial) mapping, ``model`` included; unknown keys or bad values raise ``ParamsError``."""
        data = dict(data)
        for key in _REMOVED_KEYS:
            if data.get(key) is not None:
                raise ParamsError(
                    f"train.{key} was removed: fault injection is test-only (pipelines/train/faults.py)"
                    if source is None
                    else f"{source}: train.{key} was removed: fault injection is test-only (pipelines/train/faults.py)"
                )
            data.pop(key, None)
        return parse_section(cls, data, "train", source)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> TrainConfig:
        """Copy with ``key=value`` overrides applied (see the module docstring for the key syntax)."""
        data = self.to_dict()
        pairs = overrides.items() if isinstance(overrides, dict) else (_split_override(o) for o in overrides)
        for key, value in pairs:
            _set_dotted(data, key, value)
        return TrainConfig.from_dict(data)

    def resolved(self, root: str | os.PathLike[str]) -> TrainConfig:
        """Copy with relative paths and a relative ``sqlite:///`` URI made absolute against ``root``.

        ``$MLFLOW_TRACKING_URI``, when set, overrides ``mlflow_uri`` (e.g. a remote ``mlflow server``).
        """
        root = Path(root).resolve()
        return dataclasses.replace(
            self,
            data_dir=_abs(self.data_dir, root),
            storage_path=_abs(self.storage_path, root),
            mlflow_artifacts=_abs(self.mlflow_artifacts, root),
            mlflow_uri=resolve_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or self.mlflow_uri, root),
        )


def _check_resources(resources: object) -> None:
    """``train.resources_per_worker``: a mapping of custom resource names (not CPU/GPU) to numbers >= 0."""
    if not isinstance(resources, dict):
        raise ValueError(f"train.resources_per_worker must be a mapping name -> amount, got {resources!r}")
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"train.resources_per_worker: resource names must be non-empty strings, got {name!r}")
        if name in ("CPU", "GPU"):
            raise ValueError(f"train.resources_per_worker.{name}: set cpus_per_worker / gpus_per_worker instead")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount >= 0:
            raise ValueError(f"train.resources_per_worker.{name}: expected a number >= 0, got {amount!r}")


def resolve_tracking_uri(uri: str, root: str | os.PathLike[str]) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////<root>/rel.db``; absolute sqlite and remote URIs are unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path(root) / uri[len(prefix) :]).resolve())
    return uri


def _abs(path: str, root: Path) -> str:
    if "://" in path:  # remote storage (s3://, gs://, ...) stays as it is
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"override {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if parts[0] == "train":  # "train.lr" and "lr" both name a train field; "model.x" the model section
        parts = parts[1:]
    if not parts:
        raise ValueError(f"override {key!r}: no field named")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value
