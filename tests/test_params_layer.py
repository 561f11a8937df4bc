"""The one typed configuration layer (ldeq_shared/params.py): every params file of the repository loads, params.yaml
agrees with the code defaults (except an explicit list of intentional overrides), and errors name the file and the
dotted key."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from ldeq_core.config import get_preset
from ldeq_core.defaults import BOX_EXPAND, BUDGET_NFE, EXTRA_SCALE, JPEG_QUALITY, RESET_IOU
from ldeq_shared.params import Params, ParamsError, load_params, plain

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILES = sorted(
    [REPO / "params.yaml", *(REPO / "recipes").glob("*.yaml"), *(REPO / "studies").glob("**/params.yaml")]
)

# Keys whose params.yaml value deliberately differs from the code default (dotted key -> why). A key listed here
# whose value comes to agree with the code fails the test too (drop it from the list then).
INTENTIONAL_OVERRIDES = {
    # the project runs on a CPU by default: 64-px crops; the presets carry the paper's 256 / 64
    "model.image_size": "CPU-sized crops (the presets: 256)",
    "model.heatmap_size": "image_size / 4 at 64 px (the presets: 64)",
    # the project's demo sweep: a 2x2 grid of short runs; the code default is a one-parameter grid
    "sweep.grace_period": "ASHA grace of the demo sweep",
    "sweep.overrides.epochs": "short trials in the demo sweep",
    "sweep.space.train_max_nfe": "second axis of the demo sweep",
    # studies/rwr_real_faces: the warped (crop-invariant) RwR is the project's primary method; off in code so that
    # a params file that does not ask for it keeps the unwarped method set
    "evaluate.methods.warp": "warped RwR methods evaluated in the project",
    "evaluate.methods.primary_warp": "the warped RwR is the project's primary method",
    # the service: the project's trained checkpoint, the filter tuned in studies/rwr_real_faces and the jobs folder;
    # the code defaults configure no model, no default filter and no server-side jobs (safe for other deployments)
    "serve.model.checkpoint": "the project's checkpoint",
    "serve.rwr.filter": "filter chosen on the study's tuning videos",
    "serve.rwr.filter_params.q": "its tuned process noise",
    "serve.rwr.filter_params.r": "its tuned measurement noise",
    "serve.jobs.allowed_root": "POST /v1/jobs enabled on the project's data folder",
}
_MISSING = object()


def code_defaults(model_preset: str) -> dict[str, Any]:
    """Every section's code defaults as plain data (the model section: the preset's ModelConfig)."""
    d = Params.defaults()
    return {
        "data": d.data.to_dict(),
        "preprocess": d.preprocess.to_dict(),
        "model": {"preset": d.model.preset, **get_preset(model_preset).to_dict()},
        "train": {k: v for k, v in d.train.to_dict().items() if k != "model"},
        "sweep": d.sweep.to_dict(),
        "evaluate": plain(d.evaluate),
        "serve": d.serve.model_dump(mode="json"),
    }


def differences(given: Any, default: Any, path: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (params value, code default) for every leaf of ``given`` that differs from (or has no) default."""
    if isinstance(given, dict) and given and isinstance(default, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key, value in given.items():
            out.update(differences(value, default.get(key, _MISSING), (*path, str(key))))
        return out
    if default is _MISSING or plain(given) != plain(default):
        return {".".join(path): (given, None if default is _MISSING else default)}
    return {}


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_params_file_loads(path: Path) -> None:
    params = load_params(path)
    assert params.base_dir == path.resolve().parent
    assert params.train.model is params.model  # the train section trains the model section
    params.model.config()
    assert params.resolve("x/y") == path.resolve().parent / "x" / "y"


def test_params_yaml_agrees_with_the_code_defaults() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    diff = differences(raw, code_defaults(raw["model"]["preset"]))
    unexpected = {k: v for k, v in diff.items() if k not in INTENTIONAL_OVERRIDES}
    assert not unexpected, (
        "params.yaml and the code defaults disagree (params.yaml value, code default); change one of them, or add "
        f"the key to INTENTIONAL_OVERRIDES with the reason: {unexpected}"
    )
    stale = sorted(set(INTENTIONAL_OVERRIDES) - set(diff))
    assert not stale, f"INTENTIONAL_OVERRIDES entries that now agree with the code (remove them): {stale}"


# Parameter / field names whose default is a shared value of ldeq_core.defaults, and that value.
SHARED_DEFAULTS: dict[str, float] = {
    "extra_scale": EXTRA_SCALE,
    "reset_iou": RESET_IOU,
    "budget_nfe": BUDGET_NFE,
    "nfe": BUDGET_NFE,
    "box_expand": BOX_EXPAND,
    "track_expand": BOX_EXPAND,
    "quality": JPEG_QUALITY,
    "jpeg_quality": JPEG_QUALITY,
}
CODE_DIRS = ("ldeq_core", "ldeq_shared", "ldeq_cli", "pipelines", "serve", "scripts")


def _literal(node: ast.expr | None) -> float | None:
    """The number a default expression spells out: ``1.2``, ``Field(1.2, ...)``, ``typer.Option(2, ...)``."""
    if isinstance(node, ast.Call):
        node = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "default"), None)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    return None


def _defaults(tree: ast.AST) -> list[tuple[int, str, ast.expr | None]]:
    """(line, name, default) of every function parameter and class-level annotated field."""
    out: list[tuple[int, str, ast.expr | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            positional = [*a.posonlyargs, *a.args]
            pairs = [*zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True)]
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
            out += [(arg.lineno, arg.arg, d) for arg, d in pairs]
        elif isinstance(node, ast.ClassDef):
            out += [
                (s.lineno, s.target.id, s.value)
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            ]
    return out


def test_shared_defaults_are_not_repeated_as_literals() -> None:
    """Defaults repeated across layers reference ldeq_core.defaults: no parameter or field of the code spells one
    of those values out as a number (a different value of the same name, e.g. a per-side box fraction, is fine)."""
    copies = [
        f"{path.relative_to(REPO)}:{line}: {name} = {value!r}"
        for folder in CODE_DIRS
        for path in sorted((REPO / folder).rglob("*.py"))
        if path.name != "defaults.py"
        for line, name, node in _defaults(ast.parse(path.read_text(encoding="utf-8")))
        if name in SHARED_DEFAULTS and (value := _literal(node)) is not None and value == SHARED_DEFAULTS[name]
    ]
    assert not copies, f"use the ldeq_core.defaults constant instead of the literal: {copies}"
    d = Params.defaults()
    assert (d.evaluate.methods.extra_scale, d.serve.rwr.reset_iou) == (EXTRA_SCALE, RESET_IOU)  # the typed layer


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  w300:\n    n_vidoes: 3\n", "data.w300.n_vidoes: unknown key"),
        ("data:\n  synthetic: {n_train: 5, n_tset: 2}\n", "data.synthetic.n_tset: unknown key"),
        ("preprocess:\n  rows_per_shards: 3\n", "preprocess.rows_per_shards: unknown key"),
        ("model:\n  preset: tiny\n  widht: 3\n", "model.widht: unknown key"),
        ("model:\n  preset: tiny\n  solver: {max_nef: 3}\n", "model.solver.max_nef: unknown key"),
        ("train:\n  epochz: 3\n", "train.epochz: unknown key"),
        ("train:\n  augment: {flip_prop: 0.5}\n", "train.augment.flip_prop: unknown key"),
        ("sweep:\n  spaces: {}\n", "sweep.spaces: unknown key"),
        ("evaluate:\n  methods: {budget: [1]}\n", "evaluate.methods.budget: unknown key"),
        ("evaluate:\n  inference: {precison: fp16}\n", "evaluate.inference.precison: unknown key"),
        ("serve:\n  batch: {max_batch: 4}\n", "serve.batch.max_batch: unknown key"),
        ("trian:\n  epochs: 3\n", "trian: unknown section"),
    ],
)
def test_unknown_keys_name_the_file_and_the_dotted_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    assert message in str(info.value), info.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  w300:\n    n_videos: x\n", "data.w300.n_videos: expected an integer, got 'x'"),
        ("data:\n  source: celeba\n", "data.source: expected one of"),
        ("data:\n  w300:\n    frame_size: [640]\n", "data.w300.frame_size: expected a list of 2 values"),
        ("data:\n  wflw:\n    check_images: maybe\n", "data.wflw.check_images: expected true or false, got 'maybe'"),
        ("preprocess:\n  jpeg_quality: 90.5\n", "preprocess.jpeg_quality: expected an integer, got 90.5"),
        ("model:\n  preset: tiny\n  solver: {tol: small}\n", "model.solver.tol: expected a number, got 'small'"),
        ("train:\n  lr: fast\n", "train.lr: expected a number, got 'fast'"),
        ("train:\n  loss: l3\n", "train.loss: expected one of 'l1', 'wing', got 'l3'"),
        ("train:\n  augment: {enabled: 1}\n", "train.augment.enabled: expected true or false, got 1"),
        ("sweep:\n  num_samples: two\n", "sweep.num_samples: expected an integer, got 'two'"),
        ("evaluate:\n  methods: {budgets: [1, two]}\n", "evaluate.methods.budgets[1]: expected an integer"),
        ("evaluate:\n  actors: [2]\n", "evaluate.actors: expected an integer, got [2]"),
        ("serve:\n  batch: {max_batch_size: many}\n", "serve.batch.max_batch_size: "),
        ("data: [1, 2]\n", "data: expected a mapping"),
    ],
)
def test_wrongly_typed_values_name_the_file_and_the_dotted_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: "), info.value
    assert message in str(info.value), info.value


def test_range_errors_and_missing_files_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 0\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.epochs must be >= 1"):
        load_params(path)
    with pytest.raises(ParamsError, match=r"nope\.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
    path = write(tmp_path, "- 1\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(path)


def test_values_keep_their_meaning(tmp_path: Path) -> None:
    """Ints given for float fields stay ints (settings fingerprints do not move); YAML 1.1 strings become floats."""
    path = write(tmp_path, "train:\n  lr: 1e-3\n  worker_cache_max_mb: 2048\nevaluate:\n  model_alias: 3\n")
    params = load_params(path)
    assert params.train.lr == 0.001 and isinstance(params.train.lr, float)
    assert params.train.worker_cache_max_mb == 2048 and isinstance(params.train.worker_cache_max_mb, int)
    assert params.evaluate.model_alias == 3
    assert Params.from_mapping({}).train == Params.defaults().train
