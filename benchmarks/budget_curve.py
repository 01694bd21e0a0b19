"""The budget curve and the lambda sweep: does C-LEAD online's advantage over PGD-AT survive as the baseline
converges? PGD-AT, TRADES and C-LEAD online (lambda 0.5) trained on mnist5k at growing budgets, several
seeds; every point scored on the SAME test images by APGD-CE + APGD-T (AutoAttack's custom version). Plus a
lambda sweep of C-LEAD online at one budget and one seed.

    python benchmarks/budget_curve.py                          # the whole grid (resumable), CPU
    python benchmarks/budget_curve.py --device cuda            # the same grid on a GPU
    python benchmarks/budget_curve.py --summary                # tables of the points on disk (+ --plot FILE)
    python benchmarks/budget_curve.py --summary --readme README.md   # + the README's budget and verdict blocks

One JSON file per point in --out, named by its key (dataset, method, epochs, seed, lambda) and written
atomically once the point is trained AND scored by one process: a file never mixes two runs. Each file also
holds the grid's settings (training images, PGD steps, scored images, ...); a file on disk with other settings
stops the run (use --redo or another --out). A killed point resumes from its per-epoch checkpoint in --runs; a
checkpoint there trained with other settings is never reused: the run stops naming the settings that differ
(--redo trains the point afresh over it).

Refused with one line and exit status 2, before any work: a count out of range (`--n-score -5`, a negative seed,
`--epochs 0`), an infinite or negative lambda, a second run on the same --out or --runs while one is running, and
an unreadable point file (named).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clead_lite.course.budget import (budget_markdown, gap_markdown, lambda_markdown, load_points,  # noqa: E402
                                      plot_budget_curve, point_name, standard_check_markdown, summary_markdown,
                                      verdict_markdown)

from clead_lite.course.checkpoints import CheckpointError  # noqa: E402
from clead_lite.course.safe_io import output_lock, read_json  # noqa: E402
from clead_lite.course.parse import parse_finite  # noqa: E402
from clead_lite.validate import check_int, check_nonnegative, check_seed  # noqa: E402

METHODS = ("pgd_at", "trades", "clead_online")
PROG = Path(__file__).name
# the count arguments (one value or a list) and the smallest value each allows; the seeds are checked as seeds
COUNTS = {"epochs": 1, "sweep_epochs": 1, "n_train": 2, "n_val": 0, "attack_steps": 1, "n_score": 1,
          "standard_n": 1, "only": 0}


def grid(args) -> list[dict]:
    """Every point's key, the budget curve first (small budgets first), then the lambda sweep; no duplicates."""
    points, seen = [], set()
    for epochs in args.epochs:
        for seed in args.seeds:
            for method in args.methods:
                points.append(dict(method=method, epochs=epochs, seed=seed,
                                   lam=args.lam if method == "clead_online" else None))
    for lam in args.sweep_lambdas:
        points.append(dict(method="clead_online", epochs=args.sweep_epochs, seed=args.sweep_seed, lam=lam))
    out = []
    for p in points:
        key = (p["method"], p["epochs"], p["seed"], p["lam"])
        if key not in seen:
            seen.add(key)
            out.append({"dataset": args.dataset, **p})
    return out


def settings(args) -> dict:
    """What every point of one grid shares; a point file with other settings belongs to another run."""
    return {"dataset": args.dataset, "n_train": args.n_train, "n_val": args.n_val, "profile": "quick",
            "attack_steps": args.attack_steps, "n_score": args.n_score, "score_seed": 0, "attacks": ["apgd-ce", "apgd-t"]}


def _code_version() -> str:
    """The commit this point's code was checked out at (+ '-dirty' when the tree had changes)."""
    from clead_lite.course.results import code_version
    return code_version(ROOT)


def _images_sha256(x, y) -> str:
    """A fingerprint of the training images and labels (before the held-out split)."""
    import hashlib
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def run_point(key: dict, args, runs: Path) -> dict:
    """Train one point (resumable) and score it; the result dict of its file."""
    import torch

    from clead_lite.course.datasets import load_dataset
    from clead_lite.course.autoattack import autoattack_accuracy
    from clead_lite.evaluation import accuracy
    from clead_lite.models import build_model
    from clead_lite.course.profiles import get_device, get_profile, seed_everything
    from clead_lite.course.profiles import train_config
    from clead_lite.course.runs import Checkpoint
    from clead_lite.course.scoring import score_model
    from clead_lite.training import TrainConfig, train

    device = get_device(args.device)
    profile = get_profile("quick", dataset=args.dataset)
    x, y = load_dataset(args.dataset, "train")
    if args.n_train < len(y):
        x, y = load_dataset(args.dataset, "train", n=args.n_train, seed=key["seed"])
    changes = dict(epochs=key["epochs"], seed=key["seed"], attack_steps=args.attack_steps, n_val=args.n_val)
    if key["lam"] is not None:
        changes["contrastive_weight"] = float(key["lam"])
    ckpt = runs / point_name(**key).replace(".json", ".pt")
    cfg = train_config(profile, key["method"], **changes)
    seed_everything(key["seed"])
    model = build_model(profile.model, num_classes=profile.info.num_classes)
    t = time.perf_counter()
    try:   # a killed point resumes; its checkpoint is refused (before any epoch) when its settings or images differ
        res = train(model, x, y, cfg, dataset=args.dataset, device=device, progress=False,
                    hook=Checkpoint(ckpt, resume=True))
    except CheckpointError as e:
        if not args.redo:     # a point is its model: never trained on from another run's checkpoint
            raise CheckpointError(f"{e} (budget_curve.py: --redo trains this point afresh over it, or pass "
                                  "another --runs)") from None
        print(f"note: {ckpt} was trained with other settings; --redo: training the point afresh", flush=True)
        ckpt.unlink()
        seed_everything(key["seed"])
        model = build_model(profile.model, num_classes=profile.info.num_classes)
        res = train(model, x, y, cfg, dataset=args.dataset, device=device, progress=False,
                    hook=Checkpoint(ckpt, resume=True))
    train_seconds = time.perf_counter() - t
    xt, yt = load_dataset(args.dataset, "test", n=args.n_score, seed=0)    # the same images for every point
    xt, yt = xt.to(device), yt.to(device)
    t = time.perf_counter()
    scores = score_model(res.model, xt, yt, profile.eps, columns=("apgd",), seed=0)
    result = {"clean": accuracy(res.model, xt, yt), "apgd": scores["apgd"], "apgd_correct": scores["apgd_correct"],
              "n_scored": scores["n_scored"], "score_seconds": time.perf_counter() - t,
              "train_seconds": train_seconds, "best_epoch": res.best_epoch, "best_val_acc": res.best_val_acc,
              "epochs_run": res.epochs_run, "config": res.config.to_dict(), "device": str(device),
              "torch": torch.__version__, "code_version": _code_version(),
              "train_images_sha256": _images_sha256(x, y),
              "images": f"a random {args.n_score} of the {args.dataset} test split drawn with seed 0, every point"}
    if args.standard_check and key["epochs"] == max(args.epochs) and key["seed"] == args.seeds[0]:
        t = time.perf_counter()   # is the custom version within a point of the standard one here?
        k = min(args.standard_n, len(yt))          # the first k of the scored images, and their custom score
        result["autoattack"] = autoattack_accuracy(res.model, xt[:k], yt[:k], profile.eps, version="standard", seed=0)
        result["autoattack_n"] = k
        result["apgd_on_autoattack_images"] = sum(scores["apgd_correct"][:k]) / k
        result["autoattack_seconds"] = time.perf_counter() - t
    return result


def run_points(args, out: Path, runs: Path) -> int:
    """Train and score the grid's points that are not on disk yet; 2 (said on stderr) when a point on disk was
    made with other settings, else 0."""
    mine = settings(args)
    todo = []
    for key in grid(args):
        path = out / point_name(**key)
        if path.exists() and not args.redo:
            theirs = read_json(path, "budget-curve point").get("settings")
            if theirs != mine:
                print(f"{path} was made with other settings ({theirs}); use --redo or another --out",
                      file=sys.stderr)
                return 2
            continue
        todo.append(key)
    print(f"{len(todo)} point(s) to run of {len(grid(args))}", flush=True)
    for i, key in enumerate(todo[:args.only] if args.only is not None else todo):
        t = time.perf_counter()
        result = run_point(key, args, runs)
        path = out / point_name(**key)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps({"key": key, "settings": mine, "result": result,
                                       "command": "python benchmarks/budget_curve.py " + " ".join(sys.argv[1:])},
                                      indent=1))
        os.replace(partial, path)
        print(f"[{i + 1}/{len(todo)}] {path.name}: clean {result['clean']:.3f}, APGD-CE+T {result['apgd']:.3f} "
              f"({result['train_seconds']:.0f} s training, {result['score_seconds']:.0f} s scoring; "
              f"{time.perf_counter() - t:.0f} s)", flush=True)
    return 0


def check_arguments(args) -> None:
    """ValueError (one line) for a count out of range, a seed outside [0, 2**32 - 1], a negative lambda or more
    held-out than training images."""
    for name, minimum in COUNTS.items():
        value = getattr(args, name)
        for v in value if isinstance(value, list) else [] if value is None else [value]:
            check_int(v, "--" + name.replace("_", "-"), minimum)
    for flag, seeds in (("--seeds", args.seeds), ("--sweep-seed", [args.sweep_seed])):
        for seed in seeds:
            check_seed(seed, flag)
    for flag, lambdas in (("--lam", [args.lam]), ("--sweep-lambdas", args.sweep_lambdas)):
        for lam in lambdas:
            check_nonnegative(lam, flag)
    if args.n_val >= args.n_train:
        raise ValueError(f"--n-val ({args.n_val}) must be smaller than --n-train ({args.n_train})")


def fail(message: str):
    """One line on stderr and exit status 2: bad arguments (argparse's `error`), a bad file, a second run."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    try:
        return run_grid(argv)
    except (OSError, ValueError, CheckpointError) as e:
        if os.environ.get("CLEAD_DEBUG"):
            raise
        fail(" ".join(str(e).split()))


def run_grid(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = fail
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--epochs", nargs="+", type=int, default=[5, 10, 20], help="the budgets")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--lam", type=parse_finite, default=0.5, help="C-LEAD online's lambda on the budget curve")
    p.add_argument("--sweep-lambdas", nargs="*", type=parse_finite, default=[0.0, 0.1, 0.5, 1.0, 2.0])
    p.add_argument("--sweep-epochs", type=int, default=10)
    p.add_argument("--sweep-seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=4000, help="training images (--n-val of them held out)")
    p.add_argument("--n-val", type=int, default=500, help="held-out images: the best held-out PGD epoch is kept")
    p.add_argument("--attack-steps", type=int, default=5, help="PGD steps of the training attack")
    p.add_argument("--n-score", type=int, default=500, help="test images scored by APGD-CE + APGD-T")
    p.add_argument("--standard-check", action="store_true", help="also the standard AutoAttack at the largest "
                   "budget, first seed (is the custom version within a point of it?)")
    p.add_argument("--standard-n", type=int, default=500, help="--standard-check on the first this many scored images")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "budget"))
    p.add_argument("--runs", default=str(ROOT / "data" / "runs" / "budget"))
    p.add_argument("--redo", action="store_true", help="replace points on disk (also those of another run)")
    p.add_argument("--summary", action="store_true", help="only print the tables of the points on disk")
    p.add_argument("--plot", default=None, help="also save the budget-curve figure to this file")
    p.add_argument("--readme", default=None, help="also write the tables into this file's <!-- budget --> block "
                   "and the verdict sentence (budget.verdict_markdown) into its <!-- verdict --> block")
    p.add_argument("--only", type=int, default=None, help="run at most this many missing points, then stop")
    args = p.parse_args(argv)
    for name in ("epochs", "seeds"):
        if not getattr(args, name):
            p.error(f"--{name} needs at least one value")
    check_arguments(args)
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    if not args.summary:
        with output_lock(out), output_lock(runs):    # one run at a time on these points and checkpoints
            if run_points(args, out, runs):
                return 2
    for f in sorted(out.glob("*_e*_s*_lam*.json")):   # a damaged point is named, not a bare JSONDecodeError
        read_json(f, "budget-curve point")
    frame = load_points(out)
    print(budget_markdown(frame, provenance=True), gap_markdown(frame), lambda_markdown(frame), standard_check_markdown(frame),
          sep="\n\n")
    print(verdict_markdown(frame))
    if args.readme:
        from clead_lite.course.results import replace_marked_block
        try:
            replace_marked_block(args.readme, "budget", summary_markdown(frame))
            replace_marked_block(args.readme, "verdict", verdict_markdown(frame))
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        print(f"updated the budget and verdict blocks of {args.readme}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        ax = plot_budget_curve(frame)
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
