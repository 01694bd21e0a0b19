"""One optimiser step of each training method (`TrainStep`), the learning-rate schedules (`lr_factor`) and the
per-example contrastive loss the views can be crafted against. `training.train` runs these steps in its loop;
the benchmarks time them alone.
Floor 2: imports attacks, losses, models, train_config.
"""
from __future__ import annotations

import contextlib
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import attacks as _attacks
from .losses import info_nce, supcon, trades_kl
from .models import _unwrap
from .train_config import TrainConfig

__all__ = ["TrainStep", "lr_factor", "contrastive_attack_loss", "head_uses_fgsm"]


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
