#!/usr/bin/env bash
# The paper-size 68-point model on real 300-W faces (shards and params in .gpu/, see BENCHMARKS.md section 3).
# Resumes the same Ray run when re-run. Usage: bash bench/gpu/train_300w.sh TIMEOUT_S [extra --set ...]
source bench/gpu/env.sh
t=$1; shift
mkdir -p .devrun
timeout "$t" python3 -m ldeq_cli.main train --params .gpu/params_300w.yaml --out .devrun --no-register \
  --set num_workers=1 --set use_gpu=true --set cpus_per_worker=12 --set batch_size=32 --set epochs=60 \
  --set lr=0.001 --set bf16=true --set channels_last=false --set train_max_nfe=4 --set grad_mode=one_step \
  --set materialize_train=true "$@" > .devrun/train.log 2>&1
grep -E "^train:|^model:|^error" .devrun/train.log || tail -5 .devrun/train.log
