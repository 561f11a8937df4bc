#!/usr/bin/env bash
# The evaluation stage on the 300-W animated stills with the trained model and the default inference path (fp16 +
# compile + CUDA graphs): NME/NMF per method and throughput, to compare with BENCHMARKS section 10 (TF32 path).
# ${EVAL_DIR:-.gpu4} holds params_300w.yaml, w300/raw, w300/shards/val and model16.pt; needs the wheels (setup.sh).
source bench/gpu/env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
D=${EVAL_DIR:-.gpu4}
sed -i "s#checkpoint: .*#checkpoint: ${EVAL_CKPT:-model16.pt}#" "$D/params_300w.yaml"
timeout "${EVAL_TIMEOUT:-400}" python3 -m ldeq_cli.main evaluate --params "$D/params_300w.yaml" > "$OUT/eval.log" 2>&1
grep -v "^\s*$" "$OUT/eval.log" | grep -v "gcs_server\|WARN\|logging.cc" | tail -40
cp "$D/metrics/eval.json" "$OUT/eval_default.json" 2>/dev/null
