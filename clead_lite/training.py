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
Floor 2: imports attacks, losses, data, evaluation, checkpoints, models, profiles, validate.
"""
from __future__ import annotations

import contextlib
import dataclasses
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
import torch.nn.functional as F

from . import attacks as _attacks
from .checkpoints import CheckpointError, load_checkpoint, load_model_state, model_metadata, save_checkpoint
from .data import DeviceLoader
from .evaluation import accuracy, robust_accuracy
from .losses import info_nce, supcon, trades_kl
from .models import _unwrap
from .profiles import Profile, dataset_info, get_device
from .safe_io import check_writable, output_lock
from .validate import (NORMS, check_choice, check_eps, check_images, check_int, check_labels,
                       check_nonnegative, check_positive)

__all__ = [
    "METHODS", "SCHEDULES", "VIEW_KINDS", "TrainConfig", "TrainResult", "History", "TrainStep", "train",
    "lr_factor", "contrastive_attack_loss", "FAITHFUL_RECIPES", "head_uses_fgsm", "TrainingDivergedError",
]

METHODS = ("standard", "pgd_at", "trades", "clead_online", "clead_faithful")
_STAGES = ("faithful_encoder", "faithful_head")     # internal methods of the clead_faithful stages
SCHEDULES = ("onecycle", "piecewise", "constant", "step")
ATTACK_LOSSES = ("ce", "contrastive")
TRAIN_ATTACKS = ("pgd", "fgsm_rs")  # fgsm_rs: Wong, Rice & Kolter 2020 (one step of 1.25 eps from a random start)
VIEW_KINDS = ("pgd", "pgd_crop", "fgsm", "fgsm_crop", "cw", "cw_crop", "pgd_aug", "fgsm_aug", "cw_aug")
# the faithful pipeline's two readings of the authors' code; a None field of TrainConfig takes its recipe's value
FAITHFUL_RECIPES = {
    # as the authors' code runs: CW view on a SimCLR augmentation, head batches FGSM at random (p), 50 head
    # epochs at lr 0.1 halved every 15, the head kept on clean held-out accuracy
    "authors": dict(view_kinds=("pgd_crop", "fgsm", "cw_aug"), encoder_views=("pgd_crop", "cw_aug"),
                    head_fgsm_mode="random", head_epochs=50, head_lr=0.1, head_schedule="step", head_select="clean"),
    # this course's first version: plain CW view, every second head batch FGSM, the run's epochs / lr /
    # schedule, the head kept on held-out PGD accuracy
    "course-v1": dict(view_kinds=("pgd_crop", "fgsm", "cw"), encoder_views=("pgd_crop", "cw"),
                      head_fgsm_mode="alternate", head_epochs=None, head_lr=None, head_schedule=None,
                      head_select="pgd"),
}
HEAD_FGSM_MODES = ("random", "alternate")
HEAD_SELECT = ("clean", "pgd")
ENCODER_INITS = ("surrogate", "scratch")
# The version of the training math (the step functions, the loop, the faithful pipeline's stages). Part of every
# model-store key (clead_lite.store): bump it when a change makes the same settings train different weights, so
# that stored and shipped models of the old code are no longer taken for models of the new one.
TRAIN_STEP_VERSION = 1
# Fields that may differ between a checkpoint and the run that resumes it.
_RESUME_FREE = ("resume", "checkpoint_path", "log_every", "compile", "early_stop_patience")


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became non-finite (NaN / inf): training stopped, the last good checkpoint kept."""


# ============================================================================================== config
@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. `TrainConfig.from_profile(profile, method)` fills it from a profile.

    eps / alpha: None takes the dataset's eps and Madry's step rule alpha = min(eps, 2.5 * eps / steps).
    """
    method: str = "pgd_at"
    epochs: int = 10
    batch_size: int = 128            # the global batch; each of N DDP processes takes batch_size // N
    lr: float = 0.05                 # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "onecycle"       # onecycle: linear 0 -> lr at `warmup`, -> 0 at the end
    warmup: float = 0.4              # onecycle: fraction of the steps spent rising
    step_every: int = 15             # step: lr times step_gamma every step_every epochs
    step_gamma: float = 0.5
    # attack used to craft training examples (pgd_at, clead_online) and the held-out PGD accuracy
    eps: float | None = None
    alpha: float | None = None
    attack_steps: int = 10
    attack: str = "pgd"              # 'fgsm_rs': FGSM from a uniform random start (attack_steps 1, alpha 1.25 eps)
    co_drop: float | None = None     # stop when held-out PGD accuracy falls by more than this between epochs
    norm: str = "linf"
    eps_warmup: float = 0.0          # fraction of the steps over which eps and alpha grow linearly from 0
    # clead_online
    contrastive_weight: float = 0.5  # lambda
    temperature: float = 0.1
    clean_ce: bool = False           # add CE on clean inputs (loss = (CE_adv + CE_clean) / 2 + lambda * con)
    supervised_contrastive: bool = False
    attack_loss: str = "ce"          # 'contrastive': craft the view against the InfoNCE loss
    # True: clean and adversarial images in two forward passes, each normalised by its own BatchNorm batch
    # statistics, the running statistics moved by the adversarial pass only (so lambda -> 0 is PGD-AT on any
    # model). False: one concatenated batch, the SimCLR way (the shipped models; no difference without BatchNorm
    # beyond float rounding)
    split_views: bool = False
    # trades
    trades_beta: float = 6.0         # beta of CE(clean) + beta * KL(clean || adversarial)
    # the loop
    amp: bool | None = None          # None: on for CUDA (bf16 if supported, else fp16 + GradScaler), off on CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    augment: bool = True             # the dataset's crop / flip (needs train(dataset=...))
    log_every: int = 50
    seed: int = 0
    n_val: int = 0                   # held-out images for a PGD accuracy each epoch (0: none)
    val_steps: int = 10
    early_stop_patience: int | None = None  # epochs without a better held-out PGD accuracy before stopping
    keep_best: bool = True           # end with the best held-out weights (when validating)
    checkpoint_path: str | None = None  # written atomically after every epoch
    resume: bool = False             # continue from checkpoint_path when it exists (else start afresh)
    # clead_faithful
    faithful_recipe: str = "authors"  # 'authors' | 'course-v1': the defaults of the None fields below
    view_kinds: tuple[str, ...] | None = None      # None: the recipe's
    encoder_views: tuple[str, str] | None = None   # None: the recipe's
    view_steps: int = 3              # PGD steps of the precomputed views
    view_alpha: float | None = None  # None: 3/8 eps (the published 3/255 for 8/255)
    cw_steps: int = 50
    crop_scale: tuple[float, float] = (0.5, 1.0)
    aug_crop_scale: tuple[float, float] = (0.2, 1.0)  # the '_aug' views' RandomResizedCrop (then flip, jitter, gray)
    head_fgsm: bool = True           # some linear-head batches are the surrogate's FGSM view
    head_fgsm_mode: str | None = None  # 'random' (each batch with probability head_fgsm_p) | 'alternate'
    head_fgsm_p: float = 0.5
    head_lr: float | None = None     # None: the recipe's (authors 0.1; course-v1 the run's lr)
    head_schedule: str | None = None  # None: the recipe's (authors 'step'; course-v1 the run's schedule)
    head_select: str | None = None   # keep the head epoch with the best held-out 'clean' or 'pgd' accuracy
    encoder_init: str = "surrogate"  # fine-tune the surrogate's encoder, or a fresh one
    surrogate_epochs: int | None = None
    encoder_epochs: int | None = None
    head_epochs: int | None = None

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, profile: Profile, method: str = "pgd_at", **changes) -> "TrainConfig":
        """A config with the profile's epochs, batch size, lr, eps, attack steps, lambda and temperature."""
        n_val = {"smoke": 64, "quick": 500}.get(profile.name, 1000)
        # MNIST-like data at eps 0.3: short PGD-AT runs stall at chance unless eps grows over the first steps;
        # it grows with the one-cycle learning rate (full eps at the lr peak). Measured on 2,048 mnist5k
        # images, 3 epochs, PGD-5: eps_warmup 0.2 -> loss 2.305, clean 11 %; 0.5 -> clean 55 %, PGD-10 23 %.
        eps_warmup = 0.4 if profile.info.channels == 1 else 0.0
        base = dict(method=method, epochs=profile.epochs, batch_size=profile.batch_size, lr=profile.lr,
                    eps=profile.eps, attack_steps=profile.train_steps, eps_warmup=eps_warmup,
                    contrastive_weight=profile.contrastive_weight, temperature=profile.temperature,
                    n_val=n_val, val_steps=min(profile.eval_steps, 10), view_steps=3,
                    cw_steps=10 if profile.name == "smoke" else 50,
                    head_epochs=2 if profile.name == "smoke" else None)   # smoke: the code path, not 50 epochs
        # the profile's recipe details (the colab profile: fast adversarial training, Wong et al. 2020)
        extra = dict(attack=profile.train_attack, warmup=profile.warmup, n_val=profile.n_val,
                     val_steps=profile.val_steps, co_drop=profile.co_drop, cw_steps=profile.cw_steps,
                     encoder_epochs=profile.encoder_epochs, head_epochs=profile.head_epochs)
        base.update({k: v for k, v in extra.items() if v is not None})
        return cls(**{**base, **changes})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain data (lists for tuples), for checkpoints and JSON."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes) -> "TrainConfig":
        """A copy with fields changed; unknown names get a clear error."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in known]
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {', '.join(map(repr, unknown))}; fields: {', '.join(known)}")
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        check_choice(self.method, "method", METHODS + _STAGES)
        check_int(self.epochs, "epochs")
        check_int(self.batch_size, "batch_size", minimum=2)
        check_positive(self.lr, "lr")
        if not 0.0 <= check_nonnegative(self.momentum, "momentum") < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        check_nonnegative(self.weight_decay, "weight_decay")
        check_choice(self.schedule, "schedule", SCHEDULES)
        if not 0.0 < check_positive(self.warmup, "warmup") < 1.0:
            raise ValueError(f"warmup must be a fraction in (0, 1), got {self.warmup}")
        check_choice(self.norm, "norm", NORMS)
        if self.eps is not None:
            check_eps(self.eps) if self.norm == "linf" else check_nonnegative(self.eps, "eps")
        if self.alpha is not None:
            check_positive(self.alpha, "alpha")
        check_int(self.attack_steps, "attack_steps")
        check_choice(self.attack, "attack", TRAIN_ATTACKS)
        if self.attack == "fgsm_rs" and (self.attack_steps != 1 or self.norm != "linf"):
            raise ValueError(f"attack 'fgsm_rs' is one L-inf step: it needs attack_steps=1 and norm='linf', got "
                             f"attack_steps={self.attack_steps}, norm={self.norm!r}")
        if self.co_drop is not None:
            if not 0.0 < check_positive(self.co_drop, "co_drop") < 1.0:
                raise ValueError(f"co_drop must be an accuracy drop in (0, 1), got {self.co_drop}")
            if not self.keep_best:
                raise ValueError("co_drop needs keep_best=True (the weights from before the collapse are kept)")
        if not 0.0 <= check_nonnegative(self.eps_warmup, "eps_warmup") < 1.0:
            raise ValueError(f"eps_warmup must be a fraction in [0, 1), got {self.eps_warmup}")
        check_nonnegative(self.contrastive_weight, "contrastive_weight (lambda)")
        check_positive(self.temperature, "temperature")
        check_choice(self.attack_loss, "attack_loss", ATTACK_LOSSES)
        check_nonnegative(self.trades_beta, "trades_beta (beta)")
        if self.method == "trades" and self.norm != "linf":
            raise ValueError(f"method 'trades' implements the L-inf attack only, got norm {self.norm!r}")
        check_int(self.step_every, "step_every")
        check_positive(self.step_gamma, "step_gamma")
        check_choice(self.faithful_recipe, "faithful_recipe", tuple(FAITHFUL_RECIPES))
        if self.head_fgsm_mode is not None:
            check_choice(self.head_fgsm_mode, "head_fgsm_mode", HEAD_FGSM_MODES)
        if not 0.0 <= check_nonnegative(self.head_fgsm_p, "head_fgsm_p") <= 1.0:
            raise ValueError(f"head_fgsm_p must be a probability in [0, 1], got {self.head_fgsm_p}")
        if self.head_lr is not None:
            check_positive(self.head_lr, "head_lr")
        if self.head_schedule is not None:
            check_choice(self.head_schedule, "head_schedule", SCHEDULES)
        if self.head_select is not None:
            check_choice(self.head_select, "head_select", HEAD_SELECT)
        for name in ("clean_ce", "supervised_contrastive", "split_views", "compile", "augment", "keep_best",
                     "resume", "nesterov", "head_fgsm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("amp", "channels_last"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be None (automatic), True or False, got {getattr(self, name)!r}")
        if self.method != "clead_online":
            for name, default in (("attack_loss", "ce"), ("supervised_contrastive", False), ("clean_ce", False),
                                  ("split_views", False)):
                if getattr(self, name) != default:
                    raise ValueError(f"{name}={getattr(self, name)!r} only applies to method 'clead_online', "
                                     f"got method {self.method!r}")
        check_int(self.log_every, "log_every")
        check_int(self.seed, "seed", minimum=0)
        check_int(self.n_val, "n_val", minimum=0)
        check_int(self.val_steps, "val_steps")
        if self.early_stop_patience is not None:
            check_int(self.early_stop_patience, "early_stop_patience")
        if self.resume and not self.checkpoint_path:
            raise ValueError("resume=True needs checkpoint_path (the file to continue from)")
        view_kinds, encoder_views = self.recipe("view_kinds"), self.recipe("encoder_views")
        for kind in view_kinds:
            check_choice(kind, "view kind (view_kinds)", VIEW_KINDS)
        if len(encoder_views) != 2:
            raise ValueError(f"encoder_views must name two views (the 3-view loss: clean + 2), got {encoder_views}")
        for kind in encoder_views:
            if kind not in view_kinds:
                raise ValueError(f"encoder view {kind!r} is not computed; view_kinds={view_kinds}")
        check_int(self.view_steps, "view_steps")
        if self.view_alpha is not None:
            check_positive(self.view_alpha, "view_alpha")
        check_int(self.cw_steps, "cw_steps")
        for name in ("crop_scale", "aug_crop_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {getattr(self, name)}")
        check_choice(self.encoder_init, "encoder_init", ENCODER_INITS)
        for name in ("surrogate_epochs", "encoder_epochs", "head_epochs"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name)

    def recipe(self, name: str):
        """The field `name`, or its faithful recipe's value when it is None (e.g. view_kinds, head_select)."""
        value = getattr(self, name)
        return FAITHFUL_RECIPES[self.faithful_recipe][name] if value is None else value

    def resolved(self, dataset: str | None = None, need_eps: bool = True) -> "TrainConfig":
        """Fill eps / alpha: eps from the dataset when None; alpha = min(eps, 2.5 * eps / attack_steps).

        need_eps=False (no attack and no validation in this run) leaves eps None when nothing gives it."""
        eps = self.eps
        if eps is None:
            if dataset is None and not need_eps:
                return self
            if dataset is None:
                raise ValueError(f"eps is not set: pass eps=... (e.g. 0.3 for MNIST) or dataset=... so that "
                                 f"the dataset's standard eps is used (method {self.method!r})")
            eps = dataset_info(dataset).eps if self.norm == "linf" else dataset_info(dataset).eps_l2
        alpha = self.alpha if self.alpha is not None else min(eps, 2.5 * eps / self.attack_steps)
        if self.alpha is None and self.attack == "fgsm_rs":
            alpha = 1.25 * eps        # Wong et al. 2020: 10/255 for eps 8/255
        recipe = {}
        if self.method in ("clead_faithful",) + _STAGES:   # other methods keep None (old checkpoints resume)
            recipe = {k: self.recipe(k) for k in ("view_kinds", "encoder_views", "head_fgsm_mode", "head_select")}
        return self.replace(eps=float(eps), alpha=float(alpha or 1e-12), **recipe)

    @property
    def adversarial(self) -> bool:
        return self.method in ("pgd_at", "trades", "clead_online")


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


# ============================================================================================== schedule
def lr_factor(step: int, total: int, schedule: str, warmup: float = 0.4, *, epochs: int = 1, step_every: int = 15,
              gamma: float = 0.5) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based) of `total`.

    onecycle: a triangle from 0 up to 1 at `warmup` and down to 0 at the end (evaluated at step + 0.5, so
    no step has lr exactly 0); piecewise: 1, then 0.1 from 50 % and 0.01 from 75 % of the steps (Madry /
    Rice et al.); constant: 1; step: gamma ** (epoch // step_every), the epoch of `total` steps over `epochs`
    (StepLR stepped per epoch: the authors' linear head, lr 0.1 halved every 15 epochs).
    """
    t = (step + 0.5) / max(total, 1)
    if schedule == "onecycle":
        return t / warmup if t <= warmup else max(0.0, (1.0 - t) / (1.0 - warmup))
    if schedule == "step":
        return gamma ** ((step // max(1, total // max(epochs, 1))) // step_every)
    if schedule == "piecewise":
        return 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01)
    return 1.0


# ============================================================================================== losses
def contrastive_attack_loss(z_clean: torch.Tensor, z_adv: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example InfoNCE of `losses.info_nce(z_clean, z_adv)` (its mean equals that loss): (B,).

    z_clean: (B, D) anchors (fixed while crafting), z_adv: (B, D). Row i: query clean_i, positive adv_i,
    negatives clean_j and adv_j for j != i. An attack maximising it pushes adv_i away from clean_i.
    """
    b = z_clean.shape[0]
    a = F.normalize(z_clean.float(), dim=1)
    v = F.normalize(z_adv.float(), dim=1)
    logits = torch.cat([a @ a.T, a @ v.T], dim=1) / temperature                     # (B, 2B)
    logits = logits.masked_fill(torch.eye(b, 2 * b, dtype=torch.bool, device=a.device), float("-inf"))
    return F.cross_entropy(logits, torch.arange(b, device=a.device) + b, reduction="none")


# ============================================================================================== the step
class _Both(nn.Module):
    """forward(x) -> logits, forward(x, projection=True) -> (logits, projection): one module for DDP."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model

    def forward(self, x: torch.Tensor, projection: bool = False):
        return self.module.forward_all(x) if projection else self.module(x)


@contextlib.contextmanager
def _running_stats_kept(model: nn.Module):
    """Inside: BatchNorm normalises with the batch's statistics as usual (train mode) but its running mean and
    variance do not move (momentum 0: running = 1 * running + 0 * batch, exact in float), and on exit the batch
    counters are put back. Not a copy back into the running buffers: batch_norm's backward keeps them, and an
    in-place write between the forward and the backward would invalidate the graph."""
    norms = [m for m in _unwrap(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    counts = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone() for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in zip(norms, momenta, counts):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """None (fp32), torch.bfloat16 or torch.float16 for autocast."""
    on = device.type == "cuda" if amp is None else amp  # device-ok
    if not on:
        return None
    if device.type == "cuda":  # device-ok
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


class TrainStep:
    """One optimiser step of a method, with its optimiser, scheduler and scaler (used by `train` and the
    benchmarks). `step(x, y)` returns (loss, correct, terms): device tensors, never synchronised.

    model: already on `device`. x: (B, C, H, W) float in [0, 1] (uint8 stacks for the faithful stages).
    """

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device, total_steps: int,
                 ddp: dict | None = None):
        cfg = self.cfg = config
        self.device, self.model = device, model
        self.amp_dtype = _amp_dtype(device, cfg.amp)
        self.channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last  # device-ok
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.trainable = self._select_parameters()
        self.attack_model = torch.compile(model) if cfg.compile else model
        net: nn.Module = _Both(model)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel
            uses_all = cfg.method == "clead_online" and cfg.contrastive_weight > 0
            net = DistributedDataParallel(net, device_ids=ddp.get("device_ids"), find_unused_parameters=not uses_all)
        self.net = torch.compile(net) if cfg.compile else net
        self.optimizer = torch.optim.SGD(self.trainable, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(i, total_steps, cfg.schedule, cfg.warmup, epochs=cfg.epochs,
                                                step_every=cfg.step_every, gamma=cfg.step_gamma))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        # the random starts of the training attack: its own stream, on the device (no host copies)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.step_index = 0
        self.total_steps = total_steps
        self._fn = {"standard": self._standard, "pgd_at": self._pgd_at, "trades": self._trades,
                    "clead_online": self._clead_online,
                    "faithful_encoder": self._faithful_encoder, "faithful_head": self._faithful_head}[cfg.method]

    # ------------------------------------------------------------------ plumbing
    def _select_parameters(self) -> list[nn.Parameter]:
        inner = _unwrap(self.model)
        if self.cfg.method == "faithful_head":
            for p in inner.parameters():
                p.requires_grad_(False)
            for p in inner.classifier.parameters():
                p.requires_grad_(True)
        if self.cfg.method == "faithful_encoder":
            return [p for n, p in inner.named_parameters() if not n.startswith("classifier.")]
        return [p for p in inner.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        """Train mode, except a frozen encoder (linear head stage) keeps its BatchNorm statistics."""
        if self.cfg.method == "faithful_head":
            self.model.eval()
        else:
            self.model.train()

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _attack(self, x: torch.Tensor, y: torch.Tensor, loss_fn=None) -> torch.Tensor:
        """PGD against the current model, without the per-call argument checks of `attacks.pgd` (they read
        tensor values, a host-device sync; the data were checked once when training started)."""
        cfg = self.cfg
        objective = _attacks._objective(loss_fn, False)
        run = _attacks._pgd_linf if cfg.norm == "linf" else _attacks._pgd_l2
        # bf16 autocast is safe for input gradients; fp16 without loss scaling may underflow: fp32 then
        ctx = self.autocast() if self.amp_dtype == torch.bfloat16 else contextlib.nullcontext()
        scale = self._eps_scale()
        eps, alpha = cfg.eps * scale, cfg.alpha * scale
        with _attacks._attack_mode(self.attack_model), ctx:
            start = _attacks._random_start(x, eps, cfg.norm, self.generator)
            return run(self.attack_model, x, y, start, eps, alpha, cfg.attack_steps, objective).detach()

    def _eps_scale(self) -> float:
        """eps_warmup's factor of eps and alpha at this step (a Python float from the step counter: no sync)."""
        if self.cfg.eps_warmup <= 0:
            return 1.0
        return min(1.0, (self.step_index + 1) / (self.cfg.eps_warmup * self.total_steps))

    def trades_attack(self, x: torch.Tensor) -> torch.Tensor:
        """TRADES' inner maximisation: x' maximising KL(f(x) || f(x')) in the eps L-inf ball and [0, 1].

        As the reference code (Zhang et al. 2019): start x + 0.001 * N(0, 1) (neither projected nor
        clamped), `attack_steps` signed-gradient steps of `alpha` on the summed KL, each projected onto the
        ball and clamped to [0, 1]; the model in eval mode (BatchNorm running statistics); p(x) fixed.
        x: (B, C, H, W) in [0, 1] -> (B, C, H, W) in [0, 1], detached.
        """
        cfg, model = self.cfg, self.attack_model
        scale = self._eps_scale()
        eps, alpha = cfg.eps * scale, cfg.alpha * scale
        ctx = self.autocast() if self.amp_dtype == torch.bfloat16 else contextlib.nullcontext()
        with _attacks._attack_mode(model), ctx:
            with torch.no_grad():
                p_clean = F.softmax(model(x).float(), dim=1)
            noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            x_adv = x.detach() + 0.001 * noise
            for _ in range(cfg.attack_steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv).float(), dim=1), p_clean, reduction="sum")
                grad, = torch.autograd.grad(kl, x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp_(0.0, 1.0)
        return x_adv.detach().clamp_(0.0, 1.0)

    # ------------------------------------------------------------------ step functions
    # each returns (loss, logits used for the accuracy or None, {name: detached scalar})
    def _standard(self, x, y):
        with self.autocast():
            logits = self.net(x)
            return F.cross_entropy(logits, y), logits, {}

    def _pgd_at(self, x, y):
        return self._ce_on(self._attack(x, y), y)

    def _trades(self, x, y):
        x_adv = self.trades_attack(x)
        with self.autocast():
            # two forward passes, as the reference code: BatchNorm's batch statistics of the clean term are
            # those of the clean batch alone (so beta = 0 is standard training exactly)
            logits_clean = self.net(x)
            logits_adv = self.net(x_adv)
            ce = F.cross_entropy(logits_clean, y)
            kl = trades_kl(logits_clean, logits_adv)
            loss = ce + self.cfg.trades_beta * kl
        return loss, logits_clean, {"ce": ce.detach(), "kl": kl.detach()}

    def _ce_on(self, x_adv, y):
        with self.autocast():
            logits = self.net(x_adv)
            return F.cross_entropy(logits, y), logits, {}

    def _clead_online(self, x, y):
        cfg, lam = self.cfg, self.cfg.contrastive_weight
        loss_fn = None
        if cfg.attack_loss == "contrastive":
            inner = _unwrap(self.model)
            with _attacks._attack_mode(inner), torch.no_grad(), self.autocast():
                z_fixed = inner.project(x)      # the clean anchors, fixed while the view is crafted
            loss_fn = lambda m, xa, ya: contrastive_attack_loss(z_fixed, _unwrap(m).project(xa), cfg.temperature)
        x_adv = self._attack(x, y, loss_fn)
        if lam == 0 and not cfg.clean_ce:
            # no term uses the clean images: forward x_adv alone, exactly the pgd_at step. Not a mere saving: with
            # BatchNorm, clean images in the batch would change the statistics that normalise x_adv, and lambda = 0
            # would no longer be PGD-AT (measured in tests/test_batchnorm.py).
            return self._ce_on(x_adv, y)
        b = x.shape[0]
        with self.autocast():
            if cfg.split_views:
                with _running_stats_kept(self.model):     # the clean pass leaves the running statistics alone
                    clean_out = self.net(x, projection=lam != 0)
                adv_out = self.net(x_adv, projection=lam != 0)
                if lam == 0:
                    logits_clean, logits_adv = clean_out, adv_out
                else:
                    (logits_clean, z_clean), (logits_adv, z_adv) = clean_out, adv_out
            elif lam == 0:
                logits_clean, logits_adv = self.net(torch.cat([x, x_adv])).split(b)
            else:
                logits, z = self.net(torch.cat([x, x_adv]), projection=True)
                logits_clean, logits_adv = logits.split(b)
                z_clean, z_adv = z.split(b)
            if lam == 0:
                con = None
            else:
                if cfg.supervised_contrastive:
                    con = supcon(torch.cat([z_clean, z_adv]), torch.cat([y, y]), temperature=cfg.temperature)
                else:
                    con = info_nce(z_clean, z_adv, temperature=cfg.temperature)
            ce = F.cross_entropy(logits_adv, y)
            if cfg.clean_ce:
                ce = 0.5 * (ce + F.cross_entropy(logits_clean, y))
            loss = ce if con is None else ce + lam * con
        terms = {"ce": ce.detach()}
        if con is not None:
            terms["contrastive"] = con.detach()
        return loss, logits_adv, terms

    @staticmethod
    def _unstack(xb: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """uint8 (B, parts*C, H, W) -> parts float tensors (B, C, H, W) in [0, 1]."""
        return list(xb.float().div_(255.0).chunk(parts, dim=1))

    def _faithful_encoder(self, x, y):
        clean, v1, v2 = self._unstack(x, 3)
        with self.autocast():
            _, z = self.net(torch.cat([clean, v1, v2]), projection=True)
            z_clean, z1, z2 = z.chunk(3)
            loss = info_nce(z_clean, z1, z2, temperature=self.cfg.temperature)
        return loss, None, {}

    def _faithful_head(self, x, y):
        parts = self._unstack(x, x.shape[1] // _unwrap(self.model).in_channels)
        use_view = self.cfg.head_fgsm and len(parts) > 1 and head_uses_fgsm(self.cfg, self.step_index)
        return self._ce_on(parts[1] if use_view else parts[0], y)

    # ------------------------------------------------------------------ one step
    def step(self, x: torch.Tensor, y: torch.Tensor):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        loss, logits, terms = self._fn(x, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step_index += 1
        correct = (logits.detach().argmax(1) == y).sum() if logits is not None else None
        return loss.detach().float(), correct, terms

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step_index": self.step_index}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_index = int(state.get("step_index", 0))


def head_uses_fgsm(cfg: TrainConfig, step: int) -> bool:
    """Whether linear-head batch `step` (0-based) is the surrogate's FGSM view: 'random' draws it with
    probability head_fgsm_p from a CPU stream keyed by (seed, step) (deterministic per seed, the same after a
    resume, no device sync); 'alternate' takes every second batch."""
    if cfg.recipe("head_fgsm_mode") == "alternate":
        return step % 2 == 1
    return random.Random(cfg.seed * 1_000_003 + step).random() < cfg.head_fgsm_p


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
