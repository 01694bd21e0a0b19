#!/usr/bin/env bash
# The results table (benchmarks/run_results.py) on a 2-core CPU: one chain per dataset, one torch thread each.
# Every row is resumable and written once (run_results.py skips rows on disk and resumes killed training): run
# this again to continue. Seed-major order, so that an interrupted grid still has whole seeds (every method of
# a seed, paired with PGD-AT). Phase 1, all 5 methods x 3 seeds: train (10,000 images drawn with the seed, 500
# of them held out; 4 epochs; PGD-5), evaluate on the first 1,000 test images (clean, FGSM, PGD-20 x 2, transfer
# from the standard model of the same seed), APGD-CE + APGD-T and the PGD eps curve on the first 500 of them;
# Square alone and the sanity report on seed 0 only. Phase 2: the standard AutoAttack on the 1,000 images of
# seed 0 (the costliest column: ~30-45 CPU-minutes per robust model), added to the rows on disk.
#   CLEAD_DATA_ROOT=/path/to/data bash benchmarks/results_grid_cpu.sh    # logs in benchmarks/results/table/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=benchmarks/results/table
R="env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY benchmarks/run_results.py --device cpu --out $OUT \
  --n-train 10000 --epochs 4 --attack-steps 5 --n-test 1000 --steps 20 --restarts 2 --n-score 500 \
  --sanity-seeds 0 --square-seeds 0 --autoattack-seeds 0 --n-autoattack 1000"
mkdir -p "$OUT"
chain() {
  local dataset=$1
  for seed in 0 1 2; do $R --datasets "$dataset" --seeds "$seed" --n-autoattack 0; done
  $R --datasets "$dataset" --seeds 0 --add-autoattack --methods pgd_at clead_online trades standard clead_faithful
}
chain mnist >>"$OUT/chain_mnist.log" 2>&1 &
chain fashion-mnist >>"$OUT/chain_fashion-mnist.log" 2>&1 &
echo "started: tail -f $OUT/chain_mnist.log $OUT/chain_fashion-mnist.log"
wait
