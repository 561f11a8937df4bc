"""The training-axis arms of the RwR study side by side with the zoo model (``../detector``): per method, the test
videos' mean NME and NMF, and each arm's change against its own per-frame baseline. Writes ``axes.md``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
METHODS = ("per_frame", "rwr_nfe2", "rwr_nfe2_warp", "per_frame+kalman", "rwr_nfe2_warp+kalman")


def arm(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / "outputs" / "eval" / "per_video.parquet"
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    df = df[df.role == "test"]
    agg = df.groupby("method")[["nme_io", "nmf"]].mean()
    base = agg.loc["per_frame"]
    rows = []
    for m in METHODS:
        if m in agg.index:
            r = agg.loc[m]
            rows.append(
                {
                    "arm": name,
                    "method": m,
                    "nme_%": r.nme_io,  # per_video.parquet holds percent
                    "nmf": r.nmf,
                    "nmf_vs_per_frame_%": 100 * (r.nmf / base.nmf - 1),
                    "nme_vs_per_frame_%": 100 * (r.nme_io / base.nme_io - 1),
                }
            )
    return pd.DataFrame(rows)


def still_nme(folder: Path) -> float | None:
    path = folder / "metrics" / "eval.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    value = data.get("still.val.nme_pct")
    return None if value is None else float(value)


def main() -> None:
    arms = [("zoo (anderson)", HERE.parent / "detector")]
    arms += [(p.name, p) for p in sorted(HERE.iterdir()) if p.is_dir() and (p / "params.yaml").is_file()]
    tables = [t for name, folder in arms if (t := arm(folder, name)) is not None]
    if not tables:
        raise SystemExit("no arm has results yet")
    out = pd.concat(tables, ignore_index=True)
    lines = [
        "# RwR study, training axes (detector boxes, 24 test videos)",
        "",
        "Each arm is the zoo recipe with one training setting changed (see its params.yaml header); the filters are",
        "tuned on the 8 tuning videos as in ../detector. NMF: lower is less flicker.",
        "",
        out.to_markdown(index=False, floatfmt=".2f"),
        "",
    ]
    for name, folder in arms:
        s = still_nme(folder)
        if s is not None:
            lines.append(f"- {name}: still val NME {s:.2f} %")
    (HERE / "axes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
