#!/usr/bin/env bash
# One device call: the paper-size 68-point model on the real 300-W faces (HELEN train + AFW, our hash val split),
# packed as fp16 parts into $OUT, then its GPU frames/s at batch 1 and 256 on real val crops.
# Carried: .gpu (params_300w.yaml + w300/shards made on the CPU machine with jpeg_quality 90, train and val
# splits) and .carry/sitet.tar.xz (the Ray/MLflow wheelhouse unpacked and xz-compressed to fit the 64 MiB limit).
# Logs, metrics and the benchmark JSON come back in $OUT/logs.tgz (at most 8 files come back).
# Usage: bash bench/gpu/train_paper_zoo.sh TRAIN_TIMEOUT_S EPOCHS
set -uo pipefail
t=${1:-420}; epochs=${2:-110}
tar -xJf .carry/sitet.tar.xz -C /tmp && tar -xzf .carry/extra.tar.gz -C /tmp  # extra: fastapi, starlette (mlflow.pyfunc)
export PYTHONPATH=/tmp/sitet:. RAY_AUTH_MODE=disabled MLFLOW_ALLOW_FILE_STORE=true PYTHONUNBUFFERED=1
mkdir -p .devrun/logs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee .devrun/logs/gpu.txt
start=$(date +%s)
timeout "$t" python3 -m ldeq_cli.main train --params .gpu/params_300w.yaml --out .devrun --no-register \
  --set num_workers=1 --set use_gpu=true --set cpus_per_worker=12 --set batch_size=32 --set epochs="$epochs" \
  --set lr=0.001 --set warmup_epochs=2 --set bf16=true --set channels_last=false --set train_max_nfe=4 \
  --set grad_mode=one_step --set materialize_train=true --set checkpoint_every=5 > .devrun/logs/train.log 2>&1
echo "train rc=$? wall=$(( $(date +%s) - start )) s" | tee -a .devrun/logs/train.log
ck=.devrun/models/model.pt
[ -f "$ck" ] || ck=$(find /tmp/ray_results -name best.pt -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
echo "checkpoint: $ck"
python3 bench/pack_checkpoint.py pack "$ck" "$OUT/ckpt" --half
cp .devrun/metrics/*.json .devrun/logs/ 2>/dev/null
python3 bench/make_crops.py --shards .gpu/w300/shards --split val --size 256 --n 256 --out .devrun/crops256.npz
timeout 80 python3 bench/bench_inference.py --device cuda --checkpoint "$ck" --inputs .devrun/crops256.npz \
  --batches 1,256 --variants fp32,default --only-rwr --out .devrun/logs/gpu_fps.json > .devrun/logs/bench.log 2>&1
tail -20 .devrun/logs/bench.log; grep -E "^epoch|val_nme" .devrun/logs/train.log | tail -15
tar czf "$OUT/logs.tgz" -C .devrun logs
ls -la "$OUT" "$OUT/ckpt"
