"""Round 2 of the RwR study: the shipped video default checked on the `given` box track with 96 tuning videos.

Reads ``outputs/eval/per_video.parquet`` and ``outputs/eval/summary.json`` of ``params.yaml`` next to this file
(``ldeq evaluate --params studies/rwr_real_faces/default/params.yaml``) and writes ``results.md``, ``results.csv``
and ``front.png`` here. The default is chosen on the TUNING videos only (lowest NMF with NME <= per-frame NME, the
tuning budget of params.yaml), then scored on the 32 test videos against the issue's targets, with 95 % bootstrap
intervals over test videos (paired resampling) for its NME and NMF ratios to per-frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
NME_BUDGET_TUNE = 0.0  # params.yaml evaluate.tuning.nme_tolerance: the choice keeps the issue's 1 % as margin
NME_BUDGET_TARGET = 0.01  # the issue's bound on the test videos
N_BOOT = 10_000


def per_video(role: str) -> pd.DataFrame:
    df = pd.read_parquet(HERE / "outputs" / "eval" / "per_video.parquet")
    return df[df.role == role]


def table(df: pd.DataFrame) -> pd.DataFrame:
    agg = df.groupby("method", sort=False)[["nme_io", "nmf", "nfe"]].mean().reset_index()
    pf = agg.set_index("method").loc["per_frame"]
    agg["nmf_vs_per_frame_pct"] = 100 * (agg.nmf / pf.nmf - 1)
    agg["nme_vs_per_frame_pct"] = 100 * (agg.nme_io / pf.nme_io - 1)
    return agg


def choose(tune: pd.DataFrame) -> str:
    """The lowest-NMF method on the tuning videos whose NME is within the tuning budget of per-frame."""
    agg = table(tune)
    ok = agg[agg.nme_io <= (1 + NME_BUDGET_TUNE) * float(agg.set_index("method").loc["per_frame"].nme_io)]
    return str(ok.sort_values("nmf").method.iloc[0])


def bootstrap_ratios(test: pd.DataFrame, method: str, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95 % intervals of mean(method) / mean(per_frame) for NME and NMF, resampling test videos (paired)."""
    wide = test.pivot_table(index="key", columns="method", values=["nme_io", "nmf"])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(wide), size=(N_BOOT, len(wide)))
    out = {}
    for metric in ("nme_io", "nmf"):
        m, pf = wide[metric][method].to_numpy(), wide[metric]["per_frame"].to_numpy()
        ratios = m[idx].mean(axis=1) / pf[idx].mean(axis=1)
        lo, hi = np.percentile(ratios, [2.5, 97.5])
        out[metric] = (100 * (lo - 1), 100 * (hi - 1))
    return out


def verdict(agg: pd.DataFrame, method: str) -> list[tuple[str, bool]]:
    sub = agg.set_index("method")
    m, pf = sub.loc[method], sub.loc["per_frame"]
    checks = [
        (f"NMF {m.nmf_vs_per_frame_pct:+.1f} % vs per-frame (target <= -13 %)", bool(m.nmf <= 0.87 * pf.nmf)),
        (
            f"NME {m.nme_vs_per_frame_pct:+.2f} % vs per-frame (target <= +1 %)",
            bool(m.nme_io <= (1 + NME_BUDGET_TARGET) * pf.nme_io),
        ),
    ]
    for f in ("per_frame+one_euro", "per_frame+kalman"):
        checks.append((f"NMF {m.nmf:.1f} below {f} {sub.loc[f].nmf:.1f}", bool(m.nmf < sub.loc[f].nmf)))
    return checks


def front(agg: pd.DataFrame, chosen: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in agg.itertuples():
        base = r.method.split("+")[0]
        colour = {"per_frame": "tab:grey", "rwr_nfe1": "tab:orange", "rwr_nfe2": "tab:blue"}.get(base, "tab:green")
        marker = "*" if r.method == chosen else ("o" if "+" not in r.method else "s")
        ax.scatter(r.nmf, r.nme_io, c=colour, marker=marker, s=160 if r.method == chosen else 40, alpha=0.85)
        ax.annotate(r.method, (r.nmf, r.nme_io), fontsize=7, alpha=0.8, xytext=(3, 3), textcoords="offset points")
    pf = agg.set_index("method").loc["per_frame"]
    ax.axhline((1 + NME_BUDGET_TARGET) * pf.nme_io, ls="--", c="tab:red", lw=0.8, label="NME +1 % over per-frame")
    ax.axvline(0.87 * pf.nmf, ls=":", c="tab:red", lw=0.8, label="NMF -13 % vs per-frame")
    ax.set_xlabel("NMF (flicker, lower is better)")
    ax.set_ylabel("NME inter-ocular % (lower is better)")
    ax.set_title("Round 2, given boxes (2 % jitter): 32 test videos; star = chosen on the 96 tuning videos")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "front.png", dpi=110)


def main() -> None:
    tune, test = per_video("tune"), per_video("test")
    chosen = choose(tune)
    agg = table(test)
    agg.to_csv(HERE / "results.csv", index=False, float_format="%.4f")
    summary = json.loads((HERE / "outputs" / "eval" / "summary.json").read_text())
    by_base = summary["filters"]["chosen_by_base"]
    ci = bootstrap_ratios(test, chosen)
    lines = [
        f"# Round 2: the video default on given boxes ({tune.key.nunique()} tuning / {test.key.nunique()} test videos)",
        "",
        "Test videos only (the filters were tuned per base on the tuning videos to NME <= per-frame NME).",
        "",
        "| method | NME io % | NMF | NFE/frame | NMF vs per-frame | NME vs per-frame |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in agg.itertuples():
        lines.append(
            f"| {r.method} | {r.nme_io:.3f} | {r.nmf:.1f} | {r.nfe:.2f} | {r.nmf_vs_per_frame_pct:+.1f} % | "
            f"{r.nme_vs_per_frame_pct:+.1f} % |"
        )
    lines += ["", "Filter parameters chosen on the tuning videos, per base:", ""]
    lines += [f"- `{base}`: " + ", ".join(f"{f} {p}" for f, p in fs.items()) for base, fs in by_base.items()]
    lines += [
        "",
        f"**Chosen on the tuning videos: `{chosen}`.** On the test videos:",
        "",
    ]
    lines += [f"- {text}: {'met' if ok else 'MISSED'}" for text, ok in verdict(agg, chosen)]
    lines += [
        f"- 95 % bootstrap interval over test videos: NME {ci['nme_io'][0]:+.1f} to {ci['nme_io'][1]:+.1f} %, "
        f"NMF {ci['nmf'][0]:+.1f} to {ci['nmf'][1]:+.1f} % vs per-frame",
    ]
    (HERE / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    front(agg, chosen)
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
