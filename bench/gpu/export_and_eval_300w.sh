#!/usr/bin/env bash
# After train_300w.sh: fp16-rounded checkpoint in parts to $OUT, evaluation on the 300-W animated stills (GPU
# Ray Data actor), parity of the inference variants on the trained model with real crops; results in $OUT.
source bench/gpu/env.sh
python3 bench/pack_checkpoint.py pack .devrun/models/model.pt "$OUT/ckpt" --half
python3 bench/pack_checkpoint.py unpack "$OUT/ckpt" .devrun/models/model16.pt && rm -f "$OUT"/ckpt/*.fp16.pt
sed -i 's#models/model.pt#models/model16.pt#' .gpu/params_300w.yaml
timeout "${EVAL_TIMEOUT:-240}" python3 -m ldeq_cli.main evaluate --params .gpu/params_300w.yaml > .devrun/eval.log 2>&1
tail -60 .devrun/eval.log
python3 bench/make_crops.py --shards .gpu/w300/shards --split val --size 256 --n 256 --out .devrun/crops256.npz
timeout "${PARITY_TIMEOUT:-200}" python3 bench/bench_inference.py --device cuda --checkpoint .devrun/models/model16.pt \
  --inputs .devrun/crops256.npz --batches 1,32,256 \
  --variants fp32,fp32+graph,tf32,tf32+cl,tf32+cl+graph,bf16+cl+graph,default --out .devrun/parity_paper.json \
  > .devrun/parity.log 2>&1
python3 bench/gpu/summarize.py .devrun/parity_paper.json
tar czf "$OUT/w300_results.tgz" -C .gpu metrics outputs/eval outputs/overlays plots -C ../.devrun train.log eval.log parity.log parity_paper.json metrics 2>/dev/null
ls -la "$OUT" "$OUT/ckpt"
