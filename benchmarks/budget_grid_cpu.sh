#!/usr/bin/env bash
# The budget curve and the lambda sweep of benchmarks/budget_curve.py on a 2-core CPU: two chains of one torch
# thread each, balanced by cost (~2.5 CPU-hours each on this machine), smallest budgets first so that an
# interrupted grid still has whole budgets. Every point is resumable and written once (see budget_curve.py):
# run this again to continue. lambda = 0 is not run: it is the PGD-AT step itself (tests/test_batchnorm.py,
# bit for bit), so the sweep's lambda = 0 row is the PGD-AT point of the same budget and seed.
#   bash benchmarks/budget_grid_cpu.sh            # both chains in the background, logs in benchmarks/results/budget/
# WAIT_A=pid WAIT_B=pid: start each chain only after that process ends (a chain already running its first command).
# TRADES at 16 epochs (3 seeds, ~26 CPU-minutes) ran on 2026-12-03 as one command after the rest of the grid
# (`$B --methods trades --epochs 16 --seeds 0 1 2`); here it ends the two chains, as it did not on 2026-12-02.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
B="env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY benchmarks/budget_curve.py --device cpu --sweep-lambdas"
OUT=benchmarks/results/budget
mkdir -p "$OUT"
wait_for() { while [ -n "$1" ] && kill -0 "$1" 2>/dev/null; do sleep 10; done; }
chain_a() {
  wait_for "${WAIT_A:-}"
  $B --methods pgd_at trades --epochs 4 8
  $B --methods pgd_at --epochs 16 --seeds 0 1
  $B --methods clead_online --epochs 8 --seeds 0 --sweep-epochs 8 --sweep-lambdas 1 2     # the lambda sweep
  $B --methods trades --epochs 16 --seeds 0
}
chain_b() {
  wait_for "${WAIT_B:-}"
  $B --methods clead_online --epochs 4 8
  $B --methods clead_online --epochs 16 --standard-check --standard-n 200   # standard AutoAttack, seed 0, 200 images
  $B --methods pgd_at --epochs 16 --seeds 2
  $B --methods clead_online --epochs 8 --seeds 0 --sweep-epochs 8 --sweep-lambdas 0.1       # the lambda sweep
  $B --methods trades --epochs 16 --seeds 1 2
}
chain_a >>"$OUT/chain_a.log" 2>&1 &
chain_b >>"$OUT/chain_b.log" 2>&1 &
echo "started: tail -f $OUT/chain_a.log $OUT/chain_b.log"
wait
