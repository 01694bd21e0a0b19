"""Training: one loop for standard, PGD adversarial training and C-LEAD (online), plus the stages of the
published C-LEAD pipeline (faithful).

Methods (`TrainConfig.method`), each only a different *step function* inside the same loop:

- ``standard``      cross-entropy on clean images.
- ``pgd_at``        Madry et al. 2018: cross-entropy on PGD examples made against the current model.
- ``clead_online``  C-LEAD as the abstract describes it: PGD views regenerated at every step against the
                    current model; loss = CE(adversarial) [+ CE(clean), `clean_ce`] + lambda * InfoNCE(clean,
                    adversarial projections) (`supervised_contrastive`: SupCon, same-class samples are
                    positives too). `attack_loss='contrastive'` crafts the view against the contrastive loss.
                    With lambda = 0 (and no clean CE, CE attack) the step *is* the pgd_at step: same
                    seed, identical weights.
- ``trades``        Zhang et al. 2019: CE(f(x), y) + beta * KL(f(x) || f(x')), x' from PGD on the KL from a
                    0.001 * N(0, 1) start, the model in eval mode while attacking (as the authors' code does).
- ``clead_faithful``  the published pipeline, as stages run by `clead_lite.faithful.train_faithful`; this
                    module holds only the two stage steps (``faithful_encoder``: 3-view InfoNCE, no labels;
                    ``faithful_head``: linear head on a frozen encoder).

The loop: data resident on the device (`DeviceLoader`, augmentation on the device); SGD with momentum and
weight decay; one-cycle, piecewise, constant or step (per-epoch decay) learning rate per step; optionally eps growing linearly over
the first steps (`eps_warmup`: short PGD-AT runs on MNIST at eps 0.3 stall at chance without it); automatic mixed precision on CUDA
(bf16 where supported, else fp16 with a GradScaler); channels_last; optional torch.compile; no host-device
synchronisation inside the step (loss and accuracy are summed on the device and read every `log_every`
steps); a tqdm bar with live loss/accuracy; a history (list of dicts, `.frame()` -> DataFrame); a
held-out PGD accuracy each epoch with early stopping that keeps the best weights (robust overfitting);
an atomic checkpoint each epoch that `resume=True` continues bit-for-bit on the CPU (refused when the
training data's fingerprint differs); one run per checkpoint file (a lock); a loss or weights that become
non-finite stop the run with TrainingDivergedError before that epoch is saved; and
DistributedDataParallel when launched by `torchrun` (WORLD_SIZE > 1).
This module is the loop; the settings are `train_config.TrainConfig` and each method's step is
`train_step.TrainStep` (both re-exported here).
Floor 3: imports attacks, data, accuracies, checkpoints, models, profiles, safe_io, validate, train_config,
train_step.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from . import attacks as _attacks
from .course.checkpoints import CheckpointError, load_checkpoint, load_model_state, model_metadata, save_checkpoint
from .data import DeviceLoader
from .accuracies import accuracy, robust_accuracy
from .models import _unwrap
from .course.profiles import dataset_info, get_device
from .course.safe_io import check_writable, output_lock
from .validate import check_images, check_labels

# the settings (train_config) and the step (train_step) live in their own modules; re-exported here
from .train_config import (_RESUME_FREE, _STAGES, FAITHFUL_RECIPES, METHODS, SCHEDULES,  # noqa: F401
                           TRAIN_STEP_VERSION, VIEW_KINDS, TrainConfig, TrainingDivergedError)
from .train_step import TrainStep, _amp_dtype, contrastive_attack_loss, head_uses_fgsm, lr_factor  # noqa: F401

__all__ = [
    "METHODS", "SCHEDULES", "VIEW_KINDS", "TrainConfig", "TrainResult", "History", "TrainStep", "train",
    "lr_factor", "contrastive_attack_loss", "FAITHFUL_RECIPES", "head_uses_fgsm", "TrainingDivergedError",
]


# ============================================================================================== history
class History(list):
    """A list of record dicts: kind='step' (every log_every steps) and kind='epoch' (every epoch)."""

    def frame(self, kind: str | None = None):
        """The records as a pandas DataFrame; `kind='epoch'` or `'step'` keeps one kind."""
        import pandas as pd
        rows = [r for r in self if kind is None or r.get("kind") == kind]
        return pd.DataFrame(rows)

    def epochs(self) -> list[dict]:
        return [r for r in self if r.get("kind") == "epoch"]


@dataclass
class TrainResult:
    """What `train` returns. `model` holds the best held-out weights when validating with keep_best."""
    model: nn.Module
    history: History
    config: TrainConfig
    best_epoch: int | None = None        # 1-based; None without validation
    best_val_acc: float | None = None    # held-out accuracy of best_epoch (PGD; clean for 'standard')
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    checkpoint_path: str | None = None

    def frame(self, kind: str | None = None):
        return self.history.frame(kind)


# ============================================================================================== RNG state
def _rng_state(generator: torch.Generator) -> dict:
    """Every random stream as tensors / plain data (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {"attack": generator.get_state(), "torch": torch.get_rng_state(),
             "python": list(random.getstate()[1]), "python_version": random.getstate()[0],
             "numpy": torch.as_tensor(np.asarray(np_state[1], dtype=np.int64)),
             "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()  # device-ok
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["attack"].to(torch.uint8))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])  # device-ok


# ============================================================================================== DDP
def _ddp_setup(device: torch.device | None) -> dict | None:
    """Under torchrun (WORLD_SIZE > 1): init the process group (nccl on CUDA, gloo on CPU) and pick this
    process's device. Returns {'rank', 'world_size', 'device', 'device_ids', 'created'} or None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":  # device-ok
        if device.index is None:
            device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # device-ok
        created = True
    return {"rank": dist.get_rank(), "world_size": dist.get_world_size(), "device": device,
            "device_ids": [device.index] if device.type == "cuda" else None, "created": created}  # device-ok


def _broadcast_buffers(model: nn.Module) -> None:
    """Every buffer (BatchNorm running statistics) of every rank set to rank 0's."""
    import torch.distributed as dist
    for buffer in _unwrap(model).buffers():
        dist.broadcast(buffer, src=0)


def _all_reduce_sum(values: torch.Tensor, ddp: dict | None) -> torch.Tensor:
    if ddp:
        import torch.distributed as dist
        dist.all_reduce(values)
    return values


# ============================================================================================== the loop
def _split_validation(x, y, n_val: int, seed: int):
    """A seeded held-out split: (x_train, y_train, x_val, y_val)."""
    if n_val >= len(y):
        raise ValueError(f"n_val={n_val} leaves no training images (the training set has {len(y)})")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 7919))
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


def _validate(model: nn.Module, x_val, y_val, cfg: TrainConfig, epoch: int, device) -> dict:
    """Held-out clean and PGD-`val_steps` accuracy (fp32, eval mode, a seeded generator per epoch)."""
    g = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)
    # the training attack's step suits PGD; FGSM-RS's 1.25 eps does not: Madry's rule for the check then
    alpha = cfg.alpha if cfg.attack == "pgd" else min(cfg.eps, 2.5 * cfg.eps / cfg.val_steps)
    attack = lambda m, xb, yb: _attacks.pgd(m, xb, yb, eps=cfg.eps, alpha=alpha, steps=cfg.val_steps,
                                            norm=cfg.norm, generator=g)
    was = model.training
    model.eval()
    out = {"val_clean_acc": accuracy(model, x_val, y_val)}
    if _selection_metric(cfg) == "val_pgd_acc" or cfg.method != "faithful_head":   # a clean-selected head: no PGD
        out["val_pgd_acc"] = robust_accuracy(model, x_val, y_val, attack)
    if cfg.attack == "fgsm_rs" or cfg.co_drop is not None:
        # catastrophic overfitting shows as FGSM accuracy rising while PGD accuracy collapses
        fgsm = lambda m, xb, yb: _attacks.fgsm(m, xb, yb, eps=cfg.eps)
        out["val_fgsm_acc"] = robust_accuracy(model, x_val, y_val, fgsm)
    model.train(was)
    return out


def _selection_metric(cfg: TrainConfig) -> str:
    """What early stopping and keep_best watch: the held-out PGD accuracy for robust training, the clean
    accuracy for standard training (whose PGD accuracy is about 0 and would pick noise)."""
    if cfg.method == "faithful_head":   # the authors' code keeps the head on clean accuracy
        return "val_pgd_acc" if cfg.recipe("head_select") == "pgd" else "val_clean_acc"
    return "val_pgd_acc" if cfg.adversarial else "val_clean_acc"


def _check_training_data(model, x, y, cfg):
    inner = _unwrap(model)
    channels = getattr(inner, "in_channels", None)
    if cfg.method in _STAGES:
        if x.dtype != torch.uint8:
            raise TypeError(f"the {cfg.method} stage takes uint8 image stacks, got {x.dtype}")
    else:
        check_images(x, "x_train", channels)
    check_labels(y, x.shape[0], getattr(inner, "num_classes", None), name="y_train")


def _config_mismatch(saved: dict, cfg: TrainConfig) -> list[str]:
    now = cfg.to_dict()
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in now
            if k not in _RESUME_FREE and k in saved and saved[k] != now[k]]


def train(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, config: TrainConfig | None = None, *,
          x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, dataset: str | None = None,
          device: str | torch.device | None = None, progress: bool = True,
          callback: Callable[[dict, nn.Module], bool | None] | None = None, **changes) -> TrainResult:
    """Train `model` with `config.method`; returns a TrainResult (model, history, best_epoch, ...).

    model: a course model (logits, `forward_all`); moved to the device and trained in place.
    x_train: (N, C, H, W) float in [0, 1], y_train: (N,) int64. x_val/y_val: held-out images for the
    per-epoch PGD accuracy (else `n_val` images are split off x_train with a seeded permutation).
    dataset: a name in DATASETS; gives the default eps and the augmentation (crop/flip).
    callback(record, model): called with every history record (kind 'step' and 'epoch'); returning True
    from an epoch record stops training after that epoch; raising stops it at once (a checkpoint of the
    finished epochs is already on disk). `changes` override config fields: train(..., epochs=2).
    """
    cfg = config or TrainConfig()
    if changes:
        cfg = cfg.replace(**changes)
    if cfg.method == "clead_faithful":
        raise ValueError("method 'clead_faithful' is a pipeline of stages, not one loop: call "
                         "train_faithful(x_train, y_train, config, dataset=...) (or its stages)")
    if dataset is not None:
        dataset_info(dataset)
    cfg = cfg.resolved(dataset, need_eps=cfg.adversarial or x_val is not None or cfg.n_val > 0)
    ddp = _ddp_setup(torch.device(device) if device is not None else None)
    device = ddp["device"] if ddp else get_device(device)
    rank, world = (ddp["rank"], ddp["world_size"]) if ddp else (0, 1)
    main = rank == 0
    try:
        with output_lock(cfg.checkpoint_path if main else None):   # one run per checkpoint file
            return _train(model, x_train, y_train, cfg, x_val, y_val, dataset, device, progress and main,
                          callback, ddp, rank, world)
    finally:
        if ddp and ddp["created"]:
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()


def _train(model, x_train, y_train, cfg, x_val, y_val, dataset, device, show, callback, ddp, rank, world):
    t_start = time.perf_counter()
    main = rank == 0
    _check_training_data(model, x_train, y_train, cfg)
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and main:   # before the work: a folder, a read-only or a full place fails now
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        copies = 2 + (cfg.n_val > 0 or x_val is not None)   # weights, momentum, the best weights
        check_writable(ckpt, "checkpoint", hint="pass a checkpoint path (--out) in a writable folder",
                       need_bytes=copies * weights)
    fingerprint = _data_fingerprint(x_train, y_train, dataset) if ckpt is not None else None
    if x_val is None and cfg.n_val > 0:
        x_train, y_train, x_val, y_val = _split_validation(x_train, y_train, cfg.n_val, cfg.seed)
    elif x_val is not None:
        check_images(x_val, "x_val", getattr(_unwrap(model), "in_channels", None))
        check_labels(y_val, x_val.shape[0], name="y_val")
        if cfg.n_val:
            x_val, y_val = x_val[:cfg.n_val], y_val[:cfg.n_val]
    if x_val is not None:
        x_val, y_val = x_val.to(device), y_val.to(device)

    per_rank = max(1, cfg.batch_size // world)
    drop_last = len(y_train) // world >= per_rank
    loader_kwargs = dict(device=device, drop_last=drop_last, seed=cfg.seed, rank=rank, world_size=world)
    if dataset is not None and cfg.augment and cfg.method not in _STAGES:
        loader = DeviceLoader.for_dataset(dataset, x_train, y_train, per_rank, augment=True, **loader_kwargs)
    else:
        loader = DeviceLoader(x_train, y_train, per_rank, shuffle=True, **loader_kwargs)
    if len(loader) == 0:
        raise ValueError(f"no training batch: {len(y_train)} images, batch_size {cfg.batch_size}")

    model.to(device)
    stepper = TrainStep(model, cfg, device, total_steps=cfg.epochs * len(loader), ddp=ddp)
    history = History()
    start_epoch, best = 0, {"epoch": None, "val_acc": None, "bad_epochs": 0, "model": None}
    finished = False
    state: dict = {}

    if cfg.resume and ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, map_location="cpu", required=("model", "config", "epoch"))
        diff = _config_mismatch(state["config"], cfg)
        if diff:
            raise CheckpointError(f"cannot resume from {ckpt}: its run used other settings ({'; '.join(diff)}); "
                                  "use the same settings, or another checkpoint_path to start afresh")
        _check_same_data(ckpt, state, fingerprint)
        load_model_state(model, state)
        history = History(state.get("history", []))
        start_epoch = int(state["epoch"])
        finished = bool(state.get("finished"))
        best = {**best, **(state.get("best") or {})}
        if not finished:
            stepper.load_state_dict(state["train_state"])
            _set_rng_state(state["rng"], stepper.generator)
        if show:
            print(f"resuming {cfg.method} from {ckpt} after epoch {start_epoch}/{cfg.epochs}", flush=True)

    stopped_early = bool(state.get("stopped_early")) if cfg.resume and start_epoch else False
    if (not finished and cfg.early_stop_patience is not None and best["bad_epochs"] >= cfg.early_stop_patience):
        stopped_early = True   # killed after the epoch that triggered early stopping: do not train on
    try:
        stopped_early = _epochs(model, stepper, loader, cfg, history, best, x_val, y_val, dataset, device, show,
                                callback, ddp, ckpt, main, start_epoch, finished or stopped_early, stopped_early,
                                fingerprint)
    finally:
        if cfg.method == "faithful_head":   # unfreeze the encoder for whoever uses the model next
            for p in _unwrap(model).parameters():
                p.requires_grad_(True)

    if not finished:
        if cfg.keep_best and best["model"] is not None:
            load_model_state(model, best["model"])
        if ckpt is not None and main:
            _save_train_checkpoint(ckpt, model, stepper, cfg, len(history.epochs()), history, best, dataset,
                                   finished=True, stopped_early=stopped_early, fingerprint=fingerprint)
    model.eval()
    return TrainResult(model=model, history=history, config=cfg, best_epoch=best["epoch"],
                       best_val_acc=best["val_acc"], epochs_run=len(history.epochs()), stopped_early=stopped_early,
                       seconds=time.perf_counter() - t_start, checkpoint_path=str(ckpt) if ckpt else None)


def _epochs(model, stepper, loader, cfg, history, best, x_val, y_val, dataset, device, show, callback, ddp, ckpt,
            main, start_epoch, skip, stopped_early, fingerprint=None) -> bool:
    """The epochs from start_epoch on (none when `skip`); returns whether training stopped early."""
    for epoch in range(start_epoch, start_epoch if skip else cfg.epochs):
        record = _run_epoch(stepper, loader, epoch, cfg, history, show, callback, ddp)
        _check_finite(record, model, stepper, cfg, epoch, ckpt)
        if x_val is not None:
            record.update(_validate(_unwrap(model), x_val, y_val, cfg, epoch, device))
            value = record[_selection_metric(cfg)]
            if best["val_acc"] is None or value > best["val_acc"]:
                best.update(epoch=epoch + 1, val_acc=value, bad_epochs=0,
                            model={k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()})
            else:
                best["bad_epochs"] += 1
            record["best_epoch"] = best["epoch"]
            if cfg.co_drop is not None and cfg.adversarial:   # a standard model's PGD accuracy is ~0 anyway
                previous = best.get("previous_pgd")
                record["catastrophic_overfitting"] = (previous is not None
                                                      and record["val_pgd_acc"] < previous - cfg.co_drop)
                best["previous_pgd"] = record["val_pgd_acc"]
        record["seconds"] = time.perf_counter() - record.pop("_t0")
        history.append(record)
        if show:
            _print_epoch(record, cfg)
        stop = cfg.early_stop_patience is not None and best["bad_epochs"] >= cfg.early_stop_patience
        if record.get("catastrophic_overfitting"):
            stop = True     # Wong et al. 2020: stop; keep_best keeps the weights from before the collapse
            if show:
                from tqdm.auto import tqdm
                tqdm.write(f"catastrophic overfitting at epoch {record['epoch']}: held-out PGD accuracy fell to "
                           f"{record['val_pgd_acc']:.3f} (FGSM {record.get('val_fgsm_acc', float('nan')):.3f}); "
                           f"stopped, keeping epoch {best['epoch']}")
        if ckpt is not None and main:
            _save_train_checkpoint(ckpt, model, stepper, cfg, epoch + 1, history, best, dataset, finished=False,
                                   fingerprint=fingerprint)
        if callback is not None and callback(record, model) is True:
            stop = True
        if stop:
            return True
    return stopped_early


def _run_epoch(stepper: TrainStep, loader: DeviceLoader, epoch: int, cfg: TrainConfig, history: History, show: bool,
               callback, ddp) -> dict:
    """One pass over the loader; returns the epoch record (without validation)."""
    from tqdm.auto import tqdm
    t0 = time.perf_counter()
    stepper.train_mode()
    loader.set_epoch(epoch)
    n_batches = len(loader)
    zero = lambda: torch.zeros((), device=stepper.device)
    totals = {"loss": zero(), "correct": zero()}      # epoch sums, on the device
    window = {"loss": zero(), "correct": zero()}      # since the last log step
    seen = seen_window = 0
    bar = tqdm(total=n_batches, desc=f"{cfg.method} {epoch + 1}/{cfg.epochs}", disable=not show, leave=False,
               dynamic_ncols=True)
    for i, (xb, yb) in enumerate(loader):
        loss, correct, terms = stepper.step(xb, yb)
        n = yb.shape[0]
        for acc in (totals, window):
            acc["loss"] += loss * n
            if correct is not None:
                acc["correct"] += correct
            for k, v in terms.items():
                acc[k] = acc.get(k, zero()) + v.float() * n
        seen += n
        seen_window += n
        bar.update(1)
        if (i + 1) % cfg.log_every == 0 or i + 1 == n_batches:
            values = {k: float(v) / seen_window for k, v in window.items()}   # the one sync: every k steps
            rec = {"kind": "step", "epoch": epoch + (i + 1) / n_batches, "step": stepper.step_index,
                   "loss": values.pop("loss"), "lr": stepper.optimizer.param_groups[0]["lr"]}
            acc_value = values.pop("correct")
            if stepper.cfg.method != "faithful_encoder":
                rec["acc"] = acc_value
            rec.update(values)
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", **({"acc": f"{rec['acc']:.3f}"} if "acc" in rec else {}))
            if callback is not None:
                callback(rec, stepper.model)
            window = {k: zero() for k in window}
            seen_window = 0
    bar.close()
    if ddp:  # DDP sends rank 0's buffers at the START of a forward: after the last one each rank holds its own
        _broadcast_buffers(stepper.model)  # BatchNorm statistics; make them rank 0's (tests/test_batchnorm.py)
    keys = sorted(totals)
    sums = _all_reduce_sum(torch.stack([totals[k] for k in keys] + [torch.tensor(float(seen), device=stepper.device)]), ddp)
    count = float(sums[-1])
    values = {k: float(v) / count for k, v in zip(keys, sums[:-1])}
    record = {"kind": "epoch", "epoch": epoch + 1, "step": stepper.step_index, "loss": values.pop("loss")}
    acc_value = values.pop("correct")
    if stepper.cfg.method != "faithful_encoder":
        record["acc"] = acc_value
    record.update(values)
    record["lr"] = stepper.optimizer.param_groups[0]["lr"]
    record["images"] = int(count)
    elapsed = time.perf_counter() - t0
    record["images_per_s"] = count / max(elapsed, 1e-9)
    record["_t0"] = t0
    return record


def _print_epoch(record: dict, cfg: TrainConfig) -> None:
    from tqdm.auto import tqdm
    parts = [f"{cfg.method} epoch {record['epoch']}/{cfg.epochs}", f"loss {record['loss']:.4f}"]
    if "acc" in record:
        parts.append(f"train acc {record['acc']:.3f}")
    if "val_pgd_acc" in record:
        parts.append(f"held-out clean {record['val_clean_acc']:.3f} PGD-{cfg.val_steps} {record['val_pgd_acc']:.3f}")
    elif "val_clean_acc" in record:
        parts.append(f"held-out clean {record['val_clean_acc']:.3f}")
    if "val_fgsm_acc" in record:
        parts.append(f"FGSM {record['val_fgsm_acc']:.3f}")
    parts.append(f"{record['seconds']:.1f} s")
    tqdm.write("  ".join(parts))


def _data_fingerprint(x: torch.Tensor, y: torch.Tensor, dataset: str | None) -> dict:
    """What a resumed run must train on: the dataset name, the number of images and a sha256 of x and y."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return {"dataset": dataset, "n": int(len(y)), "sha256": h.hexdigest()}


def _check_same_data(ckpt: Path, state: dict, fingerprint: dict | None) -> None:
    saved = state.get("data_fingerprint")
    if fingerprint is None or (not saved and state.get("dataset") in (None, fingerprint["dataset"])):
        return
    saved = saved or {"dataset": state.get("dataset"), "n": "?", "sha256": "?"}
    if saved.get("dataset") != fingerprint["dataset"] or saved.get("n") != fingerprint["n"] or \
            saved.get("sha256") != fingerprint["sha256"]:
        raise CheckpointError(
            f"cannot resume from {ckpt}: it was trained on {saved.get('n')} {saved.get('dataset')} images (data "
            f"sha256 {str(saved.get('sha256'))[:12]}), this run has {fingerprint['n']} {fingerprint['dataset']} "
            f"images (sha256 {fingerprint['sha256'][:12]}); resume with the same data (dataset, n_train, seed), or "
            "use another checkpoint path to start afresh")


def _check_finite(record: dict, model: nn.Module, stepper: TrainStep, cfg: TrainConfig, epoch: int,
                  ckpt: Path | None) -> None:
    """Stop a diverged run before its epoch is saved: the last good checkpoint stays (one sync per epoch).
    With fp16 loss scaling an inf loss is a skipped step, not divergence: only the weights count then."""
    params = [p.detach() for p in _unwrap(model).parameters()]
    weights_ok = bool(torch.stack([torch.isfinite(p).all() for p in params]).all()) if params else True
    loss_ok = math.isfinite(record["loss"]) or stepper.scaler.is_enabled()
    if weights_ok and loss_ok:
        return
    what = "the loss" if not loss_ok else "the weights"
    if ckpt is not None and epoch > 0 and ckpt.exists():
        kept = f"the last good checkpoint {ckpt} (after epoch {epoch}) is kept, unfinished"
    else:
        kept = "no checkpoint of this run was written"
    raise TrainingDivergedError(
        f"training diverged: {what} became non-finite (loss {record['loss']}) in epoch {epoch + 1}/{cfg.epochs} of "
        f"{cfg.method} at peak lr {cfg.lr:g}; {kept}. Lower the learning rate (--lr / lr=...) and train again")


def _save_train_checkpoint(path, model, stepper, cfg, epoch, history, best, dataset, finished,
                           stopped_early=False, fingerprint=None) -> None:
    state = {"format": 1, "kind": "train", **model_metadata(model), "model": _unwrap(model).state_dict(),
             "epoch": epoch, "history": list(history), "config": cfg.to_dict(), "method": cfg.method,
             "dataset": dataset, "finished": finished, "stopped_early": stopped_early,
             "best": {k: v for k, v in best.items() if k != "model" or not finished}}
    if fingerprint is not None:
        state["data_fingerprint"] = fingerprint
    if not finished:  # what a resume needs; a finished checkpoint is slim
        state["train_state"] = stepper.state_dict()
        state["rng"] = _rng_state(stepper.generator)
    save_checkpoint(path, state)
