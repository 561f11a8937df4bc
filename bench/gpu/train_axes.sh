#!/usr/bin/env bash
# One device call: the training axes of the RwR study (issue 18). Each arm is the CPU zoo recipe
# (recipes/ldeq68-small-w300-128px.yaml: small preset, 128 px, batch 16, lr 2e-3) with ONE training setting
# changed, plus a GPU baseline with none changed; all arms train at once on one GPU (one Ray cluster, a fraction
# of the GPU each) for EPOCHS epochs. Carried: .gpu (params_axes.yaml + w300/shards, JPEG 90) and
# .carry/sitet.tar.xz + .carry/extra.tar.gz (the Ray/MLflow wheelhouse). Back in $OUT: one best checkpoint per arm
# (our weights-only format, ~4.6 MB) and logs.tgz (per-arm train logs and metrics).
# Usage: bash bench/gpu/train_axes.sh TRAIN_TIMEOUT_S EPOCHS
set -uo pipefail
t=${1:-480}; epochs=${2:-100}
tar -xJf .carry/sitet.tar.xz -C /tmp && tar -xzf .carry/extra.tar.gz -C /tmp
export PYTHONPATH=/tmp/sitet:. RAY_AUTH_MODE=disabled MLFLOW_ALLOW_FILE_STORE=true PYTHONUNBUFFERED=1
mkdir -p .devrun/logs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee .devrun/logs/gpu.txt
python3 -c "from ray.scripts.scripts import main; main()" start --head --port 6379 --num-cpus 16 --num-gpus 1 \
  --disable-usage-stats --include-dashboard false > .devrun/logs/ray_start.log 2>&1
export RAY_ADDRESS=127.0.0.1:6379
declare -A arms=(
  [gpu-base]=""
  [nfe2]="--set train_max_nfe=2"
  [nfe8]="--set train_max_nfe=8"
  [implicit]="--set grad_mode=implicit"
  [jac1]="--set jac_reg_weight=1.0"
)
start=$(date +%s)
for name in "${!arms[@]}"; do
  # shellcheck disable=SC2086
  timeout "$t" python3 -m ldeq_cli.main train --params .gpu/params_axes.yaml --out ".devrun/$name" --no-register \
    --set num_workers=1 --set use_gpu=true --set gpus_per_worker=0.2 --set cpus_per_worker=2 \
    --set epochs="$epochs" --set materialize_train=true --set storage_path="/tmp/ray_results_$name" \
    --set mlflow_uri="file:///tmp/mlruns_$name" --set mlflow_artifacts="/tmp/mlart_$name" ${arms[$name]} \
    > ".devrun/logs/train_$name.log" 2>&1 &
done
wait
echo "all arms done, wall=$(( $(date +%s) - start )) s" | tee .devrun/logs/wall.txt
for name in "${!arms[@]}"; do
  ck=".devrun/$name/models/model.pt"
  [ -f "$ck" ] || ck=$(find "/tmp/ray_results_$name" -name best.pt -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
  echo "$name: $ck" | tee -a .devrun/logs/wall.txt
  [ -n "$ck" ] && cp "$ck" "$OUT/axis-$name.pt"
  cp ".devrun/$name/metrics/train.json" ".devrun/logs/train_$name.json" 2>/dev/null
  grep -E "^epoch" ".devrun/logs/train_$name.log" | tail -3
done
tar czf "$OUT/logs.tgz" -C .devrun logs
ls -la "$OUT"
