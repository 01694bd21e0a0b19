"""A benchmark of this tree against the same benchmark at another commit, side by side in one run.

    python benchmarks/compare_commits.py --base de8f45a --rounds 5 -- bench_attacks.py --device cpu --threads 1
    python benchmarks/compare_commits.py --base de8f45a -- bench_training.py --threads 1 --repeats 5

The base commit is checked out into a temporary git worktree; each round runs the benchmark script once from each
tree (the order alternates: base, this, then this, base, ...) as a fresh process with PYTHONPATH set to that tree,
each writing its own `--json`. For every timing the benchmark reports (`median_s`, `median_wall_s`: seconds
per call or per step; and `ratio_clead_over_torchattacks`, already normalised by torchattacks timed in the same
process) it prints the per-round ratio this / base and their median: a drift of the machine's speed between
rounds hits both sides of a round alike. Ratios > 1 mean this tree is slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("median_s", "median_wall_s")
NORMALISED = ("ratio_clead_over_torchattacks",)


def figures(result: dict) -> dict[str, float]:
    out = {}
    for key in TIMINGS:
        for name, value in (result.get(key) or {}).items():
            out[f"{key}[{name}]"] = float(value)
    for key in NORMALISED:
        if key in result:
            out[key] = float(result[key])
    return out


def run(tree: Path, script: str, args: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, str(tree / "benchmarks" / script), *args, "--json", str(out)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare against")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", default=None, help="also write every round's figures and the ratios here")
    p.add_argument("benchmark", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS]: a script in benchmarks/")
    args = p.parse_args(argv)
    bench = [a for a in args.benchmark if a != "--"]
    if not bench or args.rounds < 1:
        p.error("give -- SCRIPT [ARGS] and --rounds >= 1")
    commit = subprocess.run(["git", "rev-parse", "--verify", args.base], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode != 0:
        p.error(f"--base {args.base!r} is not a commit of this repository")
    with tempfile.TemporaryDirectory(prefix="clead-base-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_tree), args.base], cwd=ROOT, check=True)
        try:
            rounds = []
            for r in range(args.rounds):
                order = [("base", base_tree), ("this", ROOT)]
                row = {}
                for name, tree in (order if r % 2 == 0 else order[::-1]):
                    row[name] = figures(run(tree, bench[0], bench[1:], Path(tmp) / f"{name}{r}.json"))
                rounds.append(row)
                print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{k} {row['this'][k] / row['base'][k]:.3f}" for k in row["this"] if k in row["base"]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT)
    keys = [k for k in rounds[0]["this"] if k in rounds[0]["base"]]
    summary = {k: statistics.median(r["this"][k] / r["base"][k] for r in rounds) for k in keys}
    print(f"{' '.join(bench)}: this tree / {args.base}, median of {args.rounds} rounds (> 1: this is slower)")
    for k, v in summary.items():
        print(f"  {k}: {v:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, "benchmark": bench, "rounds": rounds,
                                               "ratio_this_over_base": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
