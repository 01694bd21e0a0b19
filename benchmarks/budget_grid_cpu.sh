#!/usr/bin/env bash
# The budget curve and the lambda sweep of benchmarks/budget_curve.py on a 2-core CPU: two chains of one torch
# thread each, balanced by epochs (~140 each), smallest budgets first so that an interrupted grid still has
# whole budgets. Every point is resumable and written once (see budget_curve.py); run this again to continue.
#   bash benchmarks/budget_grid_cpu.sh            # both chains in the background, logs in benchmarks/results/budget/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
B="env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY benchmarks/budget_curve.py --device cpu --sweep-lambdas"
OUT=benchmarks/results/budget
mkdir -p "$OUT"
chain_a() {
  $B --methods pgd_at trades --epochs 4 8
  $B --methods pgd_at --epochs 16 --standard-check            # standard AutoAttack on seed 0 at 16 epochs
  $B --methods trades --epochs 16 --seeds 0
}
chain_b() {
  $B --methods clead_online --epochs 4 8
  $B --methods clead_online --epochs 16 --standard-check
  env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY benchmarks/budget_curve.py --device cpu --methods clead_online \
      --epochs 8 --sweep-epochs 8 --sweep-lambdas 0.1 1 2 0
  $B --methods trades --epochs 16 --seeds 1 2
}
chain_a >"$OUT/chain_a.log" 2>&1 &
chain_b >"$OUT/chain_b.log" 2>&1 &
echo "started: tail -f $OUT/chain_a.log $OUT/chain_b.log"
wait
