"""Adversarial attacks in pixel space: FGSM, PGD (L-inf and L2), Carlini-Wagner L2 (fixed c, or the search
over c of the paper) and a random-noise baseline.

Every attack has the same interface, `attack(model, x, y, ...) -> x_adv`:
- `x`: (B, C, H, W) float in [0, 1] (the models normalise inside, so eps is in pixel units),
- `y`: (B,) int64 class indices (the target classes when `targeted=True`),
- `x_adv`: same shape and dtype as `x`, in [0, 1] and inside the eps ball around `x`.

The attacks put every module of the model in eval mode and restore each module's own mode afterwards,
take gradients with `torch.autograd.grad` w.r.t. the input only (parameters never get a `.grad`), run
under `torch.no_grad()` callers and under autocast, and check their arguments once at the start, never
inside the step loop. `make_attack("pgd", eps=0.3, alpha=0.01, steps=20)` binds settings into a
callable `attack(model, x, y)` (torchattacks-like), the form the evaluation functions take.

`loss_fn(model, x_adv, y) -> (B,)` is the per-example loss an attack maximises (default: cross-entropy;
with `targeted=True` the attack minimises it instead, i.e. maximises `-loss_fn`, pulling x towards the
target class y). C-LEAD uses it to attack a contrastive loss on `model.project(x_adv)`.
Floor 0: imports only `validate` and `models`.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import _unwrap, model_input_check
from .validate import (NORMS, check_choice, check_eps, check_int, check_labels, check_logits, check_nonnegative,
                       check_positive)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["fgsm", "pgd", "cw_l2", "cw_search_update", "random_noise", "ATTACKS", "Attack", "make_attack", "LossFn"]

# Added to the gradient's L2 norm before dividing (as torchattacks' PGDL2 does), so a zero gradient stays 0.
_GRAD_NORM_EPS = 1e-10


# ----------------------------------------------------------------------------------------------------------
# Argument checks (once per call)

def _check_params(params: dict) -> None:
    """Check the scalar settings of an attack; each error names the argument, its value and what is allowed."""
    norm = check_choice(params.get("norm", "linf"), "norm", NORMS)
    for name, value in params.items():
        if name == "eps":  # L-inf budgets live in [0, 1]; L2 budgets (e.g. 2.0 on MNIST) may exceed 1
            check_eps(value) if norm == "linf" else check_nonnegative(value, "eps")
        elif name in ("alpha", "c", "lr"):
            check_positive(value, name)
        elif name == "kappa":
            check_nonnegative(value, name)
        elif name in ("steps", "restarts", "binary_search_steps"):
            check_int(value, name, minimum=1)
        elif name in ("random_start", "targeted"):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        elif name == "loss_fn":
            if value is not None and not callable(value):
                raise TypeError(f"loss_fn must be None or a callable loss_fn(model, x_adv, y) -> (B,) loss, "
                                f"got {type(value).__name__}")
        elif name == "generator":
            if value is not None and not isinstance(value, torch.Generator):
                raise TypeError(f"generator must be None or a torch.Generator, got {type(value).__name__}")
    if params.get("restarts", 1) > 1 and not params.get("random_start", True):
        raise ValueError(f"restarts={params['restarts']} needs random_start=True "
                         "(without a random start every restart is the same run)")


def _check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """model: an nn.Module; x: (B, C, H, W) float in [0, 1] with the model's channels; y: (B,) int64 labels."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model_input_check(model, x)
    size = getattr(_unwrap(model), "image_size", None)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"x has {x.shape[-2]}x{x.shape[-1]} images, the model expects {size}x{size} "
                         f"(shape {tuple(x.shape)})")
    check_labels(y, x.shape[0], getattr(_unwrap(model), "num_classes", None))
    if y.device != x.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need gradients: call them outside torch.inference_mode() "
                           "(torch.no_grad() is fine)")


@contextmanager
def _attack_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode and gradients enabled; each module's own mode restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


# ----------------------------------------------------------------------------------------------------------
# Objectives

def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """model(x), checked to be (B, num_classes) logits (a shape check: no sync)."""
    return check_logits(model(x), x.shape[0])


def _objective(loss_fn: LossFn | None, targeted: bool) -> LossFn:
    """The per-example quantity the attack maximises: loss (untargeted) or -loss (targeted)."""
    if loss_fn is None:
        sign = -1.0 if targeted else 1.0
        return lambda model, x_adv, y: sign * F.cross_entropy(_logits(model, x_adv), y, reduction="none")

    def custom(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(model, x_adv, y)
        if not isinstance(loss, torch.Tensor) or loss.shape != (x_adv.shape[0],):
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a per-example loss of shape ({x_adv.shape[0]},), got {got}")
        return -loss if targeted else loss

    return custom


@torch.no_grad()
def _score(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, objective: LossFn,
           default_loss: bool, targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled (B,) bool, objective (B,) float) at x_adv: how bad x_adv is for the model, to rank restarts."""
    logits = _logits(model, x_adv)
    pred = logits.argmax(1)
    fooled = pred == y if targeted else pred != y
    if default_loss:  # reuse the logits: one forward pass
        value = F.cross_entropy(logits.float(), y, reduction="none")
        value = -value if targeted else value
    else:
        value = objective(model, x_adv, y).float()
    return fooled, value


# ----------------------------------------------------------------------------------------------------------
# Random draws (from `generator` when given; a CPU generator also works for tensors on another device)

def _uniform(x: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.empty(x.shape, dtype=x.dtype, device=device).uniform_(low, high, generator=generator).to(x.device)


def _normal(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.empty(x.shape, dtype=x.dtype, device=device).normal_(generator=generator).to(x.device)


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, 1, ..., 1) per-example L2 norm, shaped to broadcast against t."""
    return t.flatten(1).norm(p=2, dim=1).view((-1,) + (1,) * (t.dim() - 1))


# fp16 / bf16 inputs: rounding x - eps or a projected point to the input's dtype can leave the eps ball by
# up to half a unit in the last place (0.002 near 1 in bf16). Bounds and projections are computed in float32
# and rounded towards x, so |x_adv - x| <= eps holds exactly for the values returned.
_HALF = (torch.float16, torch.bfloat16)


def _round_toward(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t (float32, in [0, 1]) -> x.dtype, each value rounded towards x where nearest rounding would move it
    away from x: |result - x| <= |t - x| per pixel. x: fp16 / bf16 (other dtypes: a plain cast)."""
    if x.dtype not in _HALF:
        return t.to(x.dtype)
    t32, x32 = t.float(), x.float()
    d = t32.to(x.dtype)
    away = (d.float() - x32).abs() > (t32 - x32).abs()
    step = torch.where(d.float() > x32, -1, 1).to(torch.int16) * away.to(torch.int16)
    return (d.view(torch.int16) + step).view(x.dtype)   # one ulp towards x (values are >= 0)


def _linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """lo = max(x - eps, 0), hi = min(x + eps, 1) in x's dtype (inside the ball for fp16 / bf16 too)."""
    if x.dtype not in _HALF:
        return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    x32 = x.float()
    return _round_toward((x32 - eps).clamp_(min=0.0), x), _round_toward((x32 + eps).clamp_(max=1.0), x)


def _clip_linf(v: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """v clipped to [0, 1] (fp16 / bf16: to the eps ball's bounds, which v already respects up to rounding)."""
    if x.dtype not in _HALF:
        return v.clamp_(0.0, 1.0)
    lo, hi = _linf_bounds(x, eps)
    return v.clamp_(lo, hi)


def _l2_step_to(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """clip_[0,1](x + delta) in x's dtype; fp16 / bf16: computed in float32, rounded towards x."""
    if x.dtype not in _HALF:
        return (x + delta).clamp_(0.0, 1.0)
    return _round_toward((x.float() + delta.float()).clamp_(0.0, 1.0), x)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """A random point of the eps ball (clipped to [0, 1]): uniform per pixel for L-inf; for L2 a Gaussian
    direction scaled to a radius drawn uniformly in [0, eps] (as torchattacks does)."""
    if norm == "linf":
        return _clip_linf(x + _uniform(x, -eps, eps, generator), x, eps)
    delta = _normal(x, generator)
    radius = _uniform(x[:, :1, :1, :1], 0.0, 1.0, generator)  # (B, 1, 1, 1)
    if x.dtype in _HALF:
        delta, radius = delta.float(), radius.float()
    return _l2_step_to(x, delta * (radius / _l2_norm(delta) * eps))


# ----------------------------------------------------------------------------------------------------------
# FGSM

def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, loss_fn: LossFn | None = None,
         targeted: bool = False) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): x_adv = clip_[0,1](x + eps * sign(grad_x loss)).

    x: (B, C, H, W) float in [0, 1]; y: (B,) int64 (targets if `targeted`); eps in [0, 1] (L-inf).
    Returns x_adv: (B, C, H, W) in [0, 1] with |x_adv - x|_inf <= eps. Targeted: steps down the target's loss.
    """
    _check_params(dict(eps=eps, loss_fn=loss_fn, targeted=targeted))
    _check_batch(model, x, y)
    x = x.detach()
    if eps == 0:
        return x.clone()
    objective = _objective(loss_fn, targeted)
    with _attack_mode(model):
        x_in = x.detach().requires_grad_(True)
        grad, = torch.autograd.grad(objective(model, x_in, y).sum(), x_in)
    return _clip_linf(x + eps * grad.sign(), x, eps)


# ----------------------------------------------------------------------------------------------------------
# PGD

def _pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float,
              alpha: float, steps: int, objective: LossFn) -> torch.Tensor:
    """x_{t+1} = Proj_{B_eps(x) ∩ [0,1]}(x_t + alpha * sign(grad)); the projection is one clamp between
    lo = max(x - eps, 0) and hi = min(x + eps, 1)."""
    lo, hi = _linf_bounds(x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(objective(model, x_adv, y).sum(), x_adv)
        x_adv = x_adv.detach().add_(grad.sign_(), alpha=alpha).clamp_(lo, hi)
    return x_adv


def _pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float,
            alpha: float, steps: int, objective: LossFn) -> torch.Tensor:
    """x_{t+1} = clip_[0,1](x + Proj_{|d|_2 <= eps}(x_t + alpha * grad / |grad|_2 - x))."""
    xr = x.float() if x.dtype in _HALF else x     # fp16 / bf16: the projection in float32
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(objective(model, x_adv, y).sum(), x_adv)
        grad = grad.to(xr.dtype)
        grad = grad / _l2_norm(grad).add_(_GRAD_NORM_EPS)
        delta = x_adv.detach().to(xr.dtype).add_(grad, alpha=alpha).sub_(xr)
        delta = delta.mul_((eps / _l2_norm(delta)).clamp_(max=1.0))  # |delta| = 0 gives eps/0 = inf -> 1
        x_adv = delta.add_(xr).clamp_(0.0, 1.0) if xr is x else _round_toward(delta.add_(xr).clamp_(0.0, 1.0), x)
    return x_adv


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        norm: str = "linf", random_start: bool = True, restarts: int = 1, targeted: bool = False,
        loss_fn: LossFn | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al. 2018), L-inf or L2.

    L-inf: x_{t+1} = Proj_{B_eps(x)}(x_t + alpha * sign(grad)); L2: x_{t+1} = Proj_{B_eps(x)}(x_t + alpha *
    grad / |grad|_2); both clipped to [0, 1]. x: (B, C, H, W) float in [0, 1]; y: (B,) int64 (targets if
    `targeted`). eps: in [0, 1] for 'linf', >= 0 for 'l2' (e.g. 2.0 on MNIST); alpha > 0; steps >= 1.
    random_start: start from a random point of the ball (drawn from `generator` if given). restarts: runs
    from independent random starts; per example the worst case is kept: a restart that fools the model
    (untargeted: pred != y; targeted: pred == y) beats one that does not, and among equals the higher
    objective wins. The first restart draws exactly what a single run with the same generator draws.
    Returns x_adv: (B, C, H, W) in [0, 1] and in the eps ball; eps = 0 returns x.
    """
    _check_params(dict(eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start,
                       restarts=restarts, targeted=targeted, loss_fn=loss_fn, generator=generator))
    _check_batch(model, x, y)
    x = x.detach()
    if eps == 0:
        return x.clone()
    objective = _objective(loss_fn, targeted)
    run = _pgd_linf if norm == "linf" else _pgd_l2
    with _attack_mode(model):
        best = best_fooled = best_value = None
        for _ in range(restarts):
            start = _random_start(x, eps, norm, generator) if random_start else x.clone()
            x_adv = run(model, x, y, start, eps, alpha, steps, objective)
            if restarts == 1:
                return x_adv
            fooled, value = _score(model, x_adv, y, objective, loss_fn is None, targeted)
            if best is None:
                best, best_fooled, best_value = x_adv, fooled, value
                continue
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (value > best_value))
            best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
            best_fooled = best_fooled | fooled
            best_value = torch.where(better, value, best_value)
    return best


# ----------------------------------------------------------------------------------------------------------
# Carlini-Wagner L2

def _cw_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, c: float | torch.Tensor,
            kappa: float, steps: int, lr: float, best: torch.Tensor, best_l2: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One CW optimisation from w0 (Adam from scratch) with the constant c: a float, or (B,) per example.

    best: (B, C, H, W) and best_l2: (B,) squared L2, the smallest misclassified x_adv found so far (also in
    earlier runs); returns them updated and success: (B,) bool, True where THIS run misclassified x_adv at
    some step (what the binary search over c reads).
    """
    view = (-1,) + (1,) * (x.dim() - 1)
    w = w0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    check_every, previous = max(steps // 10, 1), math.inf
    for step in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        l2 = (x_adv - x).pow(2).flatten(1).sum(1)
        logits = _logits(model, x_adv).float()
        real = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], -math.inf).amax(1)
        margin = (real - other).clamp(min=-kappa)
        # A float c keeps torchattacks' order of operations (c * sum), so fixed-c runs equal it bit for bit.
        penalty = (c * margin).sum() if isinstance(c, torch.Tensor) else c * margin.sum()
        cost = l2.sum() + penalty
        w.grad, = torch.autograd.grad(cost, w)
        optimizer.step()
        with torch.no_grad():
            wrong = logits.argmax(1) != y
            success |= wrong
            improved = wrong & (l2 < best_l2)
            best_l2 = torch.where(improved, l2, best_l2)
            best = torch.where(improved.view(view), x_adv, best)
        if step % check_every == 0:  # one sync every 10 % of the steps
            value = cost.item()
            if value > previous:
                break
            previous = value
    return best, best_l2, success


def cw_search_update(c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, success: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Carlini and Wagner's search over c, per example; all arguments (B,).

    Where the run succeeded, c is an upper bound: upper = min(upper, c). Where it failed, c is a lower
    bound: lower = max(lower, c). The next c bisects [lower, upper] once an upper bound exists (upper
    finite); before the first success it is c * 10. Returns (c, lower, upper), new tensors.
    """
    upper = torch.where(success, torch.minimum(upper, c), upper)
    lower = torch.where(success, lower, torch.maximum(lower, c))
    c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
    return c, lower, upper


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: float = 1.0, kappa: float = 0.0,
          steps: int = 50, lr: float = 0.01, binary_search_steps: int = 1) -> torch.Tensor:
    """Carlini-Wagner L2 (2017); with binary_search_steps > 1 their search over c, per example.

    In tanh space x_adv = (tanh(w) + 1) / 2 (always in [0, 1]), Adam on w minimises
    |x_adv - x|_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa), Z the logits. Each step keeps per example the
    smallest-L2 x_adv that is misclassified; examples never misclassified come back as x itself. Every
    max(steps // 10, 1) steps the total cost is checked and the run stops early if it went up.
    binary_search_steps = 1: one run with the fixed c (as torchattacks.CW and the C-LEAD code use it).
    binary_search_steps = n > 1: n runs, each from x with a fresh Adam; c starts at `c` (C&W's initial_const)
    for every example and moves per example by `cw_search_update` (x 10 until the first success, then
    bisection; lower where the run succeeded, higher where it failed); the smallest-L2 misclassified x_adv
    over all runs is kept. Costs n times the fixed-c attack.
    x: (B, C, H, W) float in [0, 1]; y: (B,) int64; c > 0; kappa >= 0; steps >= 1; lr > 0;
    binary_search_steps >= 1. Returns x_adv: (B, C, H, W) in [0, 1] (no eps bound). Pixels at exactly 0 or
    1 map to w = -+inf and stay put (as in torchattacks).
    """
    _check_params(dict(c=c, kappa=kappa, steps=steps, lr=lr, binary_search_steps=binary_search_steps))
    _check_batch(model, x, y)
    x = x.detach()
    with _attack_mode(model):
        w0 = torch.atanh((2 * x - 1).clamp_(-1.0, 1.0))
        best = x.clone()
        best_l2 = torch.full((x.shape[0],), math.inf, device=x.device)
        if binary_search_steps == 1:
            return _cw_run(model, x, y, w0, c, kappa, steps, lr, best, best_l2)[0]
        const = torch.full((x.shape[0],), float(c), device=x.device)
        lower, upper = torch.zeros_like(const), torch.full_like(const, math.inf)
        for step in range(binary_search_steps):
            # The first run passes c as a float: it is exactly the fixed-c attack (bit for bit), and the
            # search keeps its result unless a later run finds a smaller one, so it never does worse.
            run_c = float(c) if step == 0 else const
            best, best_l2, success = _cw_run(model, x, y, w0, run_c, kappa, steps, lr, best, best_l2)
            const, lower, upper = cw_search_update(const, lower, upper, success)
    return best


# ----------------------------------------------------------------------------------------------------------
# Random noise (sanity-check baseline)

def random_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A random perturbation of the attack's size: the baseline an attack must clearly beat.

    L-inf: x_adv = clip_[0,1](x + eps * s), s uniform in {-1, +1} per pixel; L2: x_adv = clip_[0,1](x + eps *
    d / |d|_2), d Gaussian. x: (B, C, H, W) float in [0, 1]; y: (B,) int64 (checked, unused); model only
    checked (no forward pass). Returns x_adv in [0, 1] and in the eps ball; eps = 0 returns x.
    """
    _check_params(dict(eps=eps, norm=norm, generator=generator))
    _check_batch(model, x, y)
    x = x.detach()
    if eps == 0:
        return x.clone()
    if norm == "linf":
        signs = _uniform(x, -1.0, 1.0, generator).sign_()
        return _clip_linf(x + eps * signs, x, eps)
    direction = _normal(x, generator)
    if x.dtype in _HALF:
        direction = direction.float()
    return _l2_step_to(x, direction * (eps / _l2_norm(direction)))


# ----------------------------------------------------------------------------------------------------------
# Registry

ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "fgsm": fgsm, "pgd": pgd, "cw_l2": cw_l2, "random_noise": random_noise}


class Attack:
    """An attack with its settings bound: `attack(model, x, y) -> x_adv`. Made by `make_attack`."""

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], kwargs: dict):
        self.name, self.fn, self.kwargs = name, fn, dict(kwargs)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(model, x, y, **self.kwargs)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.name}({settings})"


def make_attack(name: str, **kwargs) -> Attack:
    """Bind an attack's settings: make_attack('pgd', eps=0.3, alpha=0.01, steps=20)(model, x, y) -> x_adv.

    name: one of ATTACKS ('fgsm', 'pgd', 'cw_l2', 'random_noise'). Settings are checked now, so a typo or a
    bad value fails here rather than in the middle of an evaluation.
    """
    check_choice(name, "attack", tuple(ATTACKS))
    fn = ATTACKS[name]
    params = list(inspect.signature(fn).parameters.values())[3:]  # after model, x, y
    allowed = [p.name for p in params]
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise TypeError(f"{name} has no setting {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in kwargs]
    if missing:
        raise TypeError(f"{name} needs the setting(s) {', '.join(missing)}; got {kwargs}")
    full = {p.name: kwargs.get(p.name, p.default) for p in params}
    _check_params(full)
    return Attack(name, fn, kwargs)
