"""Adversarial attacks in pixel space: FGSM, PGD (L-inf and L2), Carlini-Wagner L2 and a random-noise baseline.

Every attack is `attack(model, x, y, ...) -> x_adv`:
- x: (B, C, H, W) float in [0, 1] (models normalise inside, so eps is in pixel units); y: (B,) int64, the target
  classes when targeted=True; `loss_fn(model, x_adv, y) -> (B,)`: the loss it climbs (default cross-entropy).
- x_adv: detached, in [0, 1] and in the eps ball (up to float32 rounding, < 1e-7); float32 for fp16 / bf16 x.
- during the attack every module is in eval mode (each one's mode restored after); gradients w.r.t. x only.
- arguments are checked once per call; the value ranges only on CPU tensors (reading a GPU tensor waits for it).
Reading order: pgd, fgsm, random_noise, cw_l2, the helpers, `make_attack` (binds settings, like torchattacks).
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import check_batch, eval_mode
from .validate import NORMS, check_budget, check_choice, check_int, check_logits, check_nonnegative, check_positive

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["fgsm", "pgd", "cw_l2", "cw_search_update", "random_noise", "random_in_ball", "ATTACKS", "Attack",
           "make_attack", "LossFn"]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        norm: str = "linf", random_start: bool = True, restarts: int = 1, targeted: bool = False,
        loss_fn: LossFn | None = None, generator: torch.Generator | None = None,
        start: torch.Tensor | None = None) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al. 2018): `steps` gradient steps, each projected back onto the ball.

    L-inf: x_{t+1} = clip(x_t + alpha * sign(grad), max(x - eps, 0), min(x + eps, 1)). L2 (eps may exceed 1): a step
    of length alpha along grad / |grad|_2, x_{t+1} - x shrunk to norm <= eps, clipped to [0, 1]. First iterate: `start`
    (as is), else a random point of the ball if random_start, else x. restarts > 1: per example the restart worst for
    the model is kept (fooled first, then the higher loss); restart 1 draws as a single run does. eps = 0: a copy of x.
    """
    _check_params(dict(eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start, restarts=restarts,
                       targeted=targeted, loss_fn=loss_fn, generator=generator))
    x = _attack_input(model, x, y)
    if start is not None and (not isinstance(start, torch.Tensor) or start.shape != x.shape or restarts != 1):
        got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
        raise ValueError(f"start must be a tensor of x's shape {tuple(x.shape)}, with restarts=1; got {got}, "
                         f"restarts={restarts}")
    if eps == 0:
        return x.clone()
    if norm == "linf":     # the L-inf ball within [0, 1] is a box: projecting onto it is one clamp
        lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    best = None
    with eval_mode(model), torch.enable_grad():
        for _ in range(restarts):
            if start is None and random_start:
                x_adv = random_in_ball(x, eps, norm, generator)
            else:   # a new leaf on the same memory: the steps below are out of place, never writing into it
                x_adv = (x if start is None else start.to(x.dtype)).detach()
            for _ in range(steps):
                x_adv.requires_grad_(True)
                grad, = torch.autograd.grad(_loss(model, x_adv, y, loss_fn, targeted).sum(), x_adv)
                if norm == "linf":     # x_adv + alpha * sign(grad) (one new tensor), then the projection
                    x_adv = torch.add(x_adv.detach(), grad.sign_(), alpha=alpha).clamp_(lo, hi)
                else:
                    grad = grad / (_l2_norm(grad) + 1e-10)     # as torchattacks' PGDL2: a zero gradient stays 0
                    delta = x_adv.detach().add(grad, alpha=alpha) - x
                    delta = delta * (eps / _l2_norm(delta)).clamp_(max=1.0)    # |delta| = 0: eps / 0 = inf -> 1
                    x_adv = (x + delta).clamp_(0.0, 1.0)
            if restarts == 1:
                return x_adv
            best = _worse(best, (x_adv, *_score(model, x_adv, y, loss_fn, targeted)))
    return best[0]


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, loss_fn: LossFn | None = None,
         targeted: bool = False) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): x_adv = clip_[0,1](x + eps * sign(grad_x loss)), one step."""
    _check_params(dict(eps=eps, loss_fn=loss_fn, targeted=targeted))
    x = _attack_input(model, x, y)
    if eps == 0:
        return x.clone()
    with eval_mode(model), torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        grad, = torch.autograd.grad(_loss(model, x_in, y, loss_fn, targeted).sum(), x_in)
    return (x + eps * grad.sign()).clamp_(0.0, 1.0)


def random_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A random perturbation of the attack's size, the baseline an attack must clearly beat (no forward pass). L-inf:
    clip_[0,1](x + eps * s), s uniform in {-1, +1} per pixel; L2: clip_[0,1](x + eps * d / |d|_2), d Gaussian."""
    _check_params(dict(eps=eps, norm=norm, generator=generator))
    x = _attack_input(model, x, y)
    if eps == 0:
        return x.clone()
    if norm == "linf":
        return (x + eps * _draw(x, generator, (-1.0, 1.0)).sign_()).clamp_(0.0, 1.0)
    direction = _draw(x, generator)
    return (x + direction * (eps / _l2_norm(direction))).clamp_(0.0, 1.0)


def random_in_ball(x: torch.Tensor, eps: float, norm: str = "linf",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD's random start, a point of the eps ball around x clipped to [0, 1]; nothing is checked. L-inf: uniform per
    pixel; L2: a Gaussian direction scaled to a radius drawn uniformly in [0, eps] (as torchattacks)."""
    if norm == "linf":
        return (x + _draw(x, generator, (-eps, eps))).clamp_(0.0, 1.0)
    delta = _draw(x, generator)
    radius = _draw(x[:, :1, :1, :1], generator, (0.0, 1.0))     # (B, 1, 1, 1)
    return (x + delta * (radius / _l2_norm(delta) * eps)).clamp_(0.0, 1.0)


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: float = 1.0, kappa: float = 0.0,
          steps: int = 50, lr: float = 0.01, binary_search_steps: int = 1) -> torch.Tensor:
    """Carlini-Wagner L2 (2017); with binary_search_steps > 1 their search over c, per example.

    x_adv = (tanh(w) + 1) / 2; Adam on w minimises |x_adv - x|_2^2 + c * max(Z_y - max_{i != y} Z_i, -kappa), Z the
    logits, keeping per example the smallest-L2 misclassified x_adv (else x). Every max(steps // 10, 1) steps the run
    stops if the cost went up. binary_search_steps = n > 1: n runs, c moving per example by `cw_search_update`, the
    smallest-L2 success kept. No eps bound; pixels at exactly 0 or 1 stay put (w = -+inf, as in torchattacks).
    """
    _check_params(dict(c=c, kappa=kappa, steps=steps, lr=lr, binary_search_steps=binary_search_steps))
    x = _attack_input(model, x, y)
    with eval_mode(model), torch.enable_grad():
        w0 = torch.atanh((2 * x - 1).clamp_(-1.0, 1.0))
        best, best_l2 = x.clone(), torch.full((x.shape[0],), math.inf, device=x.device)
        const = torch.full((x.shape[0],), float(c), device=x.device)
        lower, upper = torch.zeros_like(const), torch.full_like(const, math.inf)
        for step in range(binary_search_steps):
            # run 1 (c a float) is the fixed-c attack bit for bit, all of it at 1 step: the search never does worse
            run_c = float(c) if step == 0 else const
            best, best_l2, success = _cw_run(model, x, y, w0, run_c, kappa, steps, lr, best, best_l2)
            const, lower, upper = cw_search_update(const, lower, upper, success)
    return best


def _cw_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, c: float | torch.Tensor,
            kappa: float, steps: int, lr: float, best: torch.Tensor, best_l2: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One CW run from w0, fresh Adam, c a float or (B,). Updates best / best_l2 (the smallest misclassified x_adv,
    squared L2) and returns them with success (B,) bool: where THIS run misclassified (what the search over c reads)."""
    w = w0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    check_every, previous = max(steps // 10, 1), math.inf
    for step in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        l2 = (x_adv - x).pow(2).flatten(1).sum(1)
        logits = check_logits(model(x_adv), x.shape[0]).float()
        real = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], -math.inf).amax(1)
        margin = (real - other).clamp(min=-kappa)
        # a float c keeps torchattacks' order of operations (c * sum): fixed-c runs equal it bit for bit
        penalty = (c * margin).sum() if isinstance(c, torch.Tensor) else c * margin.sum()
        cost = l2.sum() + penalty
        w.grad, = torch.autograd.grad(cost, w)
        optimizer.step()
        with torch.no_grad():
            wrong = logits.argmax(1) != y
            success |= wrong
            improved = wrong & (l2 < best_l2)
            best_l2 = torch.where(improved, l2, best_l2)
            best = torch.where(improved.view(-1, 1, 1, 1), x_adv, best)
        if step % check_every == 0:      # the early abort reads the cost: one sync every 10 % of the steps
            value = cost.item()
            if value > previous:
                break
            previous = value
    return best, best_l2, success


def cw_search_update(c: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, success: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Carlini and Wagner's search over c, per example, all (B,): a success makes c an upper bound, a
    failure a lower bound; the next c bisects [lower, upper] once upper is finite, else is c * 10."""
    upper = torch.where(success, torch.minimum(upper, c), upper)
    lower = torch.where(success, lower, torch.maximum(lower, c))
    c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
    return c, lower, upper


# Helpers: the loss, ranking restarts, random draws, argument checks.
def _loss(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None,
          targeted: bool) -> torch.Tensor:
    """(B,): the per-example quantity the attack climbs: loss_fn (default cross-entropy), negated if targeted."""
    if loss_fn is None:
        loss = F.cross_entropy(check_logits(model(x_adv), x_adv.shape[0]), y, reduction="none")
    else:
        loss = loss_fn(model, x_adv, y)
        if not isinstance(loss, torch.Tensor) or loss.shape != (x_adv.shape[0],):
            got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a per-example loss of shape ({x_adv.shape[0]},), got {got}")
    return -loss if targeted else loss


@torch.no_grad()
def _score(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None,
           targeted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(fooled (B,) bool, loss (B,) float32) at x_adv: how bad x_adv is for the model, to rank restarts."""
    logits = check_logits(model(x_adv), x_adv.shape[0])
    fooled = logits.argmax(1) == y if targeted else logits.argmax(1) != y
    if loss_fn is not None:
        return fooled, _loss(model, x_adv, y, loss_fn, targeted).float()
    loss = F.cross_entropy(logits.float(), y, reduction="none")      # reuses the logits: one forward pass
    return fooled, -loss if targeted else loss


def _worse(best: tuple | None, new: tuple) -> tuple:
    """Per example the restart (x_adv, fooled, loss) worse for the model (see pgd); a tie keeps the earlier one."""
    if best is None:
        return new
    (x_best, f_best, l_best), (x_new, f_new, l_new) = best, new
    better = (f_new & ~f_best) | ((f_new == f_best) & (l_new > l_best))
    return torch.where(better.view(-1, 1, 1, 1), x_new, x_best), f_best | f_new, torch.where(better, l_new, l_best)


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, 1, 1) per-example L2 norm, shaped to broadcast against t."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)


def _draw(x: torch.Tensor, generator: torch.Generator | None, uniform: tuple[float, float] | None = None
          ) -> torch.Tensor:
    """Like x: uniform in (low, high), else standard normal; drawn on the generator's device (a CPU one serves GPUs)."""
    t = torch.empty(x.shape, dtype=x.dtype, device=generator.device if generator is not None else x.device)
    t = t.uniform_(*uniform, generator=generator) if uniform else t.normal_(generator=generator)
    return t.to(x.device)


def _check_params(params: dict) -> None:
    """The scalar settings of an attack; each error names the argument, its value and what is allowed."""
    norm = check_choice(params.get("norm", "linf"), "norm", NORMS)
    for name, value in params.items():
        if name == "eps":
            check_budget(value, norm)
        elif name in ("alpha", "c", "lr"):
            check_positive(value, name)
        elif name == "kappa":
            check_nonnegative(value, name)
        elif name in ("steps", "restarts", "binary_search_steps"):
            check_int(value, name, minimum=1)
        elif name in ("random_start", "targeted") and not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        elif name == "loss_fn" and value is not None and not callable(value):
            raise TypeError(f"loss_fn must be None or a callable loss_fn(model, x_adv, y) -> (B,) loss, "
                            f"got {type(value).__name__}")
        elif name == "generator" and value is not None and not isinstance(value, torch.Generator):
            raise TypeError(f"generator must be None or a torch.Generator, got {type(value).__name__}")
    if params.get("restarts", 1) > 1 and not params.get("random_start", True):
        raise ValueError(f"restarts={params['restarts']} needs random_start=True "
                         "(without a random start every restart is the same run)")


def _attack_input(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`check_batch` (values on the CPU only), devices, grad mode; x detached, fp16 / bf16 made float32."""
    check_batch(model, x, y, values=isinstance(x, torch.Tensor) and x.device.type == "cpu")
    if y.device != x.device:
        raise ValueError(f"x and y must be on the same device, got x on {x.device} and y on {y.device}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need gradients: call them outside torch.inference_mode() "
                           "(torch.no_grad() is fine)")
    return x.detach().float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach()


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "fgsm": fgsm, "pgd": pgd, "cw_l2": cw_l2, "random_noise": random_noise}


class Attack:
    """An attack with its settings bound: `attack(model, x, y) -> x_adv`. Made by `make_attack`."""

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], kwargs: dict):
        self.name, self.fn, self.kwargs = name, fn, dict(kwargs)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(model, x, y, **self.kwargs)

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


def make_attack(name: str, **kwargs) -> Attack:
    """Bind an attack's settings: make_attack('pgd', eps=0.3, alpha=0.01, steps=20)(model, x, y) -> x_adv.
    name: one of ATTACKS. The settings are checked now, so a typo fails here, not in the middle of an evaluation."""
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
    _check_params({p.name: kwargs.get(p.name, p.default) for p in params})
    return Attack(name, fn, kwargs)

