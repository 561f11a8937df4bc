#!/usr/bin/env bash
# The compiled two-stage GroupNorm statistics (bench/gpu/gn_experiment.py) vs ATen's GroupNorm, NCHW (the default
# variant) and channels_last; BENCHMARKS.md section 13b records why neither replaced the default.
source bench/gpu/env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
timeout 250 python3 bench/gpu/gn_experiment.py channel_stats --device cuda --presets paper --batches 256,512 \
  --only-rwr --variants fp32,default,fp16+cl+compile+graph --out "$OUT/gn_cl_stats.json" > "$OUT/gn_cl_stats.log" 2>&1
python3 bench/gpu/summarize.py "$OUT/gn_cl_stats.json"
timeout 200 python3 bench/gpu/gn_experiment.py aten --device cuda --presets paper --batches 256,512 \
  --only-rwr --variants fp32,fp16+cl+compile+graph --out "$OUT/gn_cl_aten.json" > "$OUT/gn_cl_aten.log" 2>&1
python3 bench/gpu/summarize.py "$OUT/gn_cl_aten.json"
