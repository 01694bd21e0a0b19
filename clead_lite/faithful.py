"""The published C-LEAD pipeline (`clead_faithful`) as the authors' code runs it; `train_faithful` runs its stages:
1. `train_surrogate`: a standard classifier;
2. `precompute_adversarial_views`: one 8-bit adversarial copy of every training image per view kind, made once
   against the fixed surrogate (some on crops or augmentations: `random_resized_crop`, `simclr_augment`);
3. `finetune_encoder`: the encoder fine-tuned with the 3-view InfoNCE, no labels;
4. `train_linear_head`: a linear head on the frozen encoder.
Each learned stage is one `training.train` call with a `TrainConfig`; the pipeline's own settings: `FaithfulConfig`.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import cw_l2, fgsm, pgd
from .config import SCHEDULES, TrainConfig
from .data import DATASETS, dataset_info, get_device
from .models import MODELS, build_model, check_batch, device_of, unwrap
from .losses import info_nce
from .training import History, TrainHook, TrainResult, TrainStep, split_validation, train
from .validate import Settings, check_choice, check_eps, check_images, check_int, check_settings

__all__ = ["random_resized_crop", "color_jitter", "simclr_augment", "precompute_adversarial_views",
           "finetune_encoder", "train_linear_head", "train_surrogate", "train_faithful", "FaithfulResult",
           "FaithfulConfig", "FAITHFUL_RECIPES", "VIEW_KINDS", "head_uses_fgsm", "to_uint8"]

VIEW_KINDS = ("pgd", "pgd_crop", "fgsm", "fgsm_crop", "cw", "cw_crop", "pgd_aug", "fgsm_aug", "cw_aug")
# the fields only 'clead_online' may set: each stage turns them off, whatever config it is given
_ONLINE_OFF = dict(attack_loss="ce", clean_ce=False, supervised_contrastive=False, split_views=False)
FAITHFUL_RECIPES = {   # the two readings of the authors' code; a None field of FaithfulConfig takes its recipe's value
    # as the authors' code runs: CW view on a SimCLR augmentation, head batches FGSM at random, lr halved every 15
    "authors": dict(view_kinds=("pgd_crop", "fgsm", "cw_aug"), encoder_views=("pgd_crop", "cw_aug"),
                    head_fgsm_mode="random", head_epochs=50, head_lr=0.1, head_schedule="step", head_select="clean"),
    # this course's first version: plain CW view, every second head batch FGSM, the run's head epochs / lr / schedule
    "course-v1": dict(view_kinds=("pgd_crop", "fgsm", "cw"), encoder_views=("pgd_crop", "cw"),
                      head_fgsm_mode="alternate", head_epochs=None, head_lr=None, head_schedule=None,
                      head_select="pgd"),
}


@dataclass(frozen=True)
class FaithfulConfig(Settings):
    """The published pipeline's own settings (checked when made). Stage epochs None: the TrainConfig's `epochs`
    (head: the recipe's)."""
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
        choices = dict(faithful_recipe=tuple(FAITHFUL_RECIPES), encoder_init=("surrogate", "scratch"),
                       head_fgsm_mode=("random", "alternate"), head_schedule=SCHEDULES, head_select=("clean", "pgd"))
        epochs = ("surrogate_epochs", "encoder_epochs", "head_epochs")
        check_settings(self, choices=choices, ints={"view_steps": 1, "cw_steps": 1, **dict.fromkeys(epochs, 1)},
                       optional=("head_fgsm_mode", "head_schedule", "head_select", *epochs),
                       fractions={"head_fgsm_p": "[0, 1]"}, positive=("head_lr", "view_alpha"), bools=("head_fgsm",))
        view_kinds, encoder_views = self.recipe("view_kinds"), self.recipe("encoder_views")
        for kind in view_kinds:
            check_choice(kind, "view kind (view_kinds)", VIEW_KINDS)
        if len(encoder_views) != 2 or any(kind not in view_kinds for kind in encoder_views):
            raise ValueError(f"encoder_views must name two of the computed view_kinds {view_kinds} (the 3-view "
                             f"loss: clean + 2), got {encoder_views}")
        for name in ("crop_scale", "aug_crop_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {getattr(self, name)}")

    def recipe(self, name: str):
        """The field `name`, or its recipe's value when it is None (e.g. view_kinds, head_select)."""
        value = getattr(self, name)
        return FAITHFUL_RECIPES[self.faithful_recipe][name] if value is None else value

    def resolved(self) -> "FaithfulConfig":
        """The recipe's values written into the None fields that name the pipeline's views and head batches."""
        return self.replace(**{k: self.recipe(k) for k in ("view_kinds", "encoder_views", "head_fgsm_mode",
                                                            "head_select")})


def head_uses_fgsm(faithful: FaithfulConfig, seed: int, step: int) -> bool:
    """Whether linear-head batch `step` (0-based) is the surrogate's FGSM view: 'random' draws it with
    probability head_fgsm_p from a CPU stream keyed by (seed, step) (the same after a resume, no device sync);
    'alternate' takes every second batch."""
    if faithful.recipe("head_fgsm_mode") == "alternate":
        return step % 2 == 1
    return random.Random(seed * 1_000_003 + step).random() < faithful.head_fgsm_p


def encoder_loss(step: TrainStep, x: torch.Tensor, y: torch.Tensor):
    """The encoder stage's loss: 3-view InfoNCE. x: uint8 (B, 3C, H, W), the clean image and two views stacked."""
    clean, v1, v2 = x.float().div_(255.0).chunk(3, dim=1)
    with step.autocast():
        _, z = step.net(torch.cat([clean, v1, v2]), projection=True)
        return info_nce(*z.chunk(3), temperature=step.cfg.temperature), None, {}


def head_loss(faithful: FaithfulConfig) -> Callable:
    """The linear-head stage's loss: cross-entropy on the clean image, or on its FGSM view (`head_uses_fgsm`).
    x: uint8 (B, C or 2C, H, W): the clean image [and its FGSM view] stacked along the channels."""
    def loss(step: TrainStep, x: torch.Tensor, y: torch.Tensor):
        parts = x.float().div_(255.0).chunk(x.shape[1] // step.inner.in_channels, dim=1)
        use_view = faithful.head_fgsm and len(parts) > 1 and head_uses_fgsm(faithful, step.cfg.seed, step.step_index)
        return step.ce(parts[1] if use_view else parts[0], y)
    return loss


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """x: float in [0, 1] -> uint8 in [0, 255] (rounded): the 8-bit storage of the published pipeline."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = False,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """SimCLR-style random resized crop (and optional horizontal flip) of every image, on x's device.

    x: (B, C, H, W) in [0, 1] -> same shape in [0, 1]: a box of `scale` times the area and aspect `ratio` is
    resized back to H x W (bilinear). Random numbers (here and below) from the CPU `generator`."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(scale[0], scale[1], generator=generator)
    r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()   # log-uniform
    sw = (area * r).sqrt().clamp(max=1.0)          # box width / image width
    sh = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sw)   # box centre in [-1, 1] coordinates
    cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - sh)
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sw * sign, cx
    theta[:, 1, 1], theta[:, 1, 2] = sh, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp_(0.0, 1.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luminance (ITU-R 601 weights, as torchvision); 1 channel: itself."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _hue_rotate(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Hue shift by h (B,) in turns, as a rotation of the chroma plane in YIQ (torchvision shifts H in HSV:
    close, not identical). 1-channel images are returned as they are."""
    if x.shape[1] != 3:
        return x
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          device=x.device, dtype=x.dtype)
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    angle = h.to(x.device, x.dtype) * 2 * math.pi
    c, s = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)


def color_jitter(x: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's RandomApply([ColorJitter(b, c, s, h)], p) on a batch, per image, on x's device.

    x: (B, C, H, W) in [0, 1] -> same shape in [0, 1]. Each selected image (probability p) gets the four
    adjustments in its own random order, factors f uniform in [max(0, 1 - v), 1 + v]: brightness x * f, contrast and
    saturation blends with the mean gray / the gray image; hue a shift in [-hue, hue] turns. On 1-channel
    images saturation and hue do nothing (as in torchvision)."""
    b = x.shape[0]
    dev = lambda t: t.to(x.device, x.dtype).view(-1, 1, 1, 1)
    factor = lambda v: dev(torch.empty(b).uniform_(max(0.0, 1 - v), 1 + v, generator=generator))
    fb, fc, fs = factor(brightness), factor(contrast), factor(saturation)
    fh = torch.empty(b).uniform_(-hue, hue, generator=generator)
    order = torch.rand(b, 4, generator=generator).argsort(dim=1)          # a random order per image
    apply = torch.rand(b, generator=generator) < p
    out = x
    for r in range(4):   # brightness, contrast, saturation and hue of every image; each keeps its r-th in order
        adjusted = torch.stack([(out * fb).clamp(0, 1),
                                (fc * out + (1 - fc) * _gray(out).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1),
                                (fs * out + (1 - fs) * _gray(out)).clamp(0, 1) if out.shape[1] == 3 else out,
                                _hue_rotate(out, fh).clamp(0, 1)])
        out = adjusted[order[:, r].to(x.device), torch.arange(b, device=x.device)]
    return torch.where(dev(apply).bool(), out, x)


def simclr_augment(x: torch.Tensor, scale: tuple[float, float] = (0.2, 1.0), jitter_p: float = 0.8,
                   gray_p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The authors' CW-view augmentation of x: (B, C, H, W) in [0, 1], on x's device: RandomResizedCrop(scale)
    -> horizontal flip (p 0.5) -> RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8) -> RandomGrayscale(p=0.2)."""
    out = random_resized_crop(x, scale, flip=True, generator=generator)
    out = color_jitter(out, p=jitter_p, generator=generator)
    gray = (torch.rand(x.shape[0], generator=generator) < gray_p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(gray, _gray(out).expand_as(out), out)


def precompute_adversarial_views(surrogate: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                                 kinds: tuple[str, ...] = ("pgd_crop", "fgsm", "cw"), steps: int = 3,
                                 alpha: float | None = None, cw_steps: int = 50, cw_c: float = 1.0,
                                 cw_kappa: float = 0.0, cw_lr: float = 0.01,
                                 crop_scale: tuple[float, float] = (0.5, 1.0), flip: bool = False,
                                 aug_crop_scale: tuple[float, float] = (0.2, 1.0), batch_size: int = 256,
                                 seed: int = 0, cache=None, device: str | torch.device | None = None,
                                 progress: bool = True) -> dict[str, torch.Tensor]:
    """One adversarial copy of every image per kind, against the fixed `surrogate`, stored as 8-bit.

    x: (N, C, H, W) in [0, 1], y: (N,) int64 -> {kind: (N, C, H, W) uint8 on the CPU}. Kinds: 'pgd' (L-inf eps,
    `steps` steps of `alpha`, default 3/8 eps), 'fgsm' (eps), 'cw' (CW-L2, unbounded, `cw_steps` Adam steps);
    '<kind>_crop' attacks a `random_resized_crop` of the image, '<kind>_aug' its `simclr_augment`. cache: None, or
    with `load(surrogate, x, y, params) -> views | None` and `save(surrogate, x, y, params, views)` (`ViewsCache`)."""
    from tqdm.auto import tqdm
    for k in kinds:
        check_choice(k, "view kind", VIEW_KINDS)
    check_eps(eps)
    for name, value in (("steps", steps), ("cw_steps", cw_steps), ("batch_size", batch_size)):
        check_int(value, name)
    check_batch(surrogate, x, y, name="surrogate")
    alpha = alpha if alpha is not None else 3 / 8 * eps
    has_crop, has_aug = (any(k.endswith(s) for k in kinds) for s in ("_crop", "_aug"))
    params = dict(kinds=list(kinds), eps=eps, steps=steps, alpha=alpha, cw_steps=cw_steps, cw_c=cw_c,
                  cw_kappa=cw_kappa, cw_lr=cw_lr, crop_scale=list(crop_scale), flip=flip, seed=seed, format=1)
    if has_aug:   # only then: views without '_aug' kinds keep their cache key
        params["aug_crop_scale"] = list(aug_crop_scale)
    views = cache.load(surrogate, x, y, params) if cache is not None else None
    if views is not None:
        return views
    device = get_device(device) if device is not None else device_of(surrogate)
    was_training = surrogate.training
    surrogate.eval()
    crop_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)     # its own stream: '_aug' kinds leave the crops unchanged
    out = {k: torch.empty(x.shape, dtype=torch.uint8) for k in kinds}
    for start in tqdm(range(0, x.shape[0], batch_size), desc="adversarial views", disable=not progress, leave=False):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        crop = random_resized_crop(xb, crop_scale, flip=flip, generator=crop_gen) if has_crop else None
        aug = simclr_augment(xb, aug_crop_scale, generator=aug_gen) if has_aug else None
        for k in kinds:
            src = crop if k.endswith("_crop") else aug if k.endswith("_aug") else xb
            base = k.removesuffix("_crop").removesuffix("_aug")
            if base == "pgd":
                adv = pgd(surrogate, src, yb, eps=eps, alpha=alpha, steps=steps,
                          generator=torch.Generator(device=device).manual_seed(seed + start))
            elif base == "fgsm":
                adv = fgsm(surrogate, src, yb, eps=eps)
            else:
                adv = cw_l2(surrogate, src, yb, c=cw_c, kappa=cw_kappa, steps=cw_steps, lr=cw_lr)
            out[k][start:start + batch_size] = to_uint8(adv.detach()).cpu()
    surrogate.train(was_training)
    if cache is not None:
        cache.save(surrogate, x, y, params, out)
    return out


def train_surrogate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig | None = None,
                    **kwargs) -> TrainResult:
    """Stage 1: a standard (non-robust) surrogate classifier. `kwargs` go to `train`."""
    cfg = (config or TrainConfig()).replace(method="standard", **_ONLINE_OFF)
    return train(model, x, y, cfg, **kwargs)


def _stack_uint8(x: torch.Tensor, views: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """x: (N, C, H, W) in [0, 1] and views [(name, (N, C, H, W) uint8)] -> (N, C * (1 + len(views)), H, W) uint8:
    stacked along the channels, so that one DeviceLoader shuffles them together."""
    for name, view in views:
        if view.shape != x.shape or view.dtype != torch.uint8:
            raise ValueError(f"{name} must be uint8 of shape {tuple(x.shape)}, got {view.dtype} {tuple(view.shape)}")
    return torch.cat([to_uint8(x), *(view for _, view in views)], dim=1)


def finetune_encoder(model: nn.Module, x: torch.Tensor, views: dict[str, torch.Tensor],
                     config: TrainConfig | None = None, *, view_names: tuple[str, str] | None = None,
                     **kwargs) -> TrainResult:
    """Stage 3: fine-tune the encoder (body + projection head) with `info_nce(z_clean, z_v1, z_v2)`, no labels;
    the classifier is left untouched. x: (N, C, H, W) in [0, 1]; views: {name: (N, C, H, W) uint8}."""
    names = tuple(view_names or FaithfulConfig().recipe("encoder_views"))
    for name in names:
        if name not in views:
            raise ValueError(f"view {name!r} is not in views (have {', '.join(views)})")
    check_images(x, "x")
    stack = _stack_uint8(x, [(f"view {name!r}", views[name]) for name in names])
    cfg = (config or TrainConfig()).replace(method="faithful_encoder", n_val=0, **_ONLINE_OFF)
    return train(model, stack, torch.zeros(len(x), dtype=torch.int64), cfg, loss=encoder_loss, **kwargs)


def train_linear_head(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig | None = None, *,
                      fgsm_view: torch.Tensor | None = None, faithful: FaithfulConfig | None = None,
                      reset: bool = True, **kwargs) -> TrainResult:
    """Stage 4: freeze the encoder (BatchNorm included), train a (re-initialised) linear classifier with CE.

    x: (N, C, H, W) in [0, 1], y: (N,) int64; fgsm_view: (N, C, H, W) uint8, the surrogate's FGSM view: with
    faithful.head_fgsm some batches use it instead of x (`head_uses_fgsm`). The epoch kept is the best on the
    held-out accuracy that the recipe's head_select names."""
    cfg, faithful = config or TrainConfig(), faithful or FaithfulConfig()
    check_images(x, "x")
    if reset:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            unwrap(model).classifier.reset_parameters()
    stack = _stack_uint8(x, [("fgsm_view", fgsm_view)] if faithful.head_fgsm and fgsm_view is not None else [])
    cfg = cfg.replace(method="faithful_head", **_ONLINE_OFF)
    select = "val_pgd_acc" if faithful.recipe("head_select") == "pgd" else "val_clean_acc"
    return train(model, stack, y, cfg, loss=head_loss(faithful), select=select, **kwargs)


@dataclass
class FaithfulResult:
    """The final classifier (encoder + linear head), the surrogate, and each stage's history."""
    model: nn.Module
    surrogate: nn.Module
    histories: dict[str, History]
    config: TrainConfig
    faithful: FaithfulConfig = field(default_factory=FaithfulConfig)
    views: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    seconds: float = 0.0

    @property
    def history(self) -> History:
        """All stages' records in one History, each tagged with 'stage'."""
        return History([{**r, "stage": s} for s, h in self.histories.items() for r in h])

    def frame(self, kind: str | None = None):
        return self.history.frame(kind)


def train_faithful(x_train: torch.Tensor, y_train: torch.Tensor, config: TrainConfig | None = None,
                   faithful: FaithfulConfig | None = None, *, dataset: str | None = None,
                   model_name: str | None = None, num_classes: int = 10, surrogate: nn.Module | None = None,
                   x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                   device: str | torch.device | None = None, progress: bool = True, cache=None,
                   callback: Callable | None = None, hook: TrainHook | None = None) -> FaithfulResult:
    """The published C-LEAD pipeline, all four stages. x_train: (N, C, H, W) in [0, 1], y_train: (N,) int64.

    surrogate: a trained standard model to reuse (stage 1 is skipped). cache: where the views are kept. hook: the
    head stage's; the others get `hook.stage('surrogate')` and `hook.stage('encoder')` (one checkpoint a stage)."""
    t0 = time.perf_counter()
    cfg = (config or TrainConfig(method="clead_faithful")).replace(method="clead_faithful").resolved(dataset)
    fc = (faithful or FaithfulConfig()).resolved()
    device = get_device(device)
    name = model_name or (dataset_info(dataset).model if dataset else None)
    if name is None and surrogate is None:
        raise ValueError("train_faithful needs dataset=... or model_name=... to build the models")
    if x_val is None and cfg.n_val > 0:
        x_train, y_train, x_val, y_val = split_validation(x_train, y_train, cfg.n_val, cfg.seed)
    common = dict(x_val=x_val, y_val=y_val, dataset=dataset, device=device, progress=progress, callback=callback)
    stage_hook = lambda s: hook.stage(s) if hook is not None else None
    base = cfg.replace(n_val=0)
    histories: dict[str, History] = {}
    if surrogate is None:
        torch.manual_seed(cfg.seed)
        surrogate = build_model(name, num_classes=num_classes)
        histories["surrogate"] = train_surrogate(surrogate, x_train, y_train, base.replace(
            epochs=fc.surrogate_epochs or cfg.epochs), hook=stage_hook("surrogate"), **common).history
    surrogate.to(device).eval()
    flip = DATASETS[dataset].flip if dataset else False
    views = precompute_adversarial_views(surrogate, x_train, y_train, eps=cfg.eps, kinds=fc.view_kinds,
                                         steps=fc.view_steps, alpha=fc.view_alpha, cw_steps=fc.cw_steps,
                                         crop_scale=fc.crop_scale, flip=flip, aug_crop_scale=fc.aug_crop_scale,
                                         seed=cfg.seed, cache=cache, device=device, progress=progress)
    if fc.encoder_init == "surrogate":
        model = copy.deepcopy(unwrap(surrogate))
    else:
        torch.manual_seed(cfg.seed + 1)
        model = build_model(name or next(n for n, cls in MODELS.items() if type(unwrap(surrogate)) is cls),
                            num_classes=num_classes)
    histories["encoder"] = finetune_encoder(model, x_train, views, base.replace(epochs=fc.encoder_epochs or cfg.epochs),
                                            view_names=fc.encoder_views, device=device, progress=progress,
                                            callback=callback, hook=stage_hook("encoder")).history
    head_cfg = base.replace(epochs=fc.recipe("head_epochs") or cfg.epochs, lr=fc.recipe("head_lr") or cfg.lr,
                            schedule=fc.recipe("head_schedule") or cfg.schedule)
    head = train_linear_head(model, x_train, y_train, head_cfg, fgsm_view=views.get("fgsm"), faithful=fc, hook=hook,
                             **common)
    histories["head"] = head.history
    return FaithfulResult(model=head.model.eval(), surrogate=surrogate, histories=histories, config=cfg, faithful=fc,
                          views=views, seconds=time.perf_counter() - t0)
