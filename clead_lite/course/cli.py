"""The command line: everything a notebook trains can be trained and evaluated from a terminal.

    python -m clead_lite train --method pgd_at --dataset mnist --profile quick --seed 0
    python -m clead_lite evaluate data/runs/mnist_pgd_at_quick_seed0.pt --n-autoattack 1000 --json out.json
    python -m clead_lite demo --profile smoke
    python -m clead_lite store list                     # the model store: trained once, loaded afterwards

Subcommands are registered in COMMANDS (name -> function that adds its parser); each parser sets
`func(args) -> int`. Bad arguments and unusable inputs print one clear line to stderr and exit with 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from .profiles import DATASETS, PROFILE_NAMES, faithful_config, train_config
from .parse import parse_finite, parse_fraction, parse_seed

METHOD_CHOICES = ("standard", "pgd_at", "trades", "clead_online", "clead_faithful")


class UsageError(ValueError):
    """A bad combination of arguments found after parsing (exit code 2)."""


# ============================================================================================== helpers
def _runs_dir() -> Path:
    from .checkpoints import checkpoint_dir
    return checkpoint_dir().parent / "runs"


def _command_line() -> str:
    return "python -m clead_lite " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _plain(value):
    """JSON-safe: NaN -> None, tensors -> lists."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _load_model(path: str | Path, device):
    """(model in eval mode, checkpoint dict) from a checkpoint written by `train`."""
    from .checkpoints import load_trained_model
    return load_trained_model(path, device)


def _test_split(dataset: str, n: int | None):
    """The first n test images (`data.test_images`): the images the notebooks and the manifest score too."""
    from .datasets import test_images
    return test_images(dataset, n)


# ============================================================================================== train
def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (standard, pgd_at, trades, clead_online, clead_faithful)",
                       description="Train one model and save it (with its history) as a checkpoint.")
    p.add_argument("--method", required=True, choices=METHOD_CHOICES)
    p.add_argument("--dataset", choices=tuple(DATASETS), default=None,
                   help="default: the profile's dataset (CLEAD_DATASET)")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="sizes and settings (default: CLEAD_PROFILE, else colab on a GPU, quick on a CPU)")
    p.add_argument("--seed", type=parse_seed, default=0, help="an integer in [0, 2**32 - 1]")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lambda", dest="contrastive_weight", type=parse_finite, default=None,
                   help="weight of the contrastive term (clead_online)")
    p.add_argument("--beta", dest="trades_beta", type=parse_finite, default=None,
                   help="trades: weight of the KL term (default 6)")
    p.add_argument("--faithful-recipe", dest="faithful_recipe", choices=("authors", "course-v1"), default=None,
                   help="clead_faithful: the authors' code (default) or this course's first version")
    p.add_argument("--out", default=None, help="checkpoint path (default data/runs/<dataset>_<method>_<profile>_seed<seed>.pt; "
                   "when that holds an earlier run, the next free '-2', '-3', ... name: nothing is replaced)")
    p.add_argument("--lr", type=parse_finite, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eps", type=parse_fraction, default=None, help="training eps, e.g. 0.3 or 8/255 (default: the dataset's)")
    p.add_argument("--attack-steps", type=int, default=None, help="PGD steps for the training examples")
    p.add_argument("--schedule", choices=("onecycle", "piecewise", "constant", "step"), default=None)
    p.add_argument("--n-train", type=int, default=None, help="training images (default: the profile's)")
    p.add_argument("--n-val", type=int, default=None, help="held-out images for early stopping (0: none)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    p.add_argument("--temperature", type=parse_finite, default=None)
    p.add_argument("--clean-ce", action="store_true", help="clead_online: add CE on clean images")
    p.add_argument("--split-views", action="store_true", help="clead_online: clean and adversarial images in two "
                   "forward passes (own BatchNorm statistics; running statistics from the adversarial pass only)")
    p.add_argument("--supcon", action="store_true", help="clead_online: supervised-contrastive positives")
    p.add_argument("--attack-loss", choices=("ce", "contrastive"), default=None,
                   help="clead_online: craft the views against CE or the contrastive loss")
    p.add_argument("--amp", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA if available)")
    p.add_argument("--resume", action="store_true", help="continue from --out if it exists")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after training")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", default=None, help="write the evaluation row and the settings to this JSON file")
    p.add_argument("--retrain", action="store_true",
                   help="train even when the model store already has a model with these settings")
    p.set_defaults(func=cmd_train)


# the value options that override the profile's TrainConfig: (flag, argparse dest, TrainConfig field)
_CONFIG_OPTIONS = (("--epochs", "epochs", "epochs"), ("--lambda", "contrastive_weight", "contrastive_weight"),
                   ("--lr", "lr", "lr"), ("--batch-size", "batch_size", "batch_size"), ("--eps", "eps", "eps"),
                   ("--attack-steps", "attack_steps", "attack_steps"), ("--schedule", "schedule", "schedule"),
                   ("--n-val", "n_val", "n_val"), ("--patience", "patience", "early_stop_patience"),
                   ("--temperature", "temperature", "temperature"), ("--attack-loss", "attack_loss", "attack_loss"),
                   ("--beta", "trades_beta", "trades_beta"))


def _train_config(args, profile, out=None):
    changes = {field: getattr(args, dest) for _, dest, field in _CONFIG_OPTIONS if getattr(args, dest) is not None}
    if args.clean_ce:
        changes["clean_ce"] = True
    if args.supcon:
        changes["supervised_contrastive"] = True
    if args.split_views:
        changes["split_views"] = True
    changes["amp"] = {"auto": None, "on": True, "off": False}[args.amp]
    changes.update(seed=args.seed, compile=args.compile)
    online_only = [f for f in ("clean_ce", "supervised_contrastive", "attack_loss", "split_views") if f in changes]
    if online_only and args.method != "clead_online":
        raise UsageError(f"--{online_only[0].replace('_', '-').replace('supervised-contrastive', 'supcon')} only "
                         f"applies to --method clead_online (got --method {args.method})")
    for flag, value, method in (("--beta", args.trades_beta, "trades"),
                                ("--faithful-recipe", args.faithful_recipe, "clead_faithful")):
        if value is not None and args.method != method:
            raise UsageError(f"{flag} only applies to --method {method} (got --method {args.method})")
    return train_config(profile, args.method, **changes)


def _faithful_config(args, profile):
    """The pipeline's settings of `--method clead_faithful` (None for the other methods)."""
    if args.method != "clead_faithful":
        return None
    return faithful_config(profile, **({"faithful_recipe": args.faithful_recipe} if args.faithful_recipe else {}))


def cmd_train(args) -> int:
    from .ddp import process_group
    with process_group(args.device) as device:   # under torchrun: the group of the data-parallel processes
        return _cmd_train(args, device)


def _cmd_train(args, device) -> int:
    from .profiles import get_profile

    profile = get_profile(args.profile, dataset=args.dataset)
    dataset = profile.dataset
    main_rank = int(os.environ.get("RANK", "0")) == 0   # under torchrun only rank 0 writes and evaluates
    out = Path(args.out) if args.out else _default_out(args, dataset, profile, main_rank)
    cfg = _train_config(args, profile, out)
    if args.n_train is not None and args.n_train < 2:
        raise UsageError(f"--n-train must be at least 2, got {args.n_train}")
    if not main_rank:
        return _train_and_save(args, profile, dataset, cfg, device, out, False)
    # before the work: an --out that is not ours (a device, a FIFO, a link, a shipped checkpoint, the --json file),
    # a folder, read-only or locked by another run fails now
    from .safe_io import check_output, check_writable, output_lock
    outputs = {out: "the checkpoint (--out)"}
    if args.method == "clead_faithful":
        outputs[out.with_name(f"{out.stem}.surrogate{out.suffix or '.pt'}")] = "the surrogate checkpoint of --out"
    check_output(out, "checkpoint (--out)")
    check_writable(out, "checkpoint (--out)", hint="pass --out with a file in a writable folder")
    if args.json:
        check_output(args.json, "--json file", others=outputs)
        check_writable(args.json, "--json file", hint="pass --json with a file in a writable folder")
    with output_lock(out):
        if args.out and not args.resume:
            _refuse_unfinished(out)
        try:
            return _train_and_save(args, profile, dataset, cfg, device, out, True)
        except KeyboardInterrupt:
            print(_interrupted(args, out), file=sys.stderr, flush=True)
            return 130


def _default_out(args, dataset: str, profile, main_rank: bool) -> Path:
    """data/runs/<dataset>_<method>_<profile>_seed<seed>.pt, or with --resume that file; when it holds an earlier
    run, the first free '-2', '-3', ... name (said on stderr): a default never replaces a run."""
    base = _runs_dir() / f"{dataset}_{args.method}_{profile.name}_seed{args.seed}.pt"
    if args.resume or not (base.exists() or base.is_symlink()):
        return base
    n = 2
    while True:
        candidate = base.with_name(f"{base.stem}-{n}{base.suffix}")
        if not (candidate.exists() or candidate.is_symlink()):
            break
        n += 1
    if main_rank:
        print(f"note: {base} holds an earlier run (kept); this run writes {candidate}. --out names the file, "
              "--resume continues the earlier run", file=sys.stderr, flush=True)
    return candidate


def _checkpoint_progress(out: Path) -> dict | None:
    """{'epoch', 'epochs', 'finished'} of the training checkpoint at `out`, else None (absent or unreadable)."""
    from .checkpoints import load_checkpoint
    try:
        if not out.is_file():
            return None
        state = load_checkpoint(out, map_location="cpu")
    except Exception:  # noqa: BLE001 - not a usable checkpoint: nothing to resume
        return None
    if state.get("kind") != "train" or "epoch" not in state:
        return None
    return {"epoch": state.get("epoch"), "epochs": (state.get("config") or {}).get("epochs"),
            "finished": bool(state.get("finished"))}


def _refuse_unfinished(out: Path) -> None:
    """An explicit --out holding an interrupted run is not replaced by a fresh start without a word."""
    done = _checkpoint_progress(out)
    if done is not None and not done["finished"]:
        raise UsageError(f"{out} holds an unfinished run (after epoch {done['epoch']} of {done['epochs']}): add "
                         "--resume to continue it, or pass another --out (or delete the file) to start afresh")


def _interrupted(args, out: Path) -> str:
    """What Ctrl-C kept and how to go on."""
    done = _checkpoint_progress(out)
    again = _command_line()
    if not args.out:
        again += f" --out {shlex.quote(str(out))}"
    if done is None:
        return f"interrupted before the first epoch ended: nothing was kept; to start again: {again}"
    if done["finished"]:
        return (f"interrupted after training: {out} holds the finished model (its test metrics were not added); "
                f"evaluate it with: python -m clead_lite evaluate {shlex.quote(str(out))}")
    resume = again if args.resume else again + " --resume"
    return (f"interrupted: kept {out} (after epoch {done['epoch']} of {done['epochs']}); to continue it: {resume}")


def _train_and_save(args, profile, dataset, cfg, device, out: Path, main_rank: bool) -> int:
    import torch

    from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
    from .datasets import load_dataset
    from ..faithful import train_faithful
    from ..models import build_model
    from .profiles import seed_everything
    from .runs import Checkpoint
    from .views_cache import ViewsCache
    from ..training import train

    n_train = args.n_train if args.n_train is not None else profile.n_train
    faithful = _faithful_config(args, profile)
    x, y = load_dataset(dataset, "train", n=n_train, seed=args.seed) if n_train else load_dataset(dataset, "train")
    options = (("--n-train", "n_train", None),) + _CONFIG_OPTIONS + (("--faithful-recipe", "faithful_recipe", None),)
    overrides = [f"{flag} {getattr(args, dest)}" for flag, dest, _ in options if getattr(args, dest) is not None]
    print(f"{profile.describe()}" + (f" (overridden: {' '.join(overrides)})" if overrides else "") +
          ("" if main_rank else f" [rank {os.environ.get('RANK')}]") + f"\ntraining {args.method} on {len(y)} {dataset} images for {cfg.epochs} epoch(s), "
          f"eps {cfg.eps if cfg.eps is not None else DATASETS[dataset].eps:.4g}, "
          f"PGD-{cfg.attack_steps} in training, seed {args.seed}, device {device}, checkpoint {out}", flush=True)
    seed_everything(args.seed)
    t0 = time.perf_counter()
    surrogate_path = None
    key, hit = _store_lookup(args, profile, cfg, faithful, x, y, out)
    loaded = None
    if hit is not None:
        from .store import load_hit
        loaded = load_hit(hit, device)     # None: a stored file that no longer fits (warned): trained again
        hit = hit if loaded is not None else None
    if key is not None and hit is None and main_rank:   # before the work: will the store take the model?
        from .store import check_store_writable
        with torch.random.fork_rng(devices=[]):     # the probe's model leaves the seeded streams alone
            problem = check_store_writable(build_model(profile.model, num_classes=profile.info.num_classes))
        if problem:
            print(f"warning: the model will be trained and written to {out}, but not stored: {problem}",
                  file=sys.stderr, flush=True)
            key = None
    if hit is not None:
        model, stored = loaded
        surrogate, history = None, list(stored.get("history") or [])
        if main_rank:
            save_checkpoint(out, {k: v for k, v in stored.items() if k != "store_key"})
        print(f"found this model in the store ({hit.source}: {hit.path}); not training (--retrain trains anyway)",
              flush=True)
    elif args.method == "clead_faithful":
        result = train_faithful(x, y, cfg, faithful, dataset=dataset, model_name=profile.model,
                                device=device,
                                progress=not args.no_progress, cache=ViewsCache(progress=not args.no_progress),
                                hook=Checkpoint(out, resume=args.resume, settings=faithful.to_dict()))
        model, surrogate = result.model, result.surrogate
        history = [dict(r) for r in result.history]
        surrogate_path = str(out.with_name(f"{out.stem}.surrogate{out.suffix or '.pt'}"))
    else:
        model = build_model(profile.model, num_classes=profile.info.num_classes)
        result = train(model, x, y, cfg, dataset=dataset, device=device, progress=not args.no_progress,
                       hook=Checkpoint(out, resume=args.resume))
        model, surrogate, history = result.model, None, list(result.history)
    seconds = time.perf_counter() - t0 if hit is None else float(stored.get("train_seconds") or 0.0)
    if not main_rank:
        return 0
    if hit is None and key is not None:
        from .store import save_model
        try:
            path = save_model(key, model, cfg, history, command=_command_line(), seconds=seconds,
                              faithful=faithful)
            print(f"saved to the model store: {path}", flush=True)
        except OSError as e:     # the store is a cache: the run's own checkpoint is what counts
            print(f"warning: not stored in the model store ({e}); the model is in {out}", file=sys.stderr, flush=True)

    row = None
    if not args.no_eval:
        from ..evaluation import evaluate
        xt, yt = _test_split(dataset, profile.n_eval)
        row = evaluate(model, xt, yt, eps=profile.eps, steps=profile.eval_steps, restarts=profile.eval_restarts,
                       source=surrogate, name=f"{args.method} (seed {args.seed})",
                       source_name="surrogate (standard)" if surrogate is not None else None)
    try:
        state = load_checkpoint(out)
    except (OSError, CheckpointError):   # the hook's file is gone or damaged: the model in memory is the result
        from .checkpoints import model_metadata
        state = {"format": 1, "kind": "train", **model_metadata(model), "model": model.state_dict(),
                 "config": cfg.to_dict(), "finished": True, "epoch": len([r for r in history if r.get("kind") == "epoch"])}
    state.update(method=args.method, dataset=dataset, profile=profile.name, seed=args.seed, history=history,
                 command=_command_line(), train_seconds=seconds, surrogate=surrogate_path,
                 metrics=_plain({k: row[k] for k in ("clean", "fgsm", "pgd", "transfer", "n", "eps", "steps",
                                                     "restarts")} if row else {}))
    out = _save_or_fallback(out, state)   # saved before anything is printed: a broken terminal loses nothing
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB, {seconds:.1f} s of training)", flush=True)
    if row is not None:
        from .tables import format_table
        print(format_table([row]), flush=True)
    if args.json:
        _write_json(args.json, {"checkpoint": str(out), "method": args.method, "dataset": dataset,
                                "profile": profile.name, "seed": args.seed,
                                "config": {**cfg.to_dict(), **(faithful.to_dict() if faithful else {})},
                                "train_seconds": seconds, "row": row, "command": _command_line(),
                                "test_images": f"the first {row['n']} of the {dataset} test split" if row else None,
                                "device": str(device), "torch": torch.__version__})
    return 0


def _store_lookup(args, profile, cfg, faithful, x, y, out: Path):
    """(store key, StoreHit or None); (None, None) in smoke (never stored) or with the store off. A --resume run
    of an existing checkpoint is not looked up (it continues its own file) but is stored when it ends."""
    from .store import find, model_key, store_dir
    if not profile.use_checkpoints or store_dir() is None:
        return None, None
    key = model_key(args.method, profile.dataset, profile.model, profile.name, cfg, x, y, faithful)
    resuming = args.resume and out.exists()
    return key, (None if args.retrain or resuming else find(key))


def _save_or_fallback(out: Path, state: dict) -> Path:
    """save_checkpoint(out, state); when that fails after the work (a full disk, a folder made read-only), the
    trained model goes to a fallback path (the current, home or temporary folder) and stderr says where."""
    from .checkpoints import save_checkpoint
    from .safe_io import fallback_path
    try:
        return save_checkpoint(out, state)
    except OSError as e:
        other = fallback_path(out)
        if other is None:
            raise
        save_checkpoint(other, state)
        print(f"warning: {e}; the trained model was written to {other} instead (move it where you want it)",
              file=sys.stderr, flush=True)
        return other


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
    p.add_argument("--eps", type=parse_fraction, default=None, help="e.g. 0.3 or 8/255 (default: the dataset's standard eps)")
    p.add_argument("--sanity", action="store_true", help="also run the automated sanity checks")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_evaluate)


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


# ============================================================================================== main
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


def _write_json(path: str, data: dict) -> None:
    from .safe_io import OutputError, fallback_path, refuse_special, temp_path, write_error
    p = Path(path)
    text = json.dumps(_plain(data), indent=2) + "\n"

    def write(target: Path) -> None:
        refuse_special(target, "JSON file")
        tmp = temp_path(target)
        try:   # atomic: a kill or a full disk never leaves half a JSON file
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_error(target, e) from e

    try:
        write(p)
    except OSError as e:
        other = fallback_path(p)
        if other is None or isinstance(e, OutputError) and "refusing" in str(e):
            raise
        write(other)
        print(f"warning: {e}; the JSON was written to {other} instead", file=sys.stderr, flush=True)
        p = other
    print(f"wrote {p}")


if __name__ == "__main__":
    sys.exit(main())
