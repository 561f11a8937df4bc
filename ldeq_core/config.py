"""Typed configuration of the Landmark DEQ: model widths, solver settings, gradient mode, and named presets.

Budgets are counted in cell evaluations (NFE) everywhere except ``SolverConfig.upstream_max_iters``, which keeps
the upstream meaning (solver loop iterations, spec §2) for the ``upstream`` compatibility mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

SolverMethod = Literal["fpi", "anderson"]
SOLVER_METHODS: tuple[str, ...] = get_args(SolverMethod)  # ldeq_core.solvers.SOLVERS has one entry per name
StopMode = Literal["abs", "rel"]
GradMode = Literal["implicit", "one_step", "unrolled"]
NormKind = Literal["gn", "bn", "none"]
HeatmapNormKind = Literal["softargmax", "linear", "none"]


@dataclass(frozen=True)
class SolverConfig:
    """Forward fixed-point solver settings (spec §2)."""

    method: SolverMethod = "anderson"
    max_nfe: int = 12
    tol: float = 5e-3
    stop_mode: StopMode = "rel"
    anderson_m: int = 6
    anderson_lam: float = 1e-4
    anderson_beta: float = 1.0
    # Upstream compatibility (spec §2.1-2.2, §2.5): batch-mean stop, Anderson returns the lowest-residual
    # pre-image, and the DEQ layer applies one extra f unless ``upstream_one_less_step``.
    upstream: bool = False
    upstream_max_iters: int = 10
    upstream_one_less_step: bool = False

    def __post_init__(self) -> None:
        if self.method not in SOLVER_METHODS:
            raise ValueError(f"solver.method must be one of {list(SOLVER_METHODS)}, got {self.method!r}")
        if self.stop_mode not in ("abs", "rel"):
            raise ValueError(f"solver.stop_mode must be 'abs' or 'rel', got {self.stop_mode!r}")
        if self.max_nfe < 1 or self.upstream_max_iters < 1:
            raise ValueError("solver budgets must be >= 1")
        if self.tol < 0:
            raise ValueError(f"solver.tol must be >= 0, got {self.tol}")
        if self.anderson_m < 1:
            raise ValueError(f"solver.anderson_m must be >= 1, got {self.anderson_m}")


@dataclass(frozen=True)
class GradConfig:
    """How gradients reach the parameters through the equilibrium (spec §2.5)."""

    mode: GradMode = "implicit"
    # Adjoint solve y = J^T y + g for implicit mode.
    adjoint_method: SolverMethod = "fpi"
    adjoint_max_nfe: int = 12
    adjoint_tol: float = 1e-4
    # Phantom gradient: k damped steps z <- tau f(z) + (1 - tau) z tracked by autograd (k=1, tau=1: one-step/JFB).
    phantom_steps: int = 1
    phantom_tau: float = 1.0
    # Stochastic forward budget during training: NFE ~ Uniform{1..max_nfe} per call.
    stochastic_budget: bool = False
    # Hutchinson estimate of ||J||_F^2 / numel, added by the trainer with this weight (0 disables it).
    jac_reg_weight: float = 0.0
    jac_reg_samples: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("implicit", "one_step", "unrolled"):
            raise ValueError(f"grad.mode must be implicit, one_step or unrolled, got {self.mode!r}")
        if self.phantom_steps < 1 or not 0 < self.phantom_tau <= 1:
            raise ValueError("grad.phantom_steps must be >= 1 and 0 < grad.phantom_tau <= 1")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the Landmark DEQ (spec §1)."""

    n_landmarks: int = 98
    image_size: int = 256
    heatmap_size: int = 64
    injection_width: int = 224
    cell_base_width: int = 224
    cell_width_increment: int = 24
    extra_latent_width: int = 0
    cell_norm: NormKind = "gn"
    gn_groups: int = 1
    stem_norm: NormKind = "bn"
    heatmap_norm: HeatmapNormKind = "softargmax"
    beta: float = 1.0
    learn_beta: bool = False
    solver: SolverConfig = field(default_factory=SolverConfig)
    grad: GradConfig = field(default_factory=GradConfig)

    def __post_init__(self) -> None:
        if self.n_landmarks < 2:
            raise ValueError(f"n_landmarks must be >= 2, got {self.n_landmarks}")
        if self.image_size % self.heatmap_size != 0:
            raise ValueError("image_size must be a multiple of heatmap_size")
        if self.image_size // self.heatmap_size != 4:
            raise ValueError("the stem downsamples by exactly 4: heatmap_size must be image_size / 4")
        if self.heatmap_size % 16 != 0:
            raise ValueError("heatmap_size must be divisible by 16 (depth-4 hourglass)")
        if self.injection_width % 4 != 0:
            raise ValueError("injection_width must be divisible by 4 (stem widths W/4, W/2, W)")
        if self.cell_norm == "gn" and self.cell_base_width % self.gn_groups != 0:
            raise ValueError("cell_base_width must be divisible by gn_groups")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")

    @property
    def z_width(self) -> int:
        """Channels of the equilibrium state: one heatmap per landmark plus optional extra latents."""
        return self.n_landmarks + self.extra_latent_width

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with top-level fields replaced; ``solver``/``grad`` accept dicts of field overrides."""
        for key in ("solver", "grad"):
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a (possibly partial) nested dict; unknown keys raise ``ValueError``."""
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        solver = _sub(SolverConfig, data.pop("solver", {}), "solver")
        grad = _sub(GradConfig, data.pop("grad", {}), "grad")
        return cls(solver=solver, grad=grad, **data)


def _sub(kind: type, data: dict[str, Any] | Any, name: str) -> Any:
    if isinstance(data, kind):
        return data
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {name} config keys: {sorted(unknown)}")
    return kind(**data)


PRESETS: dict[str, ModelConfig] = {
    # The upstream demo configuration (spec §1.9): 16.53 M parameters, ~12.4 GMAC per cell evaluation.
    "paper": ModelConfig(),
    # Fast on a CPU, for tests, the demo and the embedded default dataset.
    "tiny": ModelConfig(
        injection_width=32,
        cell_base_width=32,
        cell_width_increment=8,
        solver=SolverConfig(method="anderson", max_nfe=8, tol=1e-3),
        grad=GradConfig(adjoint_max_nfe=8),
    ),
    # Real time on a laptop CPU at 128 px (the zoo's CPU model, recipes/ldeq68-small-w300-128px.yaml): 1.15 M
    # parameters, 0.164 GMAC per cell evaluation at 128 px; 1.5x slower to train than tiny (42 vs 55 images/s).
    "small": ModelConfig(
        injection_width=48,
        cell_base_width=48,
        cell_width_increment=12,
        solver=SolverConfig(method="anderson", max_nfe=8, tol=1e-3),
        grad=GradConfig(adjoint_max_nfe=8),
    ),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """Named preset (``paper``, ``tiny``, ``small``) with optional field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
