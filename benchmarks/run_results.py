"""Train and evaluate the results table: standard, PGD-AT, TRADES, C-LEAD online and C-LEAD faithful on
MNIST (eps 0.3) and FashionMNIST (eps 0.1), several seeds, through the command line (`python -m clead_lite`),
so every row records the exact commands that reproduce it.

    CLEAD_DATA_ROOT=../shared/data python benchmarks/run_results.py            # all rows (resumable)
    CLEAD_DATA_ROOT=... python benchmarks/run_results.py --grid converged --device cuda   # the GPU grid
    python benchmarks/run_results.py --summary [--readme README.md] [--details benchmarks/RESULTS.md]   # tables only

Each row: `train --no-eval` then `evaluate --sanity --json`: clean, FGSM, PGD-k with restarts, AutoAttack
(standard) on a subset, transfer from the standard model of the same seed (for the faithful mode: its own
surrogate, a standard model too), and the sanity-check report; then (`clead_lite.course.scoring`) APGD-CE + APGD-T
and Square alone on the first --n-score of the evaluated images with per-image correctness (for the paired
intervals against PGD-AT), and a PGD eps curve. Rows already on disk are skipped (a row without scores only
gets its scores).

Each new row also records what trained it (`trained_with`): the checkpoint's whole training config (learning rate,
lambda = contrastive_weight, tau = temperature, beta = trades_beta, batch size, ...), the code version (git
commit, '-dirty' with uncommitted changes) and the checkpoint's fingerprint of the training images (dataset, n,
sha256). Rows written before 2026-12-06 hold none of these; the tables say "not recorded" for them.

Grids (--grid): 'default' = the options as given; 'converged' = full MNIST and FashionMNIST (60,000 training
images), 20 epochs, PGD-10 in training, seeds 0-4, the standard AutoAttack on 1,000 images of every seed,
APGD-CE + APGD-T / Square on 1,000: sized for a GPU (--device cuda). Not run yet (no GPU lent).

What budget the converged grid expects to converge at, and why it may not: 20 epochs of 59,500 images at batch
128 are 9,280 optimizer steps (464 per epoch). The mnist5k budget curve (benchmarks/budget_curve.py, README) is
the only measurement: PGD-AT's APGD-CE + APGD-T accuracy rose from 59.0 % at 216 steps (8 epochs) to 77.3 % at 432
(16 epochs), 85.5 % at 864 (32), 87.7 % at 1,728 (64) and 88.4 % at 3,456 (128; 3 seeds up to 32 epochs, 5 at 64
and 128): the mean gain per doubling fell from +8.1 to +2.3 to +0.7 points, but the last change's intervals
([-0.8, +2.3]) do not show a plateau within ±1 point, and some 128-epoch runs kept epochs as late as 123. 9,280
steps are 2.7x the largest budget measured, on 17x more images, so PGD-AT is expected, not shown, to be near its
plateau by 20 epochs; Madry et al. trained 100,000 steps of batch 50 (about 83 epochs of MNIST) with PGD-40, and
their model keeps 88.5 % under AutoAttack. PGD-10 in training
(not 40) may also leave the model short of that. So 20 epochs may not converge: read each row's best held-out
epoch (kept / run in the per-seed table); if it is one of the last two, that run was still improving, and the grid
should be run again with --epochs 40 before a row is read as converged.

Refused with one line and exit status 2, before any work: a count out of range (`--n-score -5`, a negative seed,
`--epochs 0`), a second run on the same --out or --runs while one is running, a checkpoint in --runs trained with
other settings than the row's (`--epochs 1`, then `--epochs 2 --redo`: the flags that differ are named; remove the
checkpoint or pass another --runs), and an unreadable row, checkpoint or README file (named).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from clead_lite.course.checkpoints import CheckpointError
from clead_lite.course.results import METHOD_ORDER as METHODS
from clead_lite.course.results import load_results, per_seed_markdown, readme_table, replace_marked_block
from clead_lite.course.safe_io import output_lock, read_json
from clead_lite.validate import check_int, check_seed

ROOT = Path(__file__).resolve().parents[1]
PROG = Path(__file__).name
# the count arguments and the smallest value each allows (the CLI's own limits: --n-train 2, --n-autoattack 0)
COUNTS = {"n_score": 1, "n_train": 2, "epochs": 1, "attack_steps": 1, "n_test": 1, "steps": 1, "restarts": 1,
          "n_autoattack": 0}
SEED_LISTS = ("seeds", "sanity_seeds", "autoattack_seeds", "square_seeds")


def run(cmd: list[str]) -> None:
    print("$", shlex.join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


def rel(path: Path) -> str:
    """`path` relative to the repository (how the recorded commands name it), or absolute outside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def finished(ckpt: Path) -> bool:
    """Whether `ckpt` holds a finished training run (a killed run leaves an epoch checkpoint to resume from)."""
    from clead_lite.course.checkpoints import load_checkpoint
    return ckpt.exists() and bool(load_checkpoint(ckpt, map_location="cpu").get("finished"))


def trained_by(ckpt: Path) -> str:
    from clead_lite.course.checkpoints import load_checkpoint
    command = load_checkpoint(ckpt, map_location="cpu").get("command")
    if not command:
        raise ValueError(f"{ckpt}: the checkpoint records no training command; delete it and run again")
    return command


GRIDS = {"converged": dict(datasets=["mnist", "fashion-mnist"], seeds=[0, 1, 2, 3, 4], n_train=60000, epochs=20,
                           attack_steps=10, n_test=1000, n_autoattack=1000, n_score=1000)}


def trained_with(ckpt: Path) -> dict:
    """What trained the row, from its checkpoint: the whole training config (lr, contrastive_weight = lambda,
    temperature = tau, trades_beta = beta, batch_size, ...), the checkpoint's fingerprint of the training images
    (dataset, n, sha256 of images and labels) and the code version (git commit) of this run: of the training
    too when this run trained the checkpoint, of the evaluation only when it found the checkpoint finished."""
    from clead_lite.course.checkpoints import load_checkpoint
    from clead_lite.course.results import code_version
    state = load_checkpoint(ckpt, map_location="cpu")
    return {"config": state.get("config"), "train_images": state.get("data_fingerprint"),
            "code_version": code_version(ROOT)}


def training_facts(ckpt: Path, args, method: str, dataset: str) -> dict:
    """Which images and epochs trained the row: n_train, n_val (held out of them), epochs, best epoch kept."""
    from clead_lite.course.checkpoints import load_checkpoint
    from clead_lite.course.profiles import get_profile, train_config
    state = load_checkpoint(ckpt, map_location="cpu")
    n_val = train_config(get_profile(args.profile, dataset=dataset), method).n_val
    facts = {"n_train": args.n_train, "n_val": n_val, "epochs": args.epochs,
             "best_epoch": (state.get("best") or {}).get("epoch")}
    if method == "clead_faithful":   # the checkpoint is the linear head's stage
        facts["head_epochs"] = (state.get("config") or {}).get("epochs")
        facts["best_epoch_is"] = "the linear head's, on clean held-out accuracy"
    return facts


def replace_row(row_json: Path, record: dict) -> None:
    """Write `record` next to `row_json` and rename it over the file: a killed run leaves the old row whole."""
    partial = row_json.with_name(row_json.name + ".partial")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, row_json)


def wanted_scores(record: dict, args) -> list[str]:
    """The --score-columns this row should have (Square only for --square-seeds) and does not have yet."""
    have = record.get("scores") or {}
    return [c for c in args.score_columns if c not in have
            and (c != "square" or args.square_seeds is None or record.get("seed") in args.square_seeds)]


def add_scores(record: dict, ckpt: Path, args) -> dict:
    """record + the missing 'scores' columns (APGD-CE + APGD-T, Square, PGD eps curve on the first n_score
    evaluated images); columns already there are kept, so a later run with more columns only adds them."""
    from clead_lite.course.scoring import load_for_scoring, score_model
    model, x, y, state = load_for_scoring(str(ckpt), args.n_test, device=args.device)
    n = min(args.n_score, len(y))
    old = record.get("scores") or {}
    if old and old.get("n_scored") != n:
        raise ValueError(f"{ckpt.name}: its scores are on {old.get('n_scored')} images, --n-score gives {n}; "
                         "use the same --n-score (or --redo)")
    eps = float(record["row"]["eps"])
    t = time.perf_counter()
    new = score_model(model, x[:n], y[:n], eps, columns=wanted_scores(record, args), seed=0)
    scores = {**old, **{k: v for k, v in new.items() if k != "seconds"},
              "seconds": {**old.get("seconds", {}), **new["seconds"]}}
    scores["images"] = f"the first {n} images of the test split (the first {n} of the {len(y)} evaluated)"
    print(f"  scored {ckpt.name}: " + ", ".join(f"{k} {new[k]:.3f}" for k in ("apgd", "square") if k in new)
          + f" ({time.perf_counter() - t:.0f} s)", flush=True)
    return {**record, "scores": scores}


def add_autoattack(record: dict, ckpt: Path, args) -> dict:
    """record with the standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) filled in: `--add-autoattack` for a
    row evaluated without it. The same call as `evaluate --n-autoattack` (a subset drawn with seed 0 from the
    row's evaluated images; all of them when n_autoattack >= n), so the row reads as if evaluated with it."""
    from clead_lite.course.autoattack import autoattack_accuracy
    from clead_lite.course.scoring import load_for_scoring
    model, x, y, _ = load_for_scoring(str(ckpt), args.n_test, device=args.device)
    row = dict(record["row"])
    if int(row["n"]) != len(y):
        raise ValueError(f"{ckpt.name}: the row was evaluated on {row['n']} images, --n-test is {args.n_test}")
    n = min(args.n_autoattack, len(y))
    t = time.perf_counter()
    res = autoattack_accuracy(model, x, y, float(row["eps"]), n=n if n < len(y) else None, seed=0,
                              return_details=True)
    row.update(autoattack=res.accuracy, n_autoattack=n)
    print(f"  standard AutoAttack {ckpt.name}: {res.accuracy:.3f} on {n} ({time.perf_counter() - t:.0f} s)",
          flush=True)
    return {**record, "row": row, "autoattack_correct": [int(v) for v in res.correct.tolist()],
            "autoattack_seconds": time.perf_counter() - t,
            "autoattack_command": shlex.join(["python", "benchmarks/run_results.py"] + sys.argv[1:])}


def run_rows(args, out: Path, runs: Path) -> None:
    """Train, evaluate and score every selected row that is not on disk yet (see the module docstring)."""
    py = [sys.executable, "-m", "clead_lite"]
    device = ["--device", args.device] if args.device else []
    for dataset in args.datasets:
        for seed in args.seeds:
            std_ckpt = runs / f"{dataset}_standard_seed{seed}.pt"
            for method in args.methods:
                row_json = out / f"{dataset}_{method}_seed{seed}.json"
                ckpt = runs / f"{dataset}_{method}_seed{seed}.pt"
                n_autoattack = (args.n_autoattack if args.autoattack_seeds is None or seed in args.autoattack_seeds
                                else 0)
                if args.add_autoattack:
                    if row_json.exists() and ckpt.exists() and n_autoattack:
                        record = read_json(row_json, "row")
                        if record["row"].get("autoattack") is None:
                            refuse_other_model(ckpt, record, row_json)
                            replace_row(row_json, add_autoattack(record, ckpt, args))
                    continue
                if row_json.exists() and not args.redo:
                    record = read_json(row_json, "row")
                    if not args.no_score and wanted_scores(record, args) and ckpt.exists():   # add columns
                        refuse_other_model(ckpt, record, row_json)
                        replace_row(row_json, add_scores(record, ckpt, args))
                    continue
                # written next to the row, renamed over it when complete: a killed run leaves the old row
                partial = row_json.with_name(row_json.name + ".partial")
                settings = {"--method": method, "--dataset": dataset, "--profile": args.profile, "--seed": str(seed),
                            "--n-train": str(args.n_train), "--epochs": str(args.epochs),
                            "--attack-steps": str(args.attack_steps)}
                refuse_other_settings(ckpt, settings, method)    # a row is its model
                train = py + ["train", *[v for kv in settings.items() for v in kv], "--out", rel(ckpt),
                              "--no-eval", "--no-progress"] + device
                if not finished(ckpt) or method == "clead_faithful" and not ckpt.with_suffix(".surrogate.pt").exists():
                    run(train + (["--resume"] if ckpt.exists() else []))   # a killed run continues
                evaluate = py + ["evaluate", rel(ckpt), "--profile", args.profile,
                                 "--n", str(args.n_test), "--steps", str(args.steps), "--restarts",
                                 str(args.restarts), "--n-autoattack", str(n_autoattack)] + device
                if not args.no_sanity and (args.sanity_seeds is None or seed in args.sanity_seeds):
                    evaluate.append("--sanity")
                if method in ("pgd_at", "trades", "clead_online"):
                    evaluate += ["--source", rel(std_ckpt)]
                run(evaluate + ["--json", rel(partial)])
                record = read_json(partial, "row")
                # the command stored in the checkpoint: the one that really trained it (a checkpoint left
                # from an earlier run with other settings would otherwise be mislabelled)
                record["train_command"] = trained_by(ckpt)
                record["evaluate_command"] = record["command"] = shlex.join(
                    ["python", "-m", "clead_lite"] + evaluate[3:] + ["--json", rel(row_json)])
                record["training"] = training_facts(ckpt, args, method, dataset)
                record["trained_with"] = trained_with(ckpt)
                if not args.no_score:
                    record = add_scores(record, ckpt, args)
                replace_row(row_json, record)


def recorded_settings(ckpt: Path, flags, method: str) -> dict[str, str]:
    """What trained `ckpt`, as {flag: value} for the `flags` it records: from the training command a finished
    checkpoint holds; for a killed run (no command yet), from its config and its fingerprint of the training
    images (not the epochs nor the images of clead_faithful, whose file is its last stage's)."""
    from clead_lite.course.checkpoints import load_checkpoint
    state = load_checkpoint(ckpt, map_location="cpu")
    if state.get("command"):
        words = shlex.split(state["command"])
        given = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w in flags}
        return {flag: given.get(flag, "not given") for flag in flags}
    config, images = state.get("config") or {}, state.get("data_fingerprint") or {}
    known = {"--dataset": state.get("dataset"), "--seed": config.get("seed")}
    if method != "clead_faithful":
        known.update({"--method": config.get("method"), "--epochs": config.get("epochs"),
                      "--attack-steps": config.get("attack_steps"), "--n-train": images.get("n")})
    return {k: str(v) for k, v in known.items() if v is not None and k in flags}


def refuse_other_model(ckpt: Path, record: dict, row_json: Path) -> None:
    """ValueError (one line) when a row on disk is about to get new columns from a checkpoint that is not its
    model: the checkpoint's training command must be the one the row recorded (`train_command`)."""
    want = record.get("train_command")
    if want is None:
        raise ValueError(f"{row_json} records no train_command: its model cannot be told from another; run the row "
                         "again with --redo")
    have = trained_by(ckpt)
    if shlex.split(have) != shlex.split(want):
        raise ValueError(f"{ckpt} is not the model of {row_json}: trained by '{have}', the row by '{want}'; "
                         "restore the row's checkpoint or run the row again with --redo")


def refuse_other_settings(ckpt: Path, settings: dict[str, str], method: str) -> None:
    """ValueError (one line) when the checkpoint `ckpt` was trained with other `settings` ({flag: value}) than
    the row's: the row would report settings its model was not trained with. A flag the checkpoint's training
    command lacks counts as different."""
    if not ckpt.exists():
        return
    theirs = recorded_settings(ckpt, settings, method)
    differ = [f"{flag} {theirs[flag]} (this row: {value})" for flag, value in settings.items()
              if flag in theirs and theirs[flag] != value]
    if differ:
        raise ValueError(f"{ckpt} was trained with other settings than this row's: {', '.join(differ)}; remove it "
                         "to train the row again, or pass another --runs")


def check_counts(args) -> None:
    """ValueError (one line) for a count argument out of range or a seed outside [0, 2**32 - 1]."""
    for name, minimum in COUNTS.items():
        check_int(getattr(args, name), "--" + name.replace("_", "-"), minimum)
    for name in SEED_LISTS:
        for seed in getattr(args, name) or ():
            check_seed(seed, "--" + name.replace("_", "-"))


def fail(message: str):
    """One line on stderr and exit status 2: bad arguments (argparse's `error`), a bad file, a second run."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    try:
        return run_all(argv)
    except (OSError, ValueError, CheckpointError, subprocess.CalledProcessError) as e:
        if os.environ.get("CLEAD_DEBUG"):
            raise
        if isinstance(e, subprocess.CalledProcessError):   # the command printed its own message above
            fail(f"`{shlex.join(map(str, e.cmd))}` failed (exit status {e.returncode}; its message is above)")
        fail(" ".join(str(e).split()))


def run_all(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = fail
    p.add_argument("--grid", choices=("default",) + tuple(GRIDS), default="default",
                   help="a preset grid that overrides the sizes below (see the module docstring). 'converged': "
                   "20 epochs = 9,280 steps of full MNIST / FashionMNIST with PGD-10, expected but not shown to "
                   "converge (PGD-AT on the mnist5k budget curve still rises at 864 steps); a run whose best held-out "
                   "epoch is one of its last two was still improving: rerun with --epochs 40")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... for training, evaluation and scoring")
    p.add_argument("--n-score", type=int, default=500, help="images for APGD-CE + APGD-T, Square, eps curve")
    p.add_argument("--score-columns", nargs="+", default=["apgd", "square", "eps_curve"],
                   choices=("apgd", "square", "eps_curve"))
    p.add_argument("--no-score", action="store_true", help="skip the APGD / Square / eps-curve columns")
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--profile", default="quick")
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--attack-steps", type=int, default=5)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--restarts", type=int, default=2)
    p.add_argument("--n-autoattack", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "table"))
    p.add_argument("--runs", default=str(ROOT / "data" / "runs" / "results"))
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity-check report (about 450 attack "
                   "passes per image: the largest cost of a row after AutoAttack)")
    p.add_argument("--sanity-seeds", nargs="+", type=int, default=None,
                   help="run the sanity-check report only for these seeds (default: every seed)")
    p.add_argument("--autoattack-seeds", nargs="+", type=int, default=None,
                   help="run the standard AutoAttack (--n-autoattack images) only for these seeds (default: every "
                   "seed); the other seeds get APGD-CE + APGD-T only")
    p.add_argument("--square-seeds", nargs="+", type=int, default=None,
                   help="score Square alone only for these seeds (default: every seed)")
    p.add_argument("--redo", action="store_true", help="evaluate the selected rows again even if on disk (e.g. "
                   "with a larger --n-autoattack); the file on disk is replaced only when the new row is complete")
    p.add_argument("--add-autoattack", action="store_true", help="only add the standard AutoAttack (--n-autoattack "
                   "images) to rows on disk of --autoattack-seeds that lack it; trains and evaluates nothing else")
    p.add_argument("--summary", action="store_true", help="only print the table of the rows on disk")
    p.add_argument("--readme", default=None, help="also write the table into this file, between "
                   "'<!-- results:start -->' and '<!-- results:end -->' (e.g. README.md)")
    p.add_argument("--details", default=None, help="also write the per-seed table into this file, between "
                   "'<!-- results-per-seed:start -->' and '<!-- results-per-seed:end -->' (e.g. "
                   "benchmarks/RESULTS.md)")
    args = p.parse_args(argv)
    for k, v in GRIDS.get(args.grid, {}).items():
        setattr(args, k, v)
    check_counts(args)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    if not args.summary:
        with output_lock(out), output_lock(runs):    # one run at a time on these rows and checkpoints
            run_rows(args, out, runs)
    for f in sorted(out.glob("*_seed*.json")):      # a damaged row is named, not a bare JSONDecodeError
        read_json(f, "row")
    frame = load_results(out)
    table = readme_table(frame)
    details = per_seed_markdown(frame)
    print(table, details, sep="\n\n")
    if args.readme:
        replace_marked_block(args.readme, "results", table)
        print(f"wrote the table into {args.readme}")
    if args.details:
        replace_marked_block(args.details, "results-per-seed", details)
        print(f"wrote the per-seed table into {args.details}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
