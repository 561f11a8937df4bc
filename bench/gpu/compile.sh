#!/usr/bin/env bash
# Not yet measured (the session's device time ran out): torch.compile of the TF32 inference step and of the
# training step, the two open measurements of issue 7. Needs only torch (no wheels). Results in $OUT.
source bench/gpu/env.sh
timeout 400 python3 bench/bench_inference.py --device cuda --presets paper --batches 1,8,256 --only-rwr \
  --variants fp32,tf32+graph,tf32+compile,default --profile 256 --out "$OUT/compile_tf32.json"
timeout 180 python3 bench/bench_train_step.py --device cuda --variants bf16,bf16+compile --out "$OUT/train_compile.json"
