#!/usr/bin/env bash
# The RwR study on real faces: prepare the jittered 300-W videos once, then evaluate every method under each box
# track. Results land next to each params file (metrics/eval.json, plots/, outputs/eval/report.md).
# Usage: bash studies/rwr_real_faces/run.sh [CHECKPOINT]   (default: the best 68-point zoo model)
set -euo pipefail
cd "$(dirname "$0")/../.."
LDEQ=${LDEQ:-.venv/bin/ldeq}
ckpt=${1:-$(.venv/bin/python -c "from ldeq_core.pretrained import default_pretrained, pretrained_file; print(pretrained_file(default_pretrained(68).name))")}
$LDEQ data prepare --params studies/rwr_real_faces/given/params.yaml
for src in given smoothed detector; do
    $LDEQ evaluate --params "studies/rwr_real_faces/$src/params.yaml" --checkpoint "$ckpt"
done
.venv/bin/python studies/rwr_real_faces/summarize.py
