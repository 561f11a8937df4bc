#!/usr/bin/env bash
# After the default-path changes (TF32 NCHW + graphs, GroupNorm reduction at small batch, serve read-ahead):
# parity on the trained 300-W paper model, the variant sweep with the kernel profile, and the Serve benchmark.
# Needs .gpu2/{model16.pt,crops256.npz} and the wheels installed by setup.sh. Results in $OUT.
source bench/gpu/env.sh
mkdir -p .devrun
timeout 150 python3 bench/bench_inference.py --device cuda --checkpoint .gpu2/model16.pt --inputs .gpu2/crops256.npz \
  --batches 1,8,32,256 --variants fp32,tf32,tf32+graph,default --out "$OUT/parity2.json" > .devrun/parity2.log 2>&1
timeout 200 python3 bench/bench_inference.py --device cuda --presets paper --batches 1,8,64,256,512 --only-rwr \
  --variants fp32,tf32,tf32+graph,default --profile 1,256 --out "$OUT/sweep2.json" > .devrun/sweep2.log 2>&1
python3 bench/gpu/summarize.py "$OUT/parity2.json" "$OUT/sweep2.json"
timeout "${SERVE_TIMEOUT:-230}" python3 bench/bench_serve.py --device cuda --replicas 1 --gpus-per-replica 1 \
  --cpus-per-replica 8 --prepare-threads 8 --max-batch-size 32 --clients 1,8,32 --requests-per-client 3 \
  --checkpoint .gpu2/model16.pt --out "$OUT/serve2.json" > .devrun/serve2.log 2>&1
grep -v "^\s*$" .devrun/serve2.log | grep -v "gcs_server\|WARN\|INFO" | tail -14
