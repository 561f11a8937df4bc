"""The one typed configuration layer: :func:`load_params` reads a params file (``params.yaml``, a recipe, a study's
params) into :class:`Params`, one typed attribute per section; every stage, the CLI and the service read their
settings through it.

Sections (classes, defaults in code only; ``params.yaml`` documents them):

- ``data`` (prepare): :class:`DataSettings`; ``preprocess``: :class:`PreprocessSettings`;
- ``model``: :class:`ModelSection` (a preset plus :class:`ldeq_core.config.ModelConfig` field overrides);
- ``train``: :class:`ldeq_shared.train_settings.TrainConfig` (its ``model`` is the ``model`` section);
- ``sweep``: :class:`SweepConfig`;
- ``evaluate``: :class:`ldeq_shared.eval_settings.EvalSettings`;
- ``serve``: :class:`ldeq_shared.serve_settings.ServeSettings` (pydantic).

Every value is checked against its field's type and every section forbids unknown keys; errors are
:class:`ParamsError` (a ``ValueError``) naming the file and the dotted key, e.g.
``params.yaml: data.w300.n_videos: expected an integer, got 'x'``. Numbers given for float fields are kept as
given (``30`` stays an int, so settings fingerprints do not change); strings for float fields are parsed (YAML 1.1
reads ``1e-3`` as a string). Relative paths are relative to :attr:`Params.base_dir`, the params file's folder.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

import yaml

from ldeq_core.config import ModelConfig, get_preset
from ldeq_core.defaults import BOX_EXPAND, JPEG_QUALITY

if TYPE_CHECKING:
    from ldeq_shared.eval_settings import EvalSettings
    from ldeq_shared.serve_settings import ServeSettings
    from ldeq_shared.train_settings import TrainConfig

PathLike = str | os.PathLike[str]
T = TypeVar("T")
SECTIONS = ("data", "preprocess", "model", "train", "sweep", "evaluate", "serve")
DATA_SOURCES = ("synthetic", "300w", "wflw", "wflw_v")
IMAGE_CODECS = ("png", "jpeg")  # crop encodings of the shards (pipelines/shards.py)


class ParamsError(ValueError):
    """A params file (or mapping) that does not fit the schema; the message names the file and the dotted key."""


def _where(source: str | None, key: str) -> str:
    return f"{source}: {key}" if source else key


def _error(source: str | None, key: str, message: str) -> ParamsError:
    return ParamsError(f"{_where(source, key)}: {message}")


# ------------------------------------------------------------------------------------------------ the parser
@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if tp is Any:
        return "any value"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _shape_matches(tp: Any, value: Any) -> bool:
    origin = get_origin(tp)
    if isinstance(value, Mapping):
        return origin is dict or tp is dict or dataclasses.is_dataclass(tp) or hasattr(tp, "from_params")
    return isinstance(value, list | tuple) and (origin in (tuple, list) or tp in (tuple, list))


def convert(tp: Any, value: Any, key: str, source: str | None = None) -> Any:
    """``value`` checked against (and converted to) the type ``tp``; ``ParamsError`` naming ``source`` and ``key``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise _error(source, key, f"expected {_describe(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors: list[tuple[Any, ParamsError]] = []
        for a in options:
            try:
                return convert(a, value, key, source)
            except ParamsError as exc:
                errors.append((a, exc))
        if len(options) == 1:
            raise errors[0][1]
        for a, err in errors:  # a mapping or list that failed inside its container type: that error is the precise one
            if _shape_matches(a, value):
                raise err
        raise _error(source, key, f"expected {_describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _error(source, key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _error(source, key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value  # ints stay ints: the fingerprints of existing settings do not change
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-3 as a string
            except ValueError:
                pass
        raise _error(source, key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _error(source, key, f"expected a string, got {value!r}")
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, list | tuple):
            raise _error(source, key, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _error(source, key, f"expected a list of {len(args)} values, got {value!r}")
            return tuple(convert(a, v, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _error(source, key, f"expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            convert(kt, k, f"{key}.{k}", source)
            out[k] = convert(vt, v, f"{key}.{k}", source)
        return out
    if isinstance(tp, type) and hasattr(tp, "from_params"):
        return tp.from_params(value, key, source)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return parse_section(tp, value, key, source)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _error(source, key, f"expected {_describe(tp)}, got {value!r}")


def parse_section(cls: type[T], raw: Any, key: str, source: str | None = None) -> T:
    """The dataclass ``cls`` from the mapping ``raw`` (None: all defaults); unknown keys, wrongly typed values and
    values its ``__post_init__`` rejects raise ``ParamsError`` naming ``source`` and the dotted key."""
    if isinstance(raw, cls):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _error(source, key, f"expected a mapping, got {raw!r}")
    names = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = [k for k in raw if k not in names]
    if unknown:
        keys = ", ".join(f"{key}.{k}" for k in unknown)
        raise _error(source, keys, f"unknown key{'s' if len(unknown) > 1 else ''} (known: {', '.join(names)})")
    hints = _hints(typing.cast(Any, cls))
    kwargs = {name: convert(hints[name], value, f"{key}.{name}", source) for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except ParamsError as exc:
        if source and not str(exc).startswith(f"{source}: "):
            raise ParamsError(f"{source}: {exc}") from None
        raise
    except (TypeError, ValueError) as exc:  # a range check of __post_init__: its message names the key, else add it
        message = str(exc) if key in str(exc) else f"{key}: {exc}"
        raise ParamsError(f"{source}: {message}" if source else message) from None


def plain(value: Any) -> Any:
    """Dataclasses, tuples and mappings as plain dicts and lists (JSON/YAML-able, as params.yaml writes them)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return plain(value.to_dict())
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class AnimParams:
    """Animation of the 300-W animated-stills videos (``data.w300.anim`` overrides these; pipelines/animated_stills):
    amplitudes are maxima of the smooth signals (0 disables an effect)."""

    face_frac: float = 0.4  # landmark-box side at scale 1, as a fraction of min(frame width, height)
    rot_deg: float = 12.0  # rotation amplitude, degrees
    log_scale: float = 0.12  # log-scale amplitude
    trans_frac: float = 0.12  # translation amplitude as a fraction of the frame side (kept inside the frame)
    perspective: float = 0.05  # projective coefficients per face size
    freq_hz: tuple[float, float] = (0.1, 0.8)  # frequency band of the motion sinusoids
    n_sines: int = 3
    brightness: float = 15.0  # additive, 0..255 units
    contrast: float = 0.12  # relative
    gamma: float = 0.15  # log gamma
    white_balance: float = 0.03  # per-channel relative gain
    noise_std: float = 2.5  # Gaussian sensor noise, 0..255 units
    blur_prob: float = 0.15  # per-frame probability of motion blur
    blur_len: tuple[float, float] = (3.0, 15.0)  # kernel length range (px), set by the face speed
    occluder_prob: float = 0.5  # per-video probability of a passing occluder
    occluder_size: tuple[float, float] = (0.25, 0.5)  # radius range as a fraction of the face size
    box_expand: float = 0.05  # landmark box grown by this fraction of its size on each side
    box_jitter: float = 0.0  # per-frame box centre/scale noise (std, fraction of box size)

    def __post_init__(self) -> None:
        amps = (
            "face_frac",
            "rot_deg",
            "log_scale",
            "trans_frac",
            "perspective",
            "brightness",
            "contrast",
            "gamma",
            "white_balance",
            "noise_std",
            "box_expand",
            "box_jitter",
        )
        bad = [k for k in amps if not getattr(self, k) >= 0]
        bad += [k for k in ("blur_prob", "occluder_prob") if not 0 <= getattr(self, k) <= 1]
        if not 0 < self.freq_hz[0] <= self.freq_hz[1]:
            bad.append("freq_hz")
        if self.n_sines < 1 or self.perspective > 0.3 or not 0 < self.face_frac <= 1:
            bad.append("n_sines >= 1, perspective <= 0.3, 0 < face_frac <= 1")
        if not 1 <= self.blur_len[0] <= self.blur_len[1] or not 0 < self.occluder_size[0] <= self.occluder_size[1]:
            bad.append("blur_len / occluder_size ranges")
        if bad:
            raise ValueError(f"invalid animated-stills parameters: {', '.join(bad)}")


@dataclass(frozen=True)
class SyntheticData:
    """``data.synthetic``: procedural faces (WFLW-layout stills + WFLW-V-layout videos)."""

    n_train: int = 2000
    n_test: int = 300
    n_videos: int = 12  # half easy, half hard
    n_frames: int = 90
    image_format: Literal["jpg", "png"] = "jpg"
    workers: int | None = None  # generator processes (None: all cores); does not change the data
    val_fraction: float = 0.1  # train stills moved to split val (by a hash of the name)

    def __post_init__(self) -> None:
        for key in ("n_train", "n_test", "n_videos", "n_frames"):
            if getattr(self, key) < 0:
                raise ValueError(f"data.synthetic.{key} must be an integer >= 0, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class W300Data:
    """``data.w300``: iBUG 300-W stills (68 points), referenced in place."""

    root: str | None = "../shared/data/300w"
    subsets: tuple[str, ...] | None = ("helen_train", "afw")
    val_fraction: float = 0.2
    val_subsets: tuple[str, ...] = ()
    n_videos: int = 24  # animated-stills videos of the val images (split video_val)
    n_frames: int = 60
    frame_size: tuple[int, int] = (640, 480)
    fps: float = 30.0
    anim: dict[str, Any] | None = None  # AnimParams overrides, e.g. {box_jitter: 0.02, blur_prob: 0.3}

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"data.w300.val_fraction must be in [0, 1], got {self.val_fraction!r}")
        if self.anim is not None:
            parse_section(AnimParams, self.anim, "data.w300.anim")  # keys, types and ranges


@dataclass(frozen=True)
class WflwData:
    """``data.wflw``: precropped WFLW (HIH layout), referenced in place."""

    root: str | None = None
    splits: tuple[str, ...] | None = None  # None: every <split>.txt found
    check_images: bool = True


@dataclass(frozen=True)
class WflwVData:
    """``data.wflw_v``: WFLW-V acquired into ``<out>/wflw_v`` (pipelines/acquire_wflw_v.py)."""

    annotations: str | None = None
    archive: str | None = None
    url_template: str = "https://www.youtube.com/watch?v={id}"
    lists_dir: str | None = None
    split: Literal["easy", "hard", "all"] = "all"
    max_videos: int | None = None
    workers: int = 4
    retries: int = 3


@dataclass(frozen=True)
class DataSettings:
    """The ``data`` section (the prepare stage)."""

    source: Literal["synthetic", "300w", "wflw", "wflw_v"] = "synthetic"
    out: str = "data/raw"
    seed: int = 0
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    w300: W300Data = field(default_factory=W300Data)
    wflw: WflwData = field(default_factory=WflwData)
    wflw_v: WflwVData = field(default_factory=WflwVData)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain data (what the prepare stage hashes and records)."""
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}


# --------------------------------------------------------------------------------------------- preprocess
@dataclass(frozen=True)
class PreprocessSettings:
    """The ``preprocess`` section (face-crop Parquet shards)."""

    out: str = "data/shards"
    image_codec: Literal["png", "jpeg"] = "jpeg"
    jpeg_quality: int = JPEG_QUALITY  # JPEG quality of the crops (1-100)
    box_expand: float = BOX_EXPAND  # 300-W stills: landmark box side x this = detector-like box (then the crop)
    rows_per_shard: int = 1024
    row_group_size: int = 128
    stills_per_task: int = 64
    num_cpus: int | None = None  # CPUs of the local Ray cluster started when none is running (None: all cores)
    concurrency: int | None = None  # tasks in flight (None: one per cluster CPU)
    object_store_mb: int = 1024  # object store of a local cluster started here
    progress: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"preprocess.jpeg_quality must be an integer in 1..100, got {self.jpeg_quality!r}")
        for key in ("rows_per_shard", "row_group_size", "stills_per_task"):
            if getattr(self, key) < 1:
                raise ValueError(f"preprocess.{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not self.box_expand > 0:
            raise ValueError(f"preprocess.box_expand must be > 0, got {self.box_expand!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}


# -------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelSection:
    """The ``model`` section: a preset (``tiny`` | ``small`` | ``paper``) plus ModelConfig field overrides
    (``solver`` / ``grad`` as nested mappings). :meth:`config` is the resulting ``ModelConfig``."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config()  # the preset exists and the overrides are ModelConfig fields of the right kind

    def config(self, source: str | None = None) -> ModelConfig:
        """The preset with the overrides applied (checked field by field: errors name ``model.<key>``)."""
        merged = _deep_merge(get_preset(self.preset).to_dict(), self.overrides)
        return parse_section(ModelConfig, merged, "model", source)

    def to_dict(self) -> dict[str, Any]:
        """As written in params.yaml: ``{"preset": ..., **overrides}``."""
        return {"preset": self.preset, **self.overrides}

    @classmethod
    def from_params(cls, raw: Any, key: str = "model", source: str | None = None) -> ModelSection:
        if isinstance(raw, cls):
            return raw
        if raw is None:
            return cls()
        key = "model" if key.endswith(".model") else key  # TrainConfig's model field is the model section
        if not isinstance(raw, Mapping):
            raise _error(source, key, f"expected a mapping, got {raw!r}")
        if "preset" not in raw:
            raise _error(source, f"{key}.preset", "missing: a model section needs a preset (tiny | small | paper)")
        preset = convert(str, raw["preset"], f"{key}.preset", source)
        section = cls.__new__(cls)  # checked with the file named, then built (its __post_init__ checks again)
        object.__setattr__(section, "preset", preset)
        object.__setattr__(section, "overrides", {k: v for k, v in raw.items() if k != "preset"})
        try:
            section.config(source)
        except ParamsError:
            raise
        except ValueError as exc:  # an unknown preset
            raise _error(source, f"{key}.preset", str(exc)) from None
        return cls(section.preset, section.overrides)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


# -------------------------------------------------------------------------------------------------- sweep
SWEEP_DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class SweepConfig:
    """The ``sweep`` section (pipelines/train/sweep.py): Ray Tune + ASHA over the train settings."""

    name: str = "ldeq-sweep"
    metric: str = "val_nme"
    mode: Literal["min", "max"] = "min"
    num_samples: int = 1
    max_concurrent_trials: int = 1
    grace_period: int = 1  # epochs before ASHA may stop a trial
    reduction_factor: float = 2.0
    out_dir: str = "outputs/sweeps"
    overrides: dict[str, Any] = field(default_factory=dict)  # train settings applied to every trial
    space: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: {"lr": {"grid": [1e-3, 3e-3]}})

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"sweep.mode must be min or max, got {self.mode!r}")
        if self.num_samples < 1 or self.max_concurrent_trials < 1 or self.grace_period < 1:
            raise ValueError("sweep: num_samples, max_concurrent_trials and grace_period must be >= 1")
        if not self.space:
            raise ValueError("sweep.space: empty search space")
        for key, spec in self.space.items():
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SWEEP_DISTRIBUTIONS:
                raise ValueError(f"sweep.space.{key}: expected one of {SWEEP_DISTRIBUTIONS} -> values, got {spec!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> SweepConfig:
        return parse_section(cls, data, "sweep", source)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}


# ------------------------------------------------------------------------------------------------- Params
@dataclass(frozen=True)
class Params:
    """A parsed params file: one typed attribute per section (absent sections take the code defaults)."""

    data: DataSettings
    preprocess: PreprocessSettings
    model: ModelSection
    train: TrainConfig
    sweep: SweepConfig
    evaluate: EvalSettings
    serve: ServeSettings
    source: str = "params.yaml"  # the file (or a label) that errors name
    base_dir: Path | None = None  # relative paths resolve against this (the params file's folder); None: the cwd
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the file's mapping, as read

    @classmethod
    def from_mapping(
        cls, raw: Mapping[str, Any] | None, source: str = "params.yaml", base_dir: PathLike | None = None
    ) -> Params:
        """Parse a params mapping (e.g. ``yaml.safe_load`` of params.yaml); ``ParamsError`` naming ``source``."""
        from ldeq_shared.eval_settings import EvalSettings
        from ldeq_shared.serve_settings import validate_serve
        from ldeq_shared.train_settings import TrainConfig

        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise ParamsError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
        unknown = [k for k in raw if k not in SECTIONS]
        if unknown:
            raise _error(source, ", ".join(map(str, unknown)), f"unknown section (known: {', '.join(SECTIONS)})")
        for name in SECTIONS:
            if raw.get(name) is not None and not isinstance(raw[name], Mapping):
                raise _error(source, name, f"expected a mapping, got {raw[name]!r}")
        model = ModelSection.from_params(raw.get("model"), "model", source)
        train = TrainConfig.from_dict({**(raw.get("train") or {}), "model": model}, source)
        return cls(
            data=parse_section(DataSettings, raw.get("data"), "data", source),
            preprocess=parse_section(PreprocessSettings, raw.get("preprocess"), "preprocess", source),
            model=model,
            train=train,
            sweep=parse_section(SweepConfig, raw.get("sweep"), "sweep", source),
            evaluate=parse_section(EvalSettings, raw.get("evaluate"), "evaluate", source),
            serve=validate_serve(raw.get("serve") or {}, source),
            source=source,
            base_dir=Path(base_dir) if base_dir is not None else None,
            raw=dict(raw),
        )

    def section(self, name: str) -> Mapping[str, Any]:
        """The raw mapping of section ``name`` as written (empty when absent)."""
        return dict(self.raw.get(name) or {})

    def resolve(self, path: PathLike) -> Path:
        """``path`` (``~`` expanded) made absolute against :attr:`base_dir` (the cwd when None) when relative."""
        p = Path(os.path.expanduser(os.fspath(path)))
        return p if p.is_absolute() else Path(self.base_dir if self.base_dir is not None else Path.cwd()) / p

    @staticmethod
    def defaults() -> Params:
        """The code defaults of every section (what an empty params file gives)."""
        return Params.from_mapping({}, "defaults")


def as_params(params: Params | Mapping[str, Any] | None, source: str = "params.yaml") -> Params:
    """``params`` if already parsed, else :meth:`Params.from_mapping` of it."""
    return params if isinstance(params, Params) else Params.from_mapping(params, source)


def load_params(path: PathLike) -> Params:
    """Read and check the params file ``path``; relative paths in it resolve against its folder.

    ``ParamsError`` (a ``ValueError``) naming the file: missing file, invalid YAML, unknown section or key,
    wrongly typed or out-of-range value.
    """
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{p}: params file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{p}: not valid YAML ({err})") from None
    return Params.from_mapping(raw, os.fspath(path), p.resolve().parent)
