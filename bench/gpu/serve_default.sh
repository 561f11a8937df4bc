#!/usr/bin/env bash
# The Serve benchmark (bench/bench_serve.py) with the default inference path (fp16 + compile + CUDA graphs, warmed
# up when each replica starts): 1 replica on the GPU, then 4 replicas sharing it. Needs the wheels (setup.sh) and
# the trained model at ${SERVE_CKPT:-/tmp/model16.pt}. Results in $OUT.
source bench/gpu/env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
CKPT=${SERVE_CKPT:-/tmp/model16.pt}
timeout "${SERVE1_TIMEOUT:-240}" python3 bench/bench_serve.py --device cuda --replicas 1 --gpus-per-replica 1 \
  --cpus-per-replica 8 --prepare-threads 8 --max-batch-size 32 --clients 1,8,32 --requests-per-client 3 \
  --checkpoint "$CKPT" --out "$OUT/serve_default_1r.json" > "$OUT/serve_1r.log" 2>&1
grep -v "^\s*$" "$OUT/serve_1r.log" | grep -v "gcs_server\|WARN\|INFO" | tail -8
timeout "${SERVE4_TIMEOUT:-280}" python3 bench/bench_serve.py --device cuda --replicas 4 --gpus-per-replica 0.25 \
  --cpus-per-replica 3 --prepare-threads 4 --max-batch-size 32 --clients 1,8,32 --requests-per-client 3 \
  --checkpoint "$CKPT" --out "$OUT/serve_default_4r.json" > "$OUT/serve_4r.log" 2>&1
grep -v "^\s*$" "$OUT/serve_4r.log" | grep -v "gcs_server\|WARN\|INFO" | tail -8
