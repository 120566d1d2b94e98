#!/usr/bin/env bash
# Prints the Markdown tables of bench/BENCHMARKS.md from the JSON lines the bench scripts wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
echo "### Real samples"
$PY bench/zoo_auc.py --summarise bench/out/zoo_real_b.jsonl bench/out/zoo_real_a.jsonl 2>/dev/null
echo
echo "### Synthetic"
$PY bench/zoo_auc.py --summarise bench/out/zoo_synthetic.jsonl 2>/dev/null
