"""Training: one loop for every method; a method is only a different loss inside the same step.

- ``standard``: cross-entropy on clean images. ``pgd_at`` (Madry et al. 2018): CE on PGD examples of the current model.
- ``trades`` (Zhang et al. 2019): CE(f(x), y) + beta * KL(f(x) || f(x')), x' = PGD on the KL from x + 0.001 * N(0, 1).
- ``clead_online``: C-LEAD as the abstract describes it, CE(adversarial) [+ CE(clean)] + lambda * InfoNCE(clean,
  adversarial projections); with lambda = 0 it *is* the pgd_at step (same seed, identical weights).
- ``faithful_encoder`` / ``faithful_head``: the published pipeline's stages, their loss from `clead_lite.faithful`.

The settings are `config.TrainConfig`. Reading order: `lr_factor`, `TrainStep` (one optimiser step: the attack, each
method's loss, mixed precision), `train` (the loop: held-out robust accuracy, keep-best, early stopping),
`train_epoch`. Checkpoints, resume and locks reach the loop through one `TrainHook`
(`clead_lite.course.runs.Checkpoint`); under torchrun, with the launcher's process group (`clead_lite.course.ddp`),
it trains data-parallel.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .attacks import fgsm, pgd
from .config import STAGES, TrainConfig
from .data import DeviceLoader, dataset_info, get_device
from .evaluation import accuracy, robust_accuracy
from .losses import info_nce, supcon, trades_kl
from .models import eval_mode, unwrap
from .validate import check_images, check_labels

__all__ = ["TRAIN_STEP_VERSION", "TrainConfig", "TrainStep", "TrainHook", "Run", "TrainResult", "History", "train",
           "train_epoch", "lr_factor", "split_validation", "TrainingDivergedError"]

# The version of the training maths. Part of every model-store key: bump it when a change makes the same settings
# train different weights, so that stored and shipped models of the old code are not taken for the new one's.
TRAIN_STEP_VERSION = 1


class TrainingDivergedError(RuntimeError):
    """The loss or the weights became non-finite (NaN / inf): training stopped."""


def lr_factor(step: int, total: int, schedule: str, warmup: float = 0.4, *, epochs: int = 1, step_every: int = 15,
              gamma: float = 0.5) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based) of `total`. onecycle: a triangle from 0 up to 1
    at `warmup` and down to 0 at the end (taken at step + 0.5: no step has lr exactly 0); piecewise: 1, then 0.1 from
    50 % and 0.01 from 75 % of the steps (Madry / Rice et al.); constant: 1; step: gamma ** (epoch // step_every)
    (StepLR per epoch: the authors' linear head)."""
    t = (step + 0.5) / max(total, 1)
    if schedule == "onecycle":
        return t / warmup if t <= warmup else max(0.0, (1.0 - t) / (1.0 - warmup))
    if schedule == "step":
        return gamma ** ((step // max(1, total // max(epochs, 1))) // step_every)
    if schedule == "piecewise":
        return 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01)
    return 1.0


def amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """Autocast's dtype or None (fp32). CUDA: bf16 from compute capability 8.0 (A100, H100), else fp16 (T4, V100:
    `torch.cuda.is_bf16_supported()` is True there by emulation; cuDNN has no bf16 convolutions). CPU: bf16 if asked."""
    if not (device.type == "cuda" if amp is None else amp):  # device-ok
        return None
    if device.type == "cuda":  # device-ok
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    return torch.bfloat16


class _Both(nn.Module):
    """forward(x) -> logits, forward(x, projection=True) -> (logits, projection): one module for DDP."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model

    def forward(self, x: torch.Tensor, projection: bool = False):
        return self.module.forward_all(x) if projection else self.module(x)


@contextlib.contextmanager
def _running_stats_kept(model: nn.Module):
    """BatchNorm normalises with the batch's statistics (train mode) but its running mean and variance do not move
    (momentum 0: exact in float); the batch counters are put back on exit. Not a copy back into the running
    buffers: batch_norm's backward keeps them, and an in-place write would invalidate the graph."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class TrainStep:
    """One optimiser step of `config.method`, `step(x, y)`; holds the optimiser, the lr schedule, the fp16 loss
    scaler and the attack's random stream. model: already on `device`. x: (B, C, H, W) float in [0, 1] (uint8
    stacks for the faithful stages). On CUDA: autocast (`amp_dtype`) and channels_last unless the config says no."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: torch.device, total_steps: int,
                 ddp: bool = False, loss: Callable | None = None):
        cfg = self.cfg = config
        self.device, self.model, self.total_steps, self.step_index = device, model, total_steps, 0
        self.inner = unwrap(model)       # the course model under any DDP / compile wrapper, unwrapped once here
        self.amp_dtype = amp_dtype(device, cfg.amp)
        self.channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last  # device-ok
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.trainable = self._select_parameters()
        self.attack_model = torch.compile(model) if cfg.compile else model
        net: nn.Module = _Both(model)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel
            uses_all = cfg.method == "clead_online" and cfg.contrastive_weight > 0
            ids = [device.index] if device.type == "cuda" else None  # device-ok
            net = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=not uses_all)
        self.net = torch.compile(net) if cfg.compile else net
        self.optimizer = torch.optim.SGD(self.trainable, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(i, total_steps, cfg.schedule, cfg.warmup, epochs=cfg.epochs,
                                                step_every=cfg.step_every, gamma=cfg.step_gamma))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        # the training attack's random starts: its own stream, on the device (no host copies)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        # loss(step, x, y): a stage of the faithful pipeline brings its own (clead_lite.faithful)
        self.loss = (lambda x, y: loss(self, x, y)) if loss is not None else {
            "standard": self.ce, "pgd_at": lambda x, y: self.ce(self.attack(x, y), y), "trades": self._trades,
            "clead_online": self._clead_online}[cfg.method]

    def step(self, x: torch.Tensor, y: torch.Tensor):
        """One optimiser step on the batch (x, y) -> (loss, number correct or None, {term: value}): device
        tensors, not read here (reading one would make the CPU wait for the GPU)."""
        if self.channels_last:       # the memory layout of the fastest GPU convolutions
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        loss, logits, terms = self.loss(x, y)  # the method's loss; the adversarial methods attack x inside it
        self.scaler.scale(loss).backward()     # fp16: the loss scaled so that small gradients do not flush to 0
        # the scaler unscales the gradients first and skips the step if fp16 overflowed (without fp16: a plain step)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()                  # the learning rate moves every step, not every epoch
        self.step_index += 1
        correct = (logits.detach().argmax(1) == y).sum() if logits is not None else None
        return loss.detach().float(), correct, terms

    def autocast(self):
        return contextlib.nullcontext() if self.amp_dtype is None else torch.autocast(self.device.type, self.amp_dtype)

    def attack(self, x: torch.Tensor, y: torch.Tensor, loss_fn=None, start: torch.Tensor | None = None) -> torch.Tensor:
        """The training attack against the current model: PGD (or FGSM-RS: one step) from a random start or `start`,
        eps and alpha scaled by the warm-up; inside the step's autocast (sign gradients ignore the loss scale)."""
        eps, alpha = self.eps_now()
        with self.autocast():
            return pgd(self.attack_model, x, y, eps, alpha, self.cfg.attack_steps, norm=self.cfg.norm,
                       loss_fn=loss_fn, generator=self.generator, start=start).detach()

    def eps_now(self) -> tuple[float, float]:
        """(eps, alpha) at this step: eps_warmup grows both linearly (a Python float from the counter: no sync)."""
        cfg = self.cfg
        scale = 1.0 if cfg.eps_warmup <= 0 else min(1.0, (self.step_index + 1) / (cfg.eps_warmup * self.total_steps))
        return cfg.eps * scale, cfg.alpha * scale

    # the loss of each method: (loss, logits for the training accuracy or None, {term name: detached scalar})
    def ce(self, x, y):
        """Cross-entropy of the model on x: the loss of standard training (and of pgd_at, on the attacked x)."""
        with self.autocast():
            logits = self.net(x)
            return F.cross_entropy(logits, y), logits, {}

    def trades_attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """TRADES' inner maximisation: PGD on KL(f(x) || f(x')) from x + 0.001 * N(0, 1) (not projected), p(x)
        fixed, the model in eval mode, as in the authors' code (y is not used by the loss). x: (B, C, H, W) in
        [0, 1], y: (B,) int64 -> x': (B, C, H, W) in [0, 1]."""
        with eval_mode(self.attack_model), torch.no_grad(), self.autocast():
            p_clean = F.softmax(self.attack_model(x).float(), dim=1)
        kl = lambda m, xa, ya: F.kl_div(F.log_softmax(m(xa).float(), dim=1), p_clean, reduction="none").sum(1)
        start = x + 0.001 * torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return self.attack(x, y, kl, start)

    def _trades(self, x, y):
        x_adv = self.trades_attack(x, y)
        with self.autocast():
            # two forward passes, as the reference code: the clean term's BatchNorm statistics are the clean
            # batch's alone (so beta = 0 is standard training exactly)
            logits_clean, logits_adv = self.net(x), self.net(x_adv)
            ce, kl_term = F.cross_entropy(logits_clean, y), trades_kl(logits_clean, logits_adv)
            loss = ce + self.cfg.trades_beta * kl_term
        return loss, logits_clean, {"ce": ce.detach(), "kl": kl_term.detach()}

    def _clead_online(self, x, y):
        cfg, lam = self.cfg, self.cfg.contrastive_weight
        loss_fn = None
        if cfg.attack_loss == "contrastive":     # the view pushed away from its clean anchor (fixed meanwhile)
            with eval_mode(self.inner), torch.no_grad(), self.autocast():
                z_fixed = self.inner.project(x)
            loss_fn = lambda m, xa, ya: info_nce(z_fixed, self.inner.project(xa), temperature=cfg.temperature,
                                                 reduction="none")
        x_adv = self.attack(x, y, loss_fn)
        if lam == 0 and not cfg.clean_ce:
            # no term uses the clean images: forward x_adv alone, exactly the pgd_at step. Not a mere saving: with
            # BatchNorm, clean images in the batch would change the statistics that normalise x_adv
            return self.ce(x_adv, y)
        b, project = x.shape[0], lam != 0
        with self.autocast():
            if cfg.split_views:      # two passes, each view normalised by its own BatchNorm batch statistics
                with _running_stats_kept(self.inner):     # the clean pass leaves the running statistics alone
                    clean_out = self.net(x, projection=project)
                adv_out = self.net(x_adv, projection=project)
            else:                    # one concatenated batch, the SimCLR way
                out = self.net(torch.cat([x, x_adv]), projection=project)
                clean_out, adv_out = zip(*(t.split(b) for t in out)) if project else out.split(b)
            logits_clean, z_clean = clean_out if project else (clean_out, None)
            logits_adv, z_adv = adv_out if project else (adv_out, None)
            ce = F.cross_entropy(logits_adv, y)
            if cfg.clean_ce:
                ce = 0.5 * (ce + F.cross_entropy(logits_clean, y))
            if lam == 0:
                return ce, logits_adv, {"ce": ce.detach()}
            if cfg.supervised_contrastive:
                con = supcon(torch.cat([z_clean, z_adv]), torch.cat([y, y]), temperature=cfg.temperature)
            else:
                con = info_nce(z_clean, z_adv, temperature=cfg.temperature)
            loss = ce + lam * con
        return loss, logits_adv, {"ce": ce.detach(), "contrastive": con.detach()}

    def _select_parameters(self) -> list[nn.Parameter]:
        inner = self.inner
        if self.cfg.method == "faithful_head":     # a linear head on a frozen encoder
            for p in inner.parameters():
                p.requires_grad_(False)
            for p in inner.classifier.parameters():
                p.requires_grad_(True)
        if self.cfg.method == "faithful_encoder":
            return [p for n, p in inner.named_parameters() if not n.startswith("classifier.")]
        return [p for p in inner.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        """Train mode, except a frozen encoder (linear head stage) keeps its BatchNorm statistics."""
        self.model.train(self.cfg.method != "faithful_head")


class History(list):
    """A list of record dicts: kind='step' (every log_every steps) and kind='epoch' (every epoch)."""

    def frame(self, kind: str | None = None):
        """The records as a pandas DataFrame; `kind='epoch'` or `'step'` keeps one kind."""
        import pandas as pd
        return pd.DataFrame([r for r in self if kind is None or r.get("kind") == kind])

    def epochs(self) -> list[dict]:
        return [r for r in self if r.get("kind") == "epoch"]


@dataclass
class Run:
    """The state of one training run, what a `TrainHook` reads and (to resume) restores."""
    model: nn.Module
    step: TrainStep
    cfg: TrainConfig
    dataset: str | None
    x_train: torch.Tensor              # the images trained on, before the held-out split (a resume checks them)
    y_train: torch.Tensor
    rank: int = 0                      # several GPUs: only rank 0 writes
    show: bool = False                 # progress output wanted
    history: History = field(default_factory=History)
    epoch: int = 0                     # epochs done
    best: dict = field(default_factory=lambda: {"epoch": None, "val_acc": None, "bad_epochs": 0, "model": None})
    finished: bool = False             # a finished run restored by a hook: nothing left to train
    stopped_early: bool = False
    kept: str = "no checkpoint of this run was written"   # what a hook keeps, for the divergence message
    checkpoint_path: str | None = None                     # where a hook checkpoints: TrainResult.checkpoint_path


class TrainHook:
    """What the course layer plugs into `train` (checkpoints, resume, a lock): every method is optional."""

    def start(self, run: Run) -> None:
        """Before the first epoch: may restore `run` (weights, optimiser, random streams, history, epoch)."""

    def epoch_end(self, run: Run) -> None:
        """After every epoch's record and keep-best bookkeeping."""

    def end(self, run: Run) -> None:
        """After training (the kept weights are in run.model)."""

    def close(self) -> None:
        """Always called last, also after an error."""


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


def train(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, config: TrainConfig | None = None, *,
          x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, dataset: str | None = None,
          device: str | torch.device | None = None, progress: bool = True,
          callback: Callable[[dict, nn.Module], bool | None] | None = None, hook: TrainHook | None = None,
          loss: Callable | None = None, select: str | None = None, **changes) -> TrainResult:
    """Train `model` (a course model) in place on the device with `config`, fields overridden by `changes` (epochs=2).

    x_train: (N, C, H, W) float in [0, 1], y_train: (N,) int64. x_val / y_val: held-out images for the per-epoch
    PGD accuracy (else `n_val` images split off x_train). dataset: the default eps and the augmentation.
    callback(record, model): every history record; True from an epoch record stops after it. hook: checkpoints and
    resume. loss(step, x, y) -> (loss, logits or None, {term: value}): replaces the method's loss (the faithful
    stages). select: what keep-best watches, 'val_pgd_acc' or 'val_clean_acc' (None: PGD when adversarial).
    """
    t_start = time.perf_counter()
    cfg, x_fit, y_fit, x_val, y_val = _prepare(model, x_train, y_train, config, changes, x_val, y_val, dataset)
    device = get_device(device)
    ddp = dist.is_available() and dist.is_initialized()     # several processes under torchrun: data-parallel
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    show = progress and rank == 0
    if device.type == "cuda":  # device-ok
        torch.backends.cudnn.benchmark = True     # one batch shape throughout: cuDNN's fastest kernels, picked once
    if x_val is not None:
        x_val, y_val = x_val.to(device), y_val.to(device)
    # the training set lives on the device, shuffled and augmented there: no host copy per batch
    per_rank = max(1, cfg.batch_size // world)
    info = dataset_info(dataset) if dataset is not None and cfg.augment and cfg.method not in STAGES else None
    loader = DeviceLoader(x_fit, y_fit, per_rank, device=device, drop_last=len(y_fit) // world >= per_rank,
                          seed=cfg.seed, rank=rank, world_size=world, crop_pad=info.crop_pad if info else 0,
                          flip=info.flip if info else False)
    if len(loader) == 0:
        raise ValueError(f"no training batch: {len(y_fit)} images, batch_size {cfg.batch_size}")
    model.to(device)
    run = Run(model, TrainStep(model, cfg, device, cfg.epochs * len(loader), ddp, loss), cfg, dataset, x_train,
              y_train, rank=rank, show=show)
    select = select or ("val_pgd_acc" if cfg.adversarial else "val_clean_acc")
    hook = hook or TrainHook()
    try:
        hook.start(run)       # a resumed run starts at run.epoch; a finished or stopped one trains no more
        for epoch in range(run.epoch, cfg.epochs if not (run.finished or run.stopped_early) else run.epoch):
            record = train_epoch(run.step, loader, epoch, run.history, show, callback, ddp)
            _check_finite(record, run, epoch)
            if x_val is not None:      # the held-out robust accuracy: keep the best epoch, stop when it falls
                record.update(held_out_accuracy(run.step.inner, x_val, y_val, cfg, epoch,
                                                with_pgd=select == "val_pgd_acc" or cfg.method != "faithful_head"))
                value, best = record[select], run.best
                if best["val_acc"] is None or value > best["val_acc"]:
                    best.update(epoch=epoch + 1, val_acc=value, bad_epochs=0,
                                model={k: v.detach().clone() for k, v in run.step.inner.state_dict().items()})
                else:
                    best["bad_epochs"] += 1
                record["best_epoch"] = best["epoch"]
                if cfg.co_drop is not None and cfg.adversarial:   # catastrophic overfitting (Wong et al. 2020)
                    previous, best["previous_pgd"] = best.get("previous_pgd"), record["val_pgd_acc"]
                    collapsed = previous is not None and record["val_pgd_acc"] < previous - cfg.co_drop
                    record["catastrophic_overfitting"] = collapsed
            record["seconds"] = time.perf_counter() - record.pop("_t0")
            run.history.append(record)
            run.epoch = epoch + 1
            if show:
                _print_epoch(record, cfg)
            stop = cfg.early_stop_patience is not None and run.best["bad_epochs"] >= cfg.early_stop_patience
            stop = stop or bool(record.get("catastrophic_overfitting"))
            hook.epoch_end(run)
            if callback is not None and callback(record, model) is True:
                stop = True
            if stop:
                run.stopped_early = True
                break
        if not run.finished and cfg.keep_best and run.best["model"] is not None:
            run.step.inner.load_state_dict(run.best["model"])
        hook.end(run)
    finally:
        hook.close()
        if cfg.method == "faithful_head":   # unfreeze the encoder for whoever uses the model next
            for p in run.step.inner.parameters():
                p.requires_grad_(True)
    model.eval()
    return TrainResult(model=model, history=run.history, config=cfg, best_epoch=run.best["epoch"],
                       best_val_acc=run.best["val_acc"], epochs_run=len(run.history.epochs()),
                       stopped_early=run.stopped_early, seconds=time.perf_counter() - t_start,
                       checkpoint_path=run.checkpoint_path)


def train_epoch(step: TrainStep, loader: DeviceLoader, epoch: int, history: History, show: bool, callback,
                ddp) -> dict:
    """One pass over the loader -> the epoch's record (`train` adds the held-out accuracy). The sums stay on the
    device and are read every `log_every` steps only: reading a device value waits for the GPU, the one sync."""
    from tqdm.auto import tqdm
    t0, cfg = time.perf_counter(), step.cfg
    step.train_mode()
    loader.set_epoch(epoch)            # the epoch's shuffle and augmentation, from the seed and the epoch
    zero = lambda: torch.zeros((), device=step.device)
    totals, window = {"loss": zero(), "correct": zero()}, {"loss": zero(), "correct": zero()}  # epoch, log window
    seen = seen_window = 0
    bar = tqdm(total=len(loader), desc=f"{cfg.method} {epoch + 1}/{cfg.epochs}", disable=not show, leave=False,
               dynamic_ncols=True)
    for i, (xb, yb) in enumerate(loader):
        loss, correct, terms = step.step(xb, yb)
        n = yb.shape[0]
        for acc in (totals, window):   # sums of per-image values, on the device
            acc["loss"] += loss * n
            if correct is not None:
                acc["correct"] += correct
            for k, v in terms.items():
                acc[k] = acc.get(k, zero()) + v.float() * n
        seen, seen_window = seen + n, seen_window + n
        bar.update(1)
        if (i + 1) % cfg.log_every == 0 or i + 1 == len(loader):     # the window's means: float() is the sync
            means = {k: float(v) / seen_window for k, v in window.items()}
            rec = _record("step", epoch + (i + 1) / len(loader), step, means)
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", **({"acc": f"{rec['acc']:.3f}"} if "acc" in rec else {}))
            if callback is not None:
                callback(rec, step.model)
            window, seen_window = {k: zero() for k in window}, 0
    bar.close()
    keys = sorted(totals)
    sums = torch.stack([totals[k] for k in keys] + [torch.tensor(float(seen), device=step.device)])
    if ddp:
        # DDP sends rank 0's buffers at the START of a forward: after the last one each rank holds its own
        # BatchNorm statistics; make them rank 0's (tests/test_batchnorm.py). Then add up every rank's sums.
        for buffer in step.inner.buffers():
            dist.broadcast(buffer, src=0)
        dist.all_reduce(sums)
    count = float(sums[-1])
    record = _record("epoch", epoch + 1, step, {k: float(v) / count for k, v in zip(keys, sums[:-1])})
    record.update(images=int(count), images_per_s=count / max(time.perf_counter() - t0, 1e-9), _t0=t0)
    return record


def _record(kind: str, epoch: float, step: TrainStep, means: dict) -> dict:
    rec = {"kind": kind, "epoch": epoch, "step": step.step_index, "loss": means.pop("loss")}
    if kind == "step":
        rec["lr"] = step.optimizer.param_groups[0]["lr"]
    accuracy_ = means.pop("correct")
    if step.cfg.method != "faithful_encoder":     # the encoder stage has no labels, hence no accuracy
        rec["acc"] = accuracy_
    rec.update(means)
    if kind == "epoch":
        rec["lr"] = step.optimizer.param_groups[0]["lr"]
    return rec


def held_out_accuracy(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, cfg: TrainConfig,
                      epoch: int, with_pgd: bool = True) -> dict:
    """Held-out clean and (with_pgd) PGD-`val_steps` accuracy (fp32, eval mode, a seeded generator per epoch);
    FGSM too when watching for catastrophic overfitting (FGSM accuracy rising while PGD accuracy collapses)."""
    g = torch.Generator(device=x_val.device).manual_seed(cfg.seed * 1_000_003 + epoch)
    # the training attack's step suits PGD; FGSM-RS's 1.25 eps does not: Madry's rule for the check then
    alpha = cfg.alpha if cfg.attack == "pgd" else min(cfg.eps, 2.5 * cfg.eps / cfg.val_steps)
    attack = lambda m, xb, yb: pgd(m, xb, yb, eps=cfg.eps, alpha=alpha, steps=cfg.val_steps, norm=cfg.norm,
                                   generator=g)
    out = {"val_clean_acc": accuracy(model, x_val, y_val)}
    if with_pgd:
        out["val_pgd_acc"] = robust_accuracy(model, x_val, y_val, attack)
    if cfg.attack == "fgsm_rs" or cfg.co_drop is not None:
        out["val_fgsm_acc"] = robust_accuracy(model, x_val, y_val, lambda m, xb, yb: fgsm(m, xb, yb, eps=cfg.eps))
    return out


def split_validation(x: torch.Tensor, y: torch.Tensor, n_val: int, seed: int):
    """A seeded held-out split: (x_train, y_train, x_val, y_val)."""
    if n_val >= len(y):
        raise ValueError(f"n_val={n_val} leaves no training images (the training set has {len(y)})")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 7919))
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


def _prepare(model, x, y, config, changes, x_val, y_val, dataset):
    """`train`'s entry checks, once (the settings, the images and labels: values read here, before any step), then
    the held-out split: (cfg, x_fit, y_fit, x_val, y_val)."""
    cfg = config or TrainConfig()
    cfg = cfg.replace(**changes) if changes else cfg
    if cfg.method == "clead_faithful":
        raise ValueError("method 'clead_faithful' is a pipeline of stages, not one loop: call "
                         "train_faithful(x_train, y_train, config, dataset=...) (or its stages)")
    if dataset is not None:
        dataset_info(dataset)          # an unknown name fails here
    cfg = cfg.resolved(dataset, need_eps=cfg.adversarial or x_val is not None or cfg.n_val > 0)
    inner = unwrap(model)
    if cfg.method not in STAGES:
        check_images(x, "x_train", getattr(inner, "in_channels", None))
    elif x.dtype != torch.uint8:
        raise TypeError(f"the {cfg.method} stage takes uint8 image stacks, got {x.dtype}")
    check_labels(y, x.shape[0], getattr(inner, "num_classes", None), name="y_train")
    if x_val is not None:
        check_images(x_val, "x_val", getattr(inner, "in_channels", None))
        check_labels(y_val, x_val.shape[0], name="y_val")
        if cfg.n_val:
            x_val, y_val = x_val[:cfg.n_val], y_val[:cfg.n_val]
    elif cfg.n_val > 0:
        x, y, x_val, y_val = split_validation(x, y, cfg.n_val, cfg.seed)
    return cfg, x, y, x_val, y_val


def _check_finite(record: dict, run: Run, epoch: int) -> None:
    """Stop a diverged run before its epoch is kept (one sync per epoch). With fp16 loss scaling an inf loss is a
    skipped step, not divergence: only the weights count then."""
    params = [p.detach() for p in run.step.inner.parameters()]
    weights_ok = bool(torch.stack([torch.isfinite(p).all() for p in params]).all()) if params else True
    loss_ok = math.isfinite(record["loss"]) or run.step.scaler.is_enabled()
    if weights_ok and loss_ok:
        return
    what, cfg = "the loss" if not loss_ok else "the weights", run.cfg
    raise TrainingDivergedError(
        f"training diverged: {what} became non-finite (loss {record['loss']}) in epoch {epoch + 1}/{cfg.epochs} of "
        f"{cfg.method} at peak lr {cfg.lr:g}; {run.kept}. Lower the learning rate (--lr / lr=...) and train again")


def _print_epoch(record: dict, cfg: TrainConfig) -> None:
    from tqdm.auto import tqdm
    parts = [f"{cfg.method} epoch {record['epoch']}/{cfg.epochs}", f"loss {record['loss']:.4f}"]
    if "acc" in record:
        parts.append(f"train acc {record['acc']:.3f}")
    if "val_clean_acc" in record:
        pgd_ = f" PGD-{cfg.val_steps} {record['val_pgd_acc']:.3f}" if "val_pgd_acc" in record else ""
        parts.append(f"held-out clean {record['val_clean_acc']:.3f}{pgd_}")
    if "val_fgsm_acc" in record:
        parts.append(f"FGSM {record['val_fgsm_acc']:.3f}")
    tqdm.write("  ".join(parts + [f"{record['seconds']:.1f} s"]))
    if record.get("catastrophic_overfitting"):
        tqdm.write(f"catastrophic overfitting at epoch {record['epoch']}: held-out PGD accuracy fell to "
                   f"{record['val_pgd_acc']:.3f} (FGSM {record.get('val_fgsm_acc', float('nan')):.3f}); "
                   f"stopped, keeping epoch {record['best_epoch']}")
