#!/usr/bin/env bash
# Prints the Markdown tables of bench/BENCHMARKS.md from the JSON lines the bench scripts wrote
# (kept in bench/results/, one line per trained model).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=bench/results
echo "### Real samples (LR, FM, DeepFM)"
$PY bench/zoo_auc.py --summarise $R/zoo_real_b.jsonl $R/zoo_real_a.jsonl 2>/dev/null
echo
echo "### Synthetic, 200,000 rows (every zoo model, default settings: first-order part included)"
$PY bench/zoo_auc.py --summarise $R/zoo_synthetic_base.jsonl $R/zoo_synthetic_wide.jsonl 2>/dev/null
echo
echo "### Synthetic, the papers' form of DCNv2 / PNN / GDCN / AutoInt (linear=False; earlier default)"
$PY bench/zoo_auc.py --summarise $R/zoo_synthetic_nowide.jsonl 2>/dev/null
echo
echo "### Synthetic, per seed"
$PY - <<'PY'
import json, collections
runs = [json.loads(l) for f in ("bench/results/zoo_synthetic_base.jsonl", "bench/results/zoo_synthetic_wide.jsonl") for l in open(f)]
by = collections.defaultdict(dict)
for r in runs:
    by[r["seed"]][r["model"]] = r["test_auc"]
models = ["lr", "fm", "deepfm", "dcnv2", "pnn", "gdcn", "autoint"]
print("| seed | " + " | ".join(models) + " | every model > LR | DeepFM - LR |")
print("|---|" + "---|" * (len(models) + 2))
for seed in sorted(by):
    row = by[seed]
    cells = [f"{row[m]:.4f}" if m in row else "-" for m in models]
    beats = all(row.get(m, 0) > row["lr"] for m in models[1:]) if all(m in row for m in models) else "-"
    print(f"| {seed} | " + " | ".join(cells) + f" | {beats} | {row['deepfm'] - row['lr']:+.4f} |")
PY
echo
echo "### MEC on the real samples (issue 4): DeepFM, M=4, K=16, 4-bit codes, 5 seeds"
for d in criteo avazu mind-small-5k movielens-100k frappe movielens-1m-part; do
  [ -f $R/mec_$d.jsonl ] && $PY bench/methods_auc.py --summarise $R/mec_$d.jsonl 2>/dev/null
  [ -f $R/mec_${d}_m8.jsonl ] && { echo; echo "M=8:"; $PY bench/methods_auc.py --summarise $R/mec_${d}_m8.jsonl 2>/dev/null; }
  [ -f $R/mec_${d}_shared.jsonl ] && { echo; echo "shared codebooks:"; $PY bench/methods_auc.py --summarise $R/mec_${d}_shared.jsonl 2>/dev/null; }
  echo
done
echo "### MEC at scale (synthetic, largest table 10^7 x 40)"
$PY bench/mec_scale.py --summarise $R/mec_scale.jsonl 2>/dev/null
