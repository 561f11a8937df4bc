"""The ``headline`` stage: the few numbers that ``dvc metrics show`` / ``dvc metrics diff`` / ``dvc exp show`` print.

``metrics/headline.json`` is derived from the detailed files, which stay ordinary stage outputs:
``metrics/train.json`` (train stage) and ``metrics/eval.json`` (evaluate stage, every split x method x
normaliser). It holds at most :data:`MAX_NUMBERS` numbers, copied (percent where named ``_pct``) and rounded to 6
significant digits:

- ``val.nme_pct`` / ``val.fr_pct`` / ``val.auc``: the best validation epoch (inter-ocular NME and FR@0.1 in
  percent, AUC@0.1 as a fraction);
- ``still.nme_pct`` / ``still.fr_pct`` / ``still.auc``: the still test split ``test`` (else the first one);
- ``video_nme.<method>`` (percent, inter-ocular) and ``video_nmf.<method>`` (upstream NMJ convention): overall
  test-video per-video means of at most :data:`MAX_METHODS` methods (:func:`headline_methods`);
- ``rwr_vs_per_frame.{nme,nmf}_pct`` and ``rwr_vs_best_filter.{nme,nmf}_pct``: relative change (%) of the
  primary RwR method against per-frame inference and against the best tuned filter, overall;
- ``throughput.train_images_per_s`` and ``throughput.eval_frames_per_s``;
- ``methods.rwr`` / ``methods.best_filter``: which methods the comparisons used (strings).

A missing value (e.g. no still split, no test video) is left out. Run as ``python -m pipelines.headline``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ldeq_core.fileio import write_text_atomic

TRAIN_FILE = "metrics/train.json"
EVAL_FILE = "metrics/eval.json"
HEADLINE_FILE = "metrics/headline.json"
MAX_METHODS = 10
# 3 val + 3 still + 2 per method + 4 comparisons + 2 throughput; with serve_smoke.json's 8 values (the other file
# under `metrics:`) `dvc metrics show` stays within 40 numbers
MAX_NUMBERS = 12 + 2 * MAX_METHODS
PER_FRAME = "per_frame"


def _round(v: Any) -> float | None:
    """A float rounded to 6 significant digits; None for a missing or non-finite value."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(f"{float(v):.6g}")


def _pct(fraction: Any) -> float | None:
    """A fraction as a rounded percentage; None when missing."""
    return None if _round(fraction) is None else _round(100.0 * fraction)


def _family(method: str) -> bool:
    """Whether an ``rwr_nfe*`` tracker (or a filter on one) is a state-warped variant."""
    return method.split("+", 1)[0].endswith("_warp")


def headline_methods(
    methods: Sequence[str], rwr: str | None, best_filter: str | None, limit: int = MAX_METHODS
) -> list[str]:
    """The methods whose overall NME and NMF the headline shows, in ``methods`` order.

    Per-frame inference, the primary RwR method and the best filter always (when present); then the other
    methods, except the ``rwr_nfe*`` variants of the other family than the primary's (warped or not); at most
    ``limit``, the later ones dropped first.
    """
    first = [m for m in dict.fromkeys((PER_FRAME, rwr, best_filter)) if m and m in methods]
    warp = _family(rwr) if rwr else False
    rest = [
        m for m in methods if m not in first and not (m.split("+", 1)[0].startswith("rwr_nfe") and _family(m) != warp)
    ]
    keep = set((first + rest)[:limit])
    return [m for m in methods if m in keep]


def _eval_methods(ev: Mapping[str, Any]) -> list[str]:
    """Methods with overall video metrics in ``eval.json``, in its order."""
    prefix, suffix = "video.overall.", ".nme_io"
    return [k[len(prefix) : -len(suffix)] for k in ev if k.startswith(prefix) and k.endswith(suffix)]


def _still_split(ev: Mapping[str, Any]) -> str | None:
    splits = list(dict.fromkeys(k.split(".")[1] for k in ev if k.startswith("still.") and k.count(".") >= 2))
    return "test" if "test" in splits else (splits[0] if splits else None)


def build_headline(train: Mapping[str, Any] | None, ev: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headline mapping from parsed ``train.json`` and ``eval.json`` (either may be None)."""
    train, ev = train or {}, ev or {}
    out: dict[str, dict[str, Any]] = {
        "val": {
            "nme_pct": _pct(train.get("val_nme")),
            "fr_pct": _pct(train.get("val_fr")),
            "auc": _round(train.get("val_auc")),
        }
    }
    split = _still_split(ev)
    if split is not None:
        out["still"] = {k: _round(ev.get(f"still.{split}.{k}")) for k in ("nme_pct", "fr_pct", "auc")}
    rwr, best = ev.get("info.rwr_method") or None, ev.get("info.best_filter") or None
    chosen = headline_methods(_eval_methods(ev), rwr, best)
    out["video_nme"] = {m: _round(ev.get(f"video.overall.{m}.nme_io")) for m in chosen}
    out["video_nmf"] = {m: _round(ev.get(f"video.overall.{m}.nmf")) for m in chosen}
    for vs in ("rwr_vs_per_frame", "rwr_vs_best_filter"):
        out[vs] = {
            "nme_pct": _round(ev.get(f"compare.overall.{vs}.nme_io_pct")),
            "nmf_pct": _round(ev.get(f"compare.overall.{vs}.nmf_pct")),
        }
    out["throughput"] = {
        "train_images_per_s": _round(train.get("train_images_per_s")),
        "eval_frames_per_s": _round(ev.get("throughput.frames_per_s")),
    }
    cleaned: dict[str, Any] = {}
    for section, values in out.items():
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            cleaned[section] = kept
    names = {k: v for k, v in (("rwr", rwr), ("best_filter", best)) if v}
    if names:
        cleaned["methods"] = names
    return cleaned


def count_numbers(data: Any) -> int:
    """Numeric leaves (bools included) of a parsed JSON value: what ``dvc metrics show`` prints as numbers."""
    if isinstance(data, Mapping):
        return sum(count_numbers(v) for v in data.values())
    if isinstance(data, list | tuple):
        return sum(count_numbers(v) for v in data)
    return int(isinstance(data, int | float))


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_headline(
    root: str | os.PathLike[str] = ".",
    train_file: str = TRAIN_FILE,
    eval_file: str = EVAL_FILE,
    out_file: str = HEADLINE_FILE,
) -> dict[str, Any]:
    """Build the headline from the files under ``root`` and write ``out_file`` atomically; returns it."""
    base = Path(root)
    headline = build_headline(_load(base / train_file), _load(base / eval_file))
    n = count_numbers(headline)
    if n > MAX_NUMBERS:  # headline_methods bounds it; a guard against a layout change
        raise ValueError(f"{out_file}: {n} numbers, more than {MAX_NUMBERS}")
    write_text_atomic(base / out_file, json.dumps(headline, indent=2) + "\n")
    return headline


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m pipelines.headline [--root DIR]``: write ``metrics/headline.json`` (the DVC ``headline`` stage)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.headline", description=main.__doc__)
    parser.add_argument("--root", default=".", help="project folder (default: the current one)")
    args = parser.parse_args(argv)
    headline = write_headline(args.root)
    print(f"headline: {count_numbers(headline)} numbers -> {HEADLINE_FILE}")


if __name__ == "__main__":
    main()
