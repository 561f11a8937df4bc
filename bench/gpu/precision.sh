#!/usr/bin/env bash
# fp16 autocast and torch.compile (captured in the engine's CUDA graphs) against the TF32 default: parity on the
# trained 300-W paper model and speed at batch 256, 8 and 1. Needs .gpu2/{model16.pt,crops256.npz} and torch
# only. Results in $OUT (rows are written as they are measured, so a time-out keeps what finished).
source bench/gpu/env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
timeout "${PRECISION_TIMEOUT:-540}" python3 bench/bench_inference.py --device cuda --checkpoint .gpu2/model16.pt \
  --inputs .gpu2/crops256.npz --batches "${BATCHES:-256,8,1}" \
  --variants "${VARIANTS:-fp32,default,bf16+graph,fp16+graph,fp16+cl+graph,tf32+compile+graph,fp16+compile+graph,fp16+cl+compile+graph}" \
  --out "$OUT/precision.json" > "$OUT/precision.log" 2>&1
python3 bench/gpu/summarize.py "$OUT/precision.json"
