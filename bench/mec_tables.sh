#!/usr/bin/env bash
# Issue 4's real-data MEC benchmark: DeepFM, 5 seeds, M=4, K=16, codes bit-packed at 4 bits.
# The long-tailed sets (criteo, avazu, mind-small-5k) also run the ablations.
# Raw JSON lines: bench/results/mec_<dataset>.jsonl; tables: bench/methods_auc.py --summarise FILES.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2,3,4}
SETTINGS="codewords=16 bits=4"
ABLATION=none,mec,pq,pq-no-retrain,mec-no-pwr,mec-no-contrastive
MAIN=none,mec,pq-no-retrain
for d in ${DATASETS:-criteo avazu mind-small-5k movielens-100k frappe movielens-1m-part}; do
  case $d in criteo|avazu|mind-small-5k) methods=$ABLATION ;; *) methods=$MAIN ;; esac
  $PY bench/methods_auc.py --datasets "$d" --model deepfm --methods "$methods" --seeds "$SEEDS" \
      --set $SETTINGS --out "bench/results/mec_${d}.jsonl"
done
