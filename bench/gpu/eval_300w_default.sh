#!/usr/bin/env bash
# The evaluation stage on the 300-W animated stills (.gpu/: shards, raw, params_300w.yaml) with the trained model
# at ${EVAL_CKPT:-/tmp/model16.pt} and the default inference path (fp16 + compile + CUDA graphs); NME/NMF per
# method and throughput to compare with BENCHMARKS section 10 (TF32 path). Needs the wheels (setup.sh).
source bench/gpu/env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache
sed -i "s#checkpoint: .*#checkpoint: ${EVAL_CKPT:-/tmp/model16.pt}#" .gpu/params_300w.yaml
timeout "${EVAL_TIMEOUT:-400}" python3 -m ldeq_cli.main evaluate --params .gpu/params_300w.yaml > "$OUT/eval.log" 2>&1
tail -40 "$OUT/eval.log"
cp .gpu/metrics/eval.json "$OUT/eval_default.json" 2>/dev/null
