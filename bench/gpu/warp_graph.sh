#!/usr/bin/env bash
# One device call (torch only, nothing carried): the RwR state warp inside vs outside the CUDA graph, and the
# tracker's step with warp_state on/off, for the GPU zoo model and the CPU zoo model (bench/bench_warp_graph.py).
# Usage: bash bench/gpu/warp_graph.sh
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 300 python3 bench/bench_warp_graph.py --device cuda --model ldeq68-paper-w300-256px --batches 1,32,256 \
  --out "$OUT/warp_graph_paper.json"
timeout 150 python3 bench/bench_warp_graph.py --device cuda --model ldeq68-small-w300-128px --batches 1,32,256 \
  --out "$OUT/warp_graph_small.json"
ls -la "$OUT"
