"""Fill in data/checkpoints/manifest.json from the shipped checkpoints themselves, without retraining:

- `config`: the full TrainConfig the recorded `command` trains with (rebuilt by the CLI's own parser), checked
  against the config stored inside the checkpoint, so the manifest says what the model was really trained with;
- `key`: its model-store key (`clead_lite.course.store.model_key`: settings, training images, code version), so that
  notebooks and `python -m clead_lite train` asking for the same model load the shipped file;
- `metrics`: clean, FGSM, PGD-k x restarts and transfer accuracy on the first `n_eval` test images
  (`data.test_images`, the images the notebooks' `x_test[:n]` and the load messages use); transfer: PGD made on
  the shipped standard model.

    OMP_NUM_THREADS=1 python scripts/update_manifest.py            # about 1-2 minutes on one CPU thread
    python scripts/update_manifest.py --check                      # exit 1 if the manifest is out of date
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clead_lite.course.cli import build_parser  # noqa: E402
from clead_lite.course.cli_train import _faithful_config, _train_config  # noqa: E402
from clead_lite.faithful import FaithfulConfig  # noqa: E402
from clead_lite.course.checkpoints import checkpoint_dir, load_checkpoint, read_manifest  # noqa: E402
from clead_lite.course.datasets import load_dataset, test_images  # noqa: E402
from clead_lite.evaluation import evaluate  # noqa: E402
from clead_lite.course.profiles import get_profile  # noqa: E402
from clead_lite.course.safe_io import write_json_atomic  # noqa: E402
from clead_lite.course.store import load_model, model_key, StoreHit  # noqa: E402

METRIC_KEYS = ("clean", "fgsm", "pgd", "transfer", "n", "eps", "steps", "restarts")


def run_config(entry: dict):
    """(profile, TrainConfig resolved, n_train, FaithfulConfig) of the entry's recorded `python -m clead_lite train`
    command; the FaithfulConfig is the default one for the other methods, resolved for clead_faithful."""
    # `command_now`: the recorded command in today's flags, where the code's defaults moved since it ran
    argv = shlex.split(entry.get("command_now") or entry["command"])
    if argv[:3] != ["python", "-m", "clead_lite"]:
        raise ValueError(f"{entry['file']}: command does not start with 'python -m clead_lite': {entry['command']}")
    args = build_parser().parse_args(argv[3:])
    profile = get_profile(args.profile, dataset=args.dataset)
    cfg = _train_config(args, profile).resolved(profile.dataset)
    faithful = _faithful_config(args, profile)
    return profile, cfg, args.n_train, faithful.resolved() if faithful is not None else FaithfulConfig()


def settings(cfg, faithful) -> dict:
    """The flat config dict of a manifest entry: the TrainConfig's fields and the FaithfulConfig's."""
    return {**cfg.to_dict(), **faithful.to_dict()}


def check_against_checkpoint(entry: dict, state: dict, cfg, faithful) -> None:
    """The stored config must be the command's (faithful: its last stage, the linear head, without validation, with
    the recipe's head epochs, lr and schedule where it sets them, as `faithful.train_faithful` trains it)."""
    want = settings(cfg, faithful)
    if entry["method"] == "clead_faithful":
        want.update(method="faithful_head", n_val=0, epochs=faithful.recipe("head_epochs") or cfg.epochs,
                    lr=faithful.recipe("head_lr") or cfg.lr, schedule=faithful.recipe("head_schedule") or cfg.schedule)
    # where a run was checkpointed is not a setting of its training (older checkpoints recorded it)
    have = {k: v for k, v in (state.get("config") or {}).items() if k not in ("checkpoint_path", "resume")}
    # a field the checkpoint lacks did not exist in the code that trained it: only the fields it has can differ
    # and the faithful recipe's fields (view_kinds, ...) are None today for the methods that do not use them
    unused = set() if entry["method"] == "clead_faithful" else {"view_kinds", "encoder_views", "head_fgsm_mode",
                                                                 "head_select"}
    diff = {k: (have.get(k), want.get(k)) for k in have
            if have.get(k) != want.get(k) and not (k in unused and want.get(k) is None)}
    if diff:
        raise SystemExit(f"{entry['file']}: the config stored in the checkpoint differs from its command's: {diff}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when an entry would change")
    args = p.parse_args()
    mpath = checkpoint_dir() / "manifest.json"
    data = read_manifest(mpath)
    entries = data["checkpoints"]
    by_method = {e["method"]: e for e in entries}
    std_entry = by_method.get("standard")
    changed = []
    for e in entries:
        path = mpath.parent / e["file"]
        profile, cfg, n_train, faithful = run_config(e)
        state = load_checkpoint(path)
        check_against_checkpoint(e, state, cfg, faithful)
        x, y = (load_dataset(profile.dataset, "train", n=n_train, seed=cfg.seed) if n_train
                else load_dataset(profile.dataset, "train"))
        key = model_key(e["method"], profile.dataset, profile.model, profile.name, cfg, x, y, faithful)
        model, _ = load_model(StoreHit(path, "shipped", e))
        source = None
        if std_entry is not None and e is not std_entry:
            source, _ = load_model(StoreHit(mpath.parent / std_entry["file"], "shipped", std_entry))
        xt, yt = test_images(profile.dataset, profile.n_eval)
        row = evaluate(model, xt, yt, eps=profile.eps, steps=profile.eval_steps, restarts=profile.eval_restarts,
                       source=source, name=e["method"])
        metrics = {k: row[k] for k in METRIC_KEYS}
        metrics["transfer"] = None if source is None else float(metrics["transfer"])
        metrics.update(images=f"the first {len(yt)} of the {profile.dataset} test split (data.test_images)",
                       transfer_source=None if source is None else std_entry["file"])
        new = {"config": settings(cfg, faithful), "key": key, "metrics": metrics}
        if any(e.get(k) != v for k, v in new.items()):
            changed.append(e["file"])
        e.update(new)
        print(f"{e['file']}: clean {metrics['clean']:.1%}, FGSM {metrics['fgsm']:.1%}, PGD-{metrics['steps']} x "
              f"{metrics['restarts']} {metrics['pgd']:.1%}"
              + ("" if source is None else f", transfer {metrics['transfer']:.1%}") + f" on {len(yt)} images",
              flush=True)
    if args.check:
        print("up to date" if not changed else f"out of date: {', '.join(changed)}")
        return 1 if changed else 0
    write_json_atomic(mpath, data, indent=2, what="manifest")
    print(f"wrote {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
