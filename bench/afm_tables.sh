#!/usr/bin/env bash
# Issue 5's real-data AFM benchmark: DeepFM and DCNv2 on criteo, avazu, frappe, movielens-100k, 5 seeds,
# methods none (baseline), afm, mec, mec+afm run side by side on the same split and baseline per seed.
# AFM: rank by energy 0.9, capped at 8% of each layer's parameters (afm_param_budget=0.08), Dense layers
# and DCNv2's cross layers; MEC: M=8 sub-spaces, K=16 codewords, codes bit-packed at 4 bits.
# Throughput: every model of a seed side by side at batch 4096 (bench/methods_auc.py).
# Raw JSON lines: bench/results/afm_<model>_<dataset>.jsonl;
# Milder settings for the small sets (see BENCHMARKS.md section 4):
#   SUFFIX=_mild SETTINGS="subspaces=8 codewords=16 bits=4 afm_param_budget=0.2 afm_energy=0.95 head_rows=0.25" \
#   DATASETS="frappe movielens-100k" bash bench/afm_tables.sh
# table: python bench/methods_auc.py --summarise bench/results/afm_*.jsonl --table afm
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2,3,4}
SETTINGS=${SETTINGS:-"subspaces=8 codewords=16 bits=4 afm_param_budget=0.08"}
SUFFIX=${SUFFIX:-}  # e.g. _mild: results in bench/results/afm_<model>_<dataset>_mild.jsonl
for model in ${MODELS:-deepfm dcnv2}; do
  for d in ${DATASETS:-criteo avazu frappe movielens-100k}; do
    $PY bench/methods_auc.py --datasets "$d" --model "$model" --methods none,afm,mec,mec+afm --seeds "$SEEDS" \
        --set $SETTINGS --out "bench/results/afm_${model}_${d}${SUFFIX}.jsonl"
  done
done
