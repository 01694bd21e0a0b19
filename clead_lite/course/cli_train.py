"""The `train` subcommand: its options, the TrainConfig they make, where the checkpoint goes, and training
(or the model store's copy) saved, evaluated and reported."""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from ._cli_common import METHOD_CHOICES, UsageError, _command_line, _plain, _test_split, _write_json
from ..config import SCHEDULES
from .parse import parse_finite, parse_fraction, parse_seed
from .profiles import DATASETS, PROFILE_NAMES, faithful_config, train_config


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
    p.add_argument("--out", default=None,
                   help="checkpoint path (default data/runs/<dataset>_<method>_<profile>_seed<seed>.pt; "
                        "when that holds an earlier run, the next free '-2', '-3', ... name: nothing is replaced)")
    p.add_argument("--lr", type=parse_finite, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eps", type=parse_fraction, default=None,
                   help="training eps, e.g. 0.3 or 8/255 (default: the dataset's)")
    p.add_argument("--attack-steps", type=int, default=None, help="PGD steps for the training examples")
    p.add_argument("--schedule", choices=SCHEDULES, default=None)
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


def _runs_dir() -> Path:
    from .checkpoints import checkpoint_dir
    return checkpoint_dir().parent / "runs"


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
          ("" if main_rank else f" [rank {os.environ.get('RANK')}]") +
          f"\ntraining {args.method} on {len(y)} {dataset} images for {cfg.epochs} epoch(s), "
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
                 "config": cfg.to_dict(), "finished": True,
                 "epoch": len([r for r in history if r.get("kind") == "epoch"])}
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
