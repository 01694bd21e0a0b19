#!/usr/bin/env bash
# The results table (benchmarks/run_results.py) on a 2-core CPU: one chain per dataset, one torch thread each.
# Every row is resumable and written once (run_results.py skips rows on disk, adds missing score columns to them
# and resumes killed training): run this again to continue. Cheapest and most needed first, so that an interrupted
# grid still has whole seeds: (1) standard, PGD-AT, TRADES and C-LEAD online, seeds 0, 1, 2: train (10,000 images
# drawn with the seed, 500 of them held out; 4 epochs; PGD-5), evaluate on the first 1,000 test images (clean,
# FGSM, PGD-20 x 2, transfer from the standard model of the same seed), APGD-CE + APGD-T and the PGD eps curve on
# the first 500 of them; (2) C-LEAD faithful seed 0 (about 5x a PGD-AT row: CW-50 views, a 50-epoch head);
# (3) Square alone on seed 0's 500 images; (4) C-LEAD faithful seeds 1, 2; (5) the standard AutoAttack on the
# 1,000 images of seed 0 (the costliest column: 20-30 CPU-minutes per robust model on 2026-12-03), added to the
# rows on disk.
# No sanity report (5-6 CPU-minutes on a standard model's 1,000 images, more on a robust one; the 2026-12-03 run
# has it for the standard models' seed 0 only, which ran before this choice).
#   CLEAD_DATA_ROOT=/path/to/data bash benchmarks/results_grid_cpu.sh [datasets]   # default: mnist fashion-mnist
# Logs in benchmarks/results/table/chain_<dataset>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/table
R="env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY benchmarks/run_results.py --device cpu --out $OUT \
  --n-train 10000 --epochs 4 --attack-steps 5 --n-test 1000 --steps 20 --restarts 2 --n-score 500 \
  --no-sanity --square-seeds 0 --autoattack-seeds 0 --n-autoattack 1000"
mkdir -p "$OUT"
chain() {
  local dataset=$1
  for seed in 0 1 2; do       # every seed of the four cheaper methods first: the paired intervals need them
    $R --datasets "$dataset" --seeds "$seed" --n-autoattack 0 --methods standard pgd_at trades clead_online \
      --score-columns apgd eps_curve
  done
  $R --datasets "$dataset" --seeds 0 --n-autoattack 0 --methods clead_faithful   # ~5x a PGD-AT row to train
  $R --datasets "$dataset" --seeds 0 --n-autoattack 0      # adds Square to seed 0's rows on disk
  $R --datasets "$dataset" --seeds 1 2 --n-autoattack 0 --methods clead_faithful
  $R --datasets "$dataset" --seeds 0 --add-autoattack --methods pgd_at clead_online trades standard clead_faithful
}
for dataset in "${@:-mnist fashion-mnist}"; do
  for d in $dataset; do chain "$d" >>"$OUT/chain_$d.log" 2>&1 & echo "started: tail -f $OUT/chain_$d.log"; done
done
wait
