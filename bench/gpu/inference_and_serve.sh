#!/usr/bin/env bash
# Inference variants (random weights; paper + tiny presets), kernel profile of the default path, and the
# end-to-end Serve benchmark with the trained 300-W paper model. Results in $OUT.
source bench/gpu/env.sh
timeout "${SWEEP_TIMEOUT:-260}" python3 bench/bench_inference.py --device cuda --presets paper --batches 1,8,64,256,512 \
  --variants fp32,fp32+graph,tf32,tf32+cl,tf32+cl+graph,bf16+cl,bf16+cl+graph,default --profile 1,256 \
  --out "$OUT/rwr_paper.json" > .devrun/sweep.log 2>&1
timeout 120 python3 bench/bench_inference.py --device cuda --presets tiny --batches 1,64,512 --only-rwr \
  --variants fp32,tf32+cl+graph,bf16+cl+graph,default --out "$OUT/rwr_tiny.json" >> .devrun/sweep.log 2>&1
python3 bench/gpu/summarize.py "$OUT/rwr_paper.json" "$OUT/rwr_tiny.json"
CKPT=${SERVE_CKPT:-.devrun/models/model16.pt}
timeout "${SERVE_TIMEOUT:-240}" python3 bench/bench_serve.py --device cuda --replicas 1 --gpus-per-replica 1 \
  --cpus-per-replica 8 --prepare-threads 8 --max-batch-size 32 --clients 1,8,32 --requests-per-client 3 \
  --checkpoint "$CKPT" --out "$OUT/serve_h100.json" > .devrun/serve.log 2>&1
grep -v "^\s*$" .devrun/serve.log | grep -v "gcs_server\|WARN" | tail -25
tar czf "$OUT/logs.tgz" .devrun/sweep.log .devrun/serve.log 2>/dev/null; ls -la "$OUT"
