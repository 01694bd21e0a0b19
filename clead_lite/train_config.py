"""The settings of a training run: `TrainConfig` (every field, validated on construction, filled from a profile
by `TrainConfig.from_profile`), the method / schedule / view-kind names, the faithful pipeline's recipes and
the version of the training math that model-store keys carry. No torch computation here.
Floor 1: imports profiles, validate.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .course.profiles import Profile, dataset_info
from .validate import NORMS, check_choice, check_eps, check_int, check_nonnegative, check_positive

__all__ = ["METHODS", "SCHEDULES", "VIEW_KINDS", "FAITHFUL_RECIPES", "TRAIN_STEP_VERSION", "TrainConfig",
           "TrainingDivergedError"]

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
# model-store key (clead_lite.course.store): bump it when a change makes the same settings train different weights, so
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
