#!/usr/bin/env bash
# DDP scaling of ldeq train (paper preset, 300-W shards in DATA/shards) on one machine: one run per SPEC, then
# bench/gpu/scaling_report.py (images/s, efficiency vs the first 1-GPU run, per-epoch time breakdown).
# SPEC: WORLD or WORLD:name=value[,name=value] (extra train settings), e.g. "1 2 4 4:worker_cache=false".
# Usage: bash bench/gpu/scaling.sh DATA EPOCHS TAG "SPEC ..." [--set k=v ...]   (settings for every run)
source bench/gpu/env.sh
data=$1 epochs=$2 tag=$3 specs=$4
shift 4
mkdir -p .devrun
reports=()
for spec in $specs; do
  n=${spec%%:*} extra=()
  if [[ $spec == *:* ]]; then IFS=, read -ra kv <<< "${spec#*:}"; for s in "${kv[@]}"; do extra+=(--set "$s"); done; fi
  name="${tag}_${spec//[:=,]/_}"
  store="$PWD/.devrun/ray_$name"
  rm -rf "$store"
  timeout 420 python3 -m ldeq_cli.main train --params "$data/params.yaml" --shards "$data/shards" \
    --out ".devrun/$name" --no-register --set run_name="$name" --set storage_path="$store" \
    --set num_workers="$n" --set use_gpu=true --set cpus_per_worker=12 --set batch_size=32 --set epochs="$epochs" \
    --set lr=0.001 --set bf16=true --set train_max_nfe=4 --set grad_mode=one_step --set materialize_train=true \
    "$@" "${extra[@]}" > ".devrun/$name.log" 2>&1
  echo "$name rc=$?"; grep -E "^error|Error" ".devrun/$name.log" | tail -3
  reports+=("$spec:$n:$store")
done
python3 bench/gpu/scaling_report.py "$OUT/scaling_$tag.json" "${reports[@]}"
