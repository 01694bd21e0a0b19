"""The command line: everything a notebook trains can be trained and evaluated from a terminal.

    python -m clead_lite train --method pgd_at --dataset mnist --profile quick --seed 0
    python -m clead_lite evaluate data/runs/mnist_pgd_at_quick_seed0.pt --n-autoattack 1000 --json out.json
    python -m clead_lite demo --profile smoke
    python -m clead_lite store list                     # the model store: trained once, loaded afterwards

Subcommands are registered in COMMANDS (name -> function that adds its parser); each parser sets
`func(args) -> int`. Bad arguments and unusable inputs print one clear line to stderr and exit with 2.
The `train` subcommand is in `cli_train`, and what both modules use (UsageError, the JSON writer, ...) in
`_cli_common`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from ._cli_common import METHOD_CHOICES, UsageError, _command_line, _test_split, _write_json
from .cli_train import add_train_parser
from .parse import parse_fraction, parse_seed
from .profiles import DATASETS, PROFILE_NAMES, train_config


# ============================================================================================== store
def add_store_parser(sub) -> None:
    p = sub.add_parser("store", help="list or clear the model store (models trained once, loaded afterwards)",
                       description="The model store: models trained by the notebooks or `train`, keyed by "
                                   "everything that determines them; shipped checkpoints are listed too.")
    p.add_argument("action", help="list | clear")
    p.add_argument("--method", default=None, help=f"only this method ({', '.join(METHOD_CHOICES)})")
    p.add_argument("--yes", action="store_true", help="clear: delete without asking")
    p.set_defaults(func=cmd_store)


def cmd_store(args) -> int:
    from .store import clear, describe_store_dir, list_entries, store_dir
    if args.action not in ("list", "clear"):
        raise UsageError(f"unknown store action {args.action!r}; allowed: 'list', 'clear'")
    if args.method is not None and args.method not in METHOD_CHOICES:
        raise UsageError(f"unknown --method {args.method!r}; allowed: {', '.join(map(repr, METHOD_CHOICES))}")
    folder = store_dir()
    if args.action == "list":
        rows = list_entries(args.method)
        print(f"model store: {describe_store_dir()}; {len(rows)} model(s)"
              + (f" of method {args.method}" if args.method else ""))
        for r in rows:
            c = r["config"]
            size = f"{r['size_bytes'] / 1e6:.1f} MB" if isinstance(r.get("size_bytes"), (int, float)) else "?"
            f = {k: "?" if r.get(k) is None else str(r[k]) for k in ("source", "dataset", "method", "profile", "model")}
            print(f"  {f['source']:<7} {f['dataset']:<13} {f['method']:<14} {f['profile']:<6} {f['model']:<14} "
                  f"seed {r['seed']}  {r['n_train']} images  {c.get('epochs')} epoch(s)"
                  + (f"  PGD-{c.get('attack_steps')}" if r["method"] in ("pgd_at", "clead_online") else "")
                  + f"  {size}  {r.get('created') or ''}  {r['file']}")
        return 0
    stored = [r for r in list_entries(args.method) if r["source"] == "store"]
    if not stored and not args.yes:
        print(f"nothing to clear: the store {folder} has no{' ' + args.method if args.method else ''} model")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete {len(stored)} stored model(s) without --yes (not a terminal)")
        answer = input(f"delete {len(stored)} stored model(s) from {folder}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    busy: list = []
    removed = clear(args.method, busy=busy)
    print(f"deleted {len(removed)} model file(s) from {folder} (shipped checkpoints are never deleted)")
    if busy:
        print(f"kept {len(busy)} model(s) that another running process is writing now: "
              f"{', '.join(p.name for p in busy)}; run store clear again when it has finished")
    return 0


# ============================================================================================== evaluate
def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint: clean, FGSM, PGD-k, AutoAttack, transfer",
                       description="Evaluate a trained checkpoint on the test split and print the table.")
    p.add_argument("checkpoint")
    p.add_argument("--source", default=None,
                   help="checkpoint of the model that generates the transfer attack (default: the checkpoint's "
                        "surrogate, if it names one)")
    p.add_argument("--n-autoattack", type=int, default=None,
                   help="test images given to AutoAttack (standard version; default: the profile's)")
    p.add_argument("--json", default=None, help="write the row (and the sanity report) to this JSON file")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="evaluation sizes (default: the checkpoint's profile)")
    p.add_argument("--dataset", choices=tuple(DATASETS), default=None, help="default: the checkpoint's")
    p.add_argument("--n", type=int, default=None, help="test images (default: the profile's n_eval)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default: the profile's)")
    p.add_argument("--restarts", type=int, default=None, help="PGD restarts (default: the profile's)")
    p.add_argument("--eps", type=parse_fraction, default=None,
                   help="e.g. 0.3 or 8/255 (default: the dataset's standard eps)")
    p.add_argument("--sanity", action="store_true", help="also run the automated sanity checks")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)


def _load_model(path: str | Path, device):
    """(model in eval mode, checkpoint dict) from a checkpoint written by `train`."""
    from .checkpoints import load_trained_model
    return load_trained_model(path, device)


def cmd_evaluate(args) -> int:
    from ..evaluation import evaluate, sanity_checks
    from .autoattack import autoattack_accuracy
    from .tables import format_table
    from .profiles import get_device, get_profile

    device = get_device(args.device)
    if args.json:   # before the work: only a file of ours, never the checkpoint evaluated, in a writable folder
        from .safe_io import check_output, check_writable
        check_output(args.json, "--json file", inputs={args.checkpoint: "the checkpoint being evaluated",
                                                       args.source: "the --source checkpoint"})
        check_writable(args.json, "--json file", hint="pass --json with a file in a writable folder")
    model, state = _load_model(args.checkpoint, device)
    dataset = args.dataset or state.get("dataset")
    if dataset is None:
        raise UsageError(f"{args.checkpoint} does not record its dataset: pass --dataset")
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    profile = get_profile(args.profile or state.get("profile"), dataset=dataset)
    source_path = args.source or state.get("surrogate")
    if source_path and not args.source and not Path(source_path).exists():
        print(f"note: the surrogate {source_path} named by the checkpoint is missing; no transfer column",
              file=sys.stderr)
        source_path = None
    source = _load_model(source_path, device)[0] if source_path else None
    for name in ("n", "steps", "restarts", "n_autoattack"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "n_autoattack" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be >= {0 if name == 'n_autoattack' else 1}, got {value}")
    eps = args.eps if args.eps is not None else DATASETS[dataset].eps
    n = args.n or profile.n_eval
    x, y = _test_split(dataset, n)
    n_aa = profile.n_autoattack if args.n_autoattack is None else args.n_autoattack
    n_aa = min(n_aa, len(y))
    steps = args.steps or profile.eval_steps
    restarts = args.restarts or profile.eval_restarts
    label = f"{state.get('method', '?')} (seed {state.get('seed', '?')})"
    print(f"evaluating {args.checkpoint}: {label} on {len(y)} {dataset} test images, L-inf eps {eps:.4g}, "
          f"PGD-{steps} x {restarts} restart(s), AutoAttack (standard) on {n_aa}, transfer from "
          f"{source_path or 'none'}", flush=True)
    row = evaluate(model, x, y, eps=eps, steps=steps, restarts=restarts, source=source,
                   name=label, source_name=Path(source_path).name if source_path else None)
    row.update(autoattack=math.nan, n_autoattack=n_aa)
    if n_aa and eps > 0:     # the original AutoAttack on a seeded subset, in evaluate's batches of 512
        row["autoattack"] = autoattack_accuracy(model, x, y, eps, n=n_aa, seed=0, batch_size=512)
    print(format_table([row]))
    report = None
    if args.sanity:
        report = sanity_checks(model, x, y, eps, steps=steps, restarts=restarts, source=source,
                               undefended=state.get("method") == "standard")
        print(report)
    if args.json:
        _write_json(args.json, {"checkpoint": str(args.checkpoint), "dataset": dataset, "method": state.get("method"),
                                "seed": state.get("seed"), "profile": profile.name, "row": row,
                                "sanity": report.to_dict() if report else None, "command": _command_line(),
                                "test_images": f"the first {len(y)} of the {dataset} test split",
                                "device": str(device)})
    return 0


# ============================================================================================== demo
def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a standard and a PGD-trained SmallCNN briefly, print the table",
                       description="The quickest look at the course: a standard and a PGD-AT model on the "
                                   "offline mnist5k data, evaluated side by side (smoke: seconds, quick: minutes).")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None)
    p.add_argument("--dataset", choices=tuple(DATASETS), default=None,
                   help="default: the profile's (mnist5k offline for smoke and quick)")
    p.add_argument("--seed", type=parse_seed, default=0, help="an integer in [0, 2**32 - 1]")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def _shipped_model(profile, method: str, seed: int, device):
    """The shipped checkpoint of (profile's dataset, method, profile, model, seed), verified and loaded, or
    None when the profile trains its own models or none matches."""
    from .checkpoints import find_checkpoint, load_pretrained, read_manifest
    if not profile.use_checkpoints:
        return None
    path = find_checkpoint(profile.dataset, method, profile.name, profile.model)
    entry = next((e for e in read_manifest()["checkpoints"] if path is not None and e.get("file") == path.name), {})
    if path is None or entry.get("seed") != seed:
        return None
    model, entry = load_pretrained(profile.dataset, method, profile.name, profile.model, device=device)
    print(f"loaded the shipped {method} checkpoint {path.name} (sha256 verified; trained by: "
          f"{entry.get('command') or 'an unrecorded command'}): not trained again", flush=True)
    return model


def cmd_demo(args) -> int:
    from .datasets import load_dataset
    from ..evaluation import evaluate
    from .tables import format_table
    from ..models import build_model
    from .profiles import get_device, get_profile, seed_everything
    from ..training import train

    profile = get_profile(args.profile, dataset=args.dataset)
    device = get_device(args.device)
    n = profile.n_train
    xt, yt = _test_split(profile.dataset, profile.n_eval)
    print(profile.describe(), flush=True)
    rows, models, x = [], {}, None
    for method in ("standard", "pgd_at"):
        shipped = _shipped_model(profile, method, args.seed, device)
        if shipped is not None:     # the course loads the same file: training it again would cost minutes
            models[method] = shipped
            continue
        print(f"no shipped {method} checkpoint for {profile.dataset}/{profile.name}/seed {args.seed}: "
              "training it here", flush=True)
        if x is None:
            x, y = (load_dataset(profile.dataset, "train", n=n, seed=args.seed) if n
                    else load_dataset(profile.dataset, "train"))
        seed_everything(args.seed)
        model = build_model(profile.model, num_classes=profile.info.num_classes)
        cfg = train_config(profile, method, seed=args.seed)
        t0 = time.perf_counter()
        models[method] = train(model, x, y, cfg, dataset=profile.dataset, device=device,
                               progress=not args.no_progress).model
        print(f"trained {method} in {time.perf_counter() - t0:.1f} s", flush=True)
    for method, model in models.items():
        source = models["standard"] if method == "pgd_at" else None
        rows.append(evaluate(model, xt, yt, eps=profile.eps, steps=profile.eval_steps,
                             restarts=profile.eval_restarts, source=source, name=method,
                             source_name="standard" if source is not None else None))
    print(format_table(rows))
    print("clean: accuracy on unmodified test images; fgsm / pgd: white-box attacks at the eps above; "
          "transfer: PGD made on the standard model, scored on the PGD-trained one.")
    return 0


# ============================================================================================== course
def add_course_parser(sub) -> None:
    from .profiles import PROFILE_NAMES
    p = sub.add_parser("course", help="run the whole course headless (every notebook, in order) and time it",
                       description="Execute the notebooks top to bottom in fresh kernels; executed notebooks, "
                                   "figures and a per-notebook time table go to --out.")
    p.add_argument("notebooks", nargs="*", help="names or number prefixes (default: all)")
    p.add_argument("--profile", default=None, choices=PROFILE_NAMES,
                   help="default: $CLEAD_PROFILE, else colab on a GPU and quick otherwise")
    p.add_argument("--out", default="build/course", help="default: build/course")
    p.add_argument("--inplace", action="store_true", help="write executed notebooks back into notebooks/")
    p.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run")
    p.set_defaults(func=cmd_course)


def cmd_course(args) -> int:
    from .runner import run_course
    from .profiles import get_profile
    profile = get_profile(args.profile).name
    rows = run_course(profile, args.out, args.notebooks or None, args.inplace, args.timeout)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


# ============================================================================================== main
COMMANDS = {"train": add_train_parser, "evaluate": add_evaluate_parser, "demo": add_demo_parser,
            "course": add_course_parser, "store": add_store_parser}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clead_lite",
                                     description="C-LEAD course: train and evaluate robust classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    parser = build_parser()
    args = parser.parse_args(argv)          # argparse exits with 2 on bad arguments
    from .checkpoints import CheckpointError
    from .datasets import DatasetNotFoundError
    from ..training import TrainingDivergedError
    try:
        return args.func(args)
    except (UsageError, ValueError, TypeError, OSError, CheckpointError, DatasetNotFoundError,
            TrainingDivergedError) as e:
        if os.environ.get("CLEAD_DEBUG"):
            raise
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _tolerant_streams() -> None:
    """A terminal or pipe whose encoding lacks a character (PYTHONIOENCODING=ascii, a C locale) gets an escape
    instead of a UnicodeEncodeError after the work."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):   # a replaced stream (pytest's capture, a notebook)
            pass


if __name__ == "__main__":
    sys.exit(main())
