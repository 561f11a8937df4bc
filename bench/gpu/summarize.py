"""Print the rows of bench_inference.py / bench_train_step.py JSON results as short lines (for device logs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(path, "unreadable:", exc)
            continue
        print(path, d.get("device"), "bf16 peak", d.get("bf16_matmul_peak_tflops"))
        for r in d.get("rwr", []):
            if "error" in r:
                print(" ", r["preset"], r["batch"], r["variant"], "ERROR", r["error"][:160])
                continue
            print(
                " ",
                r["preset"],
                r["batch"],
                r["variant"],
                f"{r['frames_per_s']:.0f} fps",
                f"{r['ms_per_frame']:.3f} ms/f",
                f"{r['tflops']:.1f} TF",
                f"x{r['speedup_vs_fp32_eager'] or 0:.2f}",
                f"{r['max_landmark_diff_px_at_256']:.4f} px",
                "ok" if r["parity_ok"] else "FAIL",
            )
        for p in d.get("profile", []):
            top = [(k["name"][:50], round(k["share"], 3)) for k in p["top"][:8]]
            print(
                "  profile",
                p["batch"],
                p.get("variant"),
                round(p["device_us_per_step"]),
                p.get("kernels_per_step"),
                top,
            )
        for r in d.get("rows", []):
            print("  train", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
