#!/usr/bin/env bash
# DDP scaling of ldeq train (paper preset, 300-W shards in .gpu3/) on 1..N GPUs of one machine, plus the
# GPU-bound step rate (bench_train_step.py). Usage: bash bench/gpu/scaling.sh "1 2" EPOCHS
source bench/gpu/env.sh
mkdir -p .devrun
python3 bench/bench_train_step.py --device cuda --steps 15 --variants bf16 --out "$OUT/train_step.json" 2>&1 | tail -1
for n in $1; do
  timeout 280 python3 -m ldeq_cli.main train --params .gpu3/params.yaml --out ".devrun/w$n" --no-register \
    --set run_name=scale$n --set num_workers=$n --set use_gpu=true --set cpus_per_worker=12 --set batch_size=32 \
    --set epochs=$2 --set lr=0.001 --set bf16=true --set train_max_nfe=4 --set grad_mode=one_step \
    --set materialize_train=true > ".devrun/scale$n.log" 2>&1
  grep -E "^train:|^error" ".devrun/scale$n.log"; grep -o "'epoch': [0-9]*, [^}]*'images_per_s': [0-9.]*" ".devrun/scale$n.log" | sed "s/'train_loss.*'images_per_s'/images_per_s/" | tail -$2
  cp ".devrun/w$n/metrics/train.json" "$OUT/train_${n}gpu.json" 2>/dev/null
done
