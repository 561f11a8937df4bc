"""One table and one NME-NMF front over every (box track, method) of the RwR study on real faces.

Reads ``<box source>/outputs/eval/per_video.parquet`` of the three runs (test videos only: the filters were tuned on
the tuning videos) and writes ``results.md``, ``results.csv`` and ``front.png`` next to this file.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

HERE = Path(__file__).resolve().parent
SOURCES = ("given", "smoothed", "detector")


NME_BUDGET = 0.01  # the bound: NME at most 1 % above per-frame


def load(role: str = "test") -> pd.DataFrame:
    frames = []
    for src in SOURCES:
        path = HERE / src / "outputs" / "eval" / "per_video.parquet"
        if path.is_file():
            df = pd.read_parquet(path)
            frames.append(df[df.role == role].assign(boxes=src))
    if not frames:
        raise SystemExit(f"no study results under {HERE}: run studies/rwr_real_faces/run.sh first")
    return pd.concat(frames, ignore_index=True)


def table(df: pd.DataFrame) -> pd.DataFrame:
    agg = df.groupby(["boxes", "method"], sort=False)[["nme_io", "nmf", "nfe"]].mean().reset_index()
    base = agg[agg.method == "per_frame"].set_index("boxes")
    agg["nmf_vs_per_frame_pct"] = 100 * (agg.nmf / agg.boxes.map(base.nmf) - 1)
    agg["nme_vs_per_frame_pct"] = 100 * (agg.nme_io / agg.boxes.map(base.nme_io) - 1)
    return agg


def choose_default(tune: pd.DataFrame) -> dict[str, str]:
    """Per box track, on the TUNING videos: the lowest-NMF method whose NME is within the budget of per-frame."""
    out = {}
    for src, sub in tune.groupby("boxes"):
        ok = sub[sub.nme_io <= (1 + NME_BUDGET) * float(sub[sub.method == "per_frame"].nme_io.iloc[0])]
        out[str(src)] = str(ok.sort_values("nmf").method.iloc[0])
    return out


def verdict(agg: pd.DataFrame, src: str, method: str) -> str:
    """The issue's targets for ``method`` on the test videos of box track ``src``."""
    sub = agg[agg.boxes == src].set_index("method")
    m, pf = sub.loc[method], sub.loc["per_frame"]
    checks = [
        (f"NMF {m.nmf_vs_per_frame_pct:+.1f} % vs per-frame (target <= -13 %)", m.nmf <= 0.87 * pf.nmf),
        (f"NME {m.nme_vs_per_frame_pct:+.2f} % vs per-frame (target <= +1 %)", m.nme_io <= 1.01 * pf.nme_io),
    ]
    for f in ("per_frame+one_euro", "per_frame+kalman"):
        if f in sub.index:
            checks.append((f"NMF {m.nmf:.1f} vs {f} {sub.loc[f].nmf:.1f}", m.nmf < sub.loc[f].nmf))
    return "; ".join(f"{text} {'met' if ok else 'MISSED'}" for text, ok in checks)


def main() -> None:
    agg = table(load())
    chosen = choose_default(table(load("tune")))
    agg.to_csv(HERE / "results.csv", index=False, float_format="%.4f")
    lines = [
        "| boxes | method | NME io % | NMF | NFE/frame | NMF vs per-frame | NME vs per-frame |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in agg.itertuples():
        lines.append(
            f"| {r.boxes} | {r.method} | {r.nme_io:.3f} | {r.nmf:.1f} | {r.nfe:.2f} | "
            f"{r.nmf_vs_per_frame_pct:+.1f} % | {r.nme_vs_per_frame_pct:+.1f} % |"
        )
    lines += [
        "",
        "Chosen on the tuning videos (lowest NMF with NME <= 1.01 x per-frame), scored on the test videos:",
        "",
    ]
    lines += [f"- boxes `{src}`: **{m}** — {verdict(agg, src, m)}" for src, m in chosen.items()]
    (HERE / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(9, 6))
    for src, marker in zip(SOURCES, ("o", "s", "^"), strict=True):
        sub = agg[agg.boxes == src]
        ax.scatter(sub.nmf, sub.nme_io, marker=marker, label=f"boxes: {src}", alpha=0.8)
        for r in sub.itertuples():
            if r.method in ("per_frame", "rwr_nfe2", "rwr_nfe2_warp", "rwr_nfe2_warp+kalman", "per_frame+kalman"):
                ax.annotate(r.method, (r.nmf, r.nme_io), fontsize=7, alpha=0.8)
    top = 1.12 * float(agg[agg.method == "per_frame"].nme_io.max())
    hidden = int((agg.nme_io > top).sum())
    ax.set_ylim(float(agg.nme_io.min()) - 0.05, top)
    if hidden:
        ax.text(
            0.01,
            0.99,
            f"{hidden} points above {top:.2f} % NME (proximal gamma > 0) not shown",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
        )
    ax.set_xlabel("NMF (flicker, lower is better)")
    ax.set_ylabel("NME inter-ocular % (lower is better)")
    ax.set_title("RwR study on real faces: every box track x method (test videos)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "front.png", dpi=110)
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
