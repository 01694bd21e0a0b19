"""Clean, robust and transfer accuracy of a model on plain tensors, and the helpers every evaluation shares:
argument checks, eval mode and channels_last restored exactly, one attack run over batches with its
per-example outcomes and perturbation sizes. `evaluation` builds the results row, the sweeps and AutoAttack on
these; `sanity` builds the sanity checks.

- `x`: (N, C, H, W) float in [0, 1] (any device: batches are moved to the model's device),
- `y`: (N,) int64 class indices,
- `attack`: a callable `attack(model, xb, yb) -> x_adv`, e.g. `attacks.make_attack("pgd", eps=0.3,
  alpha=0.0375, steps=20)`.
Floor 1: imports `attacks`, `models`, `validate`.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .attacks import make_attack
from .models import _eval_mode, _unwrap, model_input_check
from .validate import check_choice, check_eps, check_int, check_labels, check_logits, check_nonnegative

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
AttackFactory = Callable[[float, int, int], AttackFn]   # (eps, steps, restarts) -> attack(model, x, y)

__all__ = ["predict", "accuracy", "robust_accuracy", "transfer_accuracy", "default_alpha"]

_BALL_ATOL = 1e-6       # float32 slack when checking |x_adv - x| <= eps
_BALL_RTOL = 1e-5       # relative slack for the L2 norm (a sum of 784+ squares)


# ----------------------------------------------------------------------------------------------------------
# Argument checks

def _check_model(model: nn.Module, name: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = "model") -> None:
    """model: nn.Module; x: (N, C, H, W) float in [0, 1] with the model's channels; y: (N,) int64 labels."""
    _check_model(model, name)
    model_input_check(model, x)
    check_labels(y, x.shape[0], getattr(_unwrap(model), "num_classes", None))


def _check_norm(norm: str) -> str:
    """'linf' or 'l2' (case-insensitive) -> lower case."""
    if not isinstance(norm, str):
        raise TypeError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return check_choice(norm.lower(), "norm", ("linf", "l2"))


def _check_budget(eps: float, norm: str, name: str = "eps") -> float:
    """L-inf budgets live in [0, 1]; L2 budgets (e.g. 2.0 on MNIST) are any finite number >= 0."""
    if norm == "linf":
        return check_eps(eps, name)
    eps = check_nonnegative(eps, name)
    if math.isinf(eps):
        raise ValueError(f"{name} must be finite, got {eps}")
    return eps


def _check_attack(attack: AttackFn, name: str = "attack") -> AttackFn:
    if not callable(attack):
        raise TypeError(f"{name} must be a callable attack(model, x, y) -> x_adv (e.g. "
                        f"attacks.make_attack('pgd', eps=0.3, alpha=0.0375, steps=20)), got {type(attack).__name__}")
    return attack


def _check_fraction(value: float, name: str) -> float:
    value = check_nonnegative(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


# ----------------------------------------------------------------------------------------------------------
# Small helpers

def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def _channels_last(model: nn.Module) -> Iterator[None]:
    """4-D weights in the channels_last memory layout for the duration; each one's layout restored afterwards.

    Only the layout changes, not a value: outputs agree to float rounding (1e-7). On the CPU it makes
    SmallCNN's forward 1.8x and forward + backward to the input 1.3x faster (oneDNN's max-pool and convolution
    prefer it; benchmarks/bench_eval_layout.py), which matters for AutoAttack's 5,000 Square queries. Nested
    use (evaluate calls autoattack_accuracy) converts nothing twice.
    """
    def channels_last_strides(p: torch.Tensor) -> tuple[int, ...]:
        _, c, h, w = p.shape
        return (h * w * c, 1, w * c, c)

    # compared by strides, not is_contiguous(memory_format=...): a (O, 1, k, k) kernel counts as channels_last
    # either way, but its strides decide the layout oneDNN picks for the first convolution and all after it
    converted = [p for p in model.parameters() if p.dim() == 4 and p.stride() != channels_last_strides(p)]
    layouts = [p.data for p in converted]
    for p in converted:
        p.data = torch.empty_like(p.data, memory_format=torch.channels_last).copy_(p.data)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, data in zip(converted, layouts):
                data.copy_(p.data)   # the same values (evaluation does not change weights), original layout
                p.data = data


def _in_channels_last(fn: Callable) -> Callable:
    """Run fn(model, ...) with the model's weights in channels_last (see _channels_last)."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        if not isinstance(model, nn.Module):
            return fn(model, *args, **kwargs)   # fn raises its own clear error
        with _channels_last(model):
            return fn(model, *args, **kwargs)
    return wrapper


def default_alpha(eps: float, steps: int) -> float:
    """PGD step size 2.5 * eps / steps (Madry et al. 2018): the steps can cross the ball 2.5 times.
    eps = 0 gets 1/255 (an eps-0 attack returns x unchanged; the step size only has to be valid)."""
    return 2.5 * eps / steps if eps > 0 else 1 / 255


def _generator(seed: int) -> torch.Generator:
    """A CPU generator: the attacks draw from it on the CPU and move the draws to the data's device."""
    return torch.Generator().manual_seed(seed)


def _distance(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """(B,) per-example distance in norm 'linf', 'l2' or 'l1'."""
    d = (x_adv - x).flatten(1).float()
    return d.abs().amax(1) if norm == "linf" else d.norm(p=2 if norm == "l2" else 1, dim=1)


def _single_step(eps: float, norm: str) -> AttackFn:
    """FGSM for L-inf; for L2 its counterpart, one normalised-gradient step of length eps (FGM)."""
    if norm == "linf":
        return make_attack("fgsm", eps=eps)
    return make_attack("pgd", eps=eps, alpha=max(eps, 1e-12), steps=1, norm="l2", random_start=False)


@dataclass
class _Run:
    """What one attack run over a data set measured: per-example correctness and x_adv statistics."""
    correct: torch.Tensor          # (N,) bool, on the CPU
    max_distance: float            # largest |x_adv - x| in the run's norm
    min_value: float
    max_value: float
    n_nonfinite: int

    @property
    def accuracy(self) -> float:
        return self.correct.float().mean().item()


def _run_attack(attack: AttackFn, source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, norm: str = "linf") -> _Run:
    """x_adv = attack(source, xb, yb) batch by batch, scored on `target` (the same model for white-box)."""
    src_device, tgt_device = _device(source), _device(target)
    correct, dist, lo, hi, bad = [], [], math.inf, -math.inf, 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(src_device)
        yb = y[start:start + batch_size].to(src_device)
        x_adv = attack(source, xb, yb)
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != xb.shape:
            got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
            raise ValueError(f"attack must return x_adv of the input's shape {tuple(xb.shape)}, got {got}")
        x_adv = x_adv.detach()
        finite = torch.isfinite(x_adv)
        bad += int((~finite).flatten(1).any(1).sum())
        lo, hi = min(lo, float(x_adv.min())), max(hi, float(x_adv.max()))
        dist.append(_distance(x_adv, xb, norm).cpu())
        with torch.no_grad(), _eval_mode(target):
            pred = check_logits(target(x_adv.to(tgt_device)), x_adv.shape[0]).argmax(1)
        correct.append((pred == yb.to(tgt_device)).cpu())
    d = torch.cat(dist)
    max_d = float(d.nan_to_num(nan=math.inf).max())
    return _Run(torch.cat(correct), max_d, lo, hi, bad)


# ----------------------------------------------------------------------------------------------------------
# Accuracy

def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes. x: (N, C, H, W) float in [0, 1] -> (N,) int64 on x's device (eval mode, no grad)."""
    _check_model(model)
    model_input_check(model, x)
    check_int(batch_size, "batch_size")
    device = _device(model)
    preds = []
    with torch.no_grad(), _eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            preds.append(check_logits(model(xb), xb.shape[0]).argmax(1).to(x.device))
    return torch.cat(preds)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Clean accuracy in [0, 1]. x: (N, C, H, W) float in [0, 1]; y: (N,) int64."""
    _check_data(model, x, y)
    return (predict(model, x, batch_size) == y).float().mean().item()


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackFn, batch_size: int = 512,
                    return_correct: bool = False) -> float | tuple[float, torch.Tensor]:
    """White-box robust accuracy in [0, 1]: x_adv = attack(model, xb, yb) per batch, scored on the same model.

    x: (N, C, H, W) float in [0, 1]; y: (N,) int64; attack: callable(model, x, y) -> x_adv.
    return_correct: also return the (N,) bool per-example correctness (CPU).
    """
    _check_data(model, x, y)
    _check_attack(attack)
    check_int(batch_size, "batch_size")
    run = _run_attack(attack, model, model, x, y, batch_size)
    return (run.accuracy, run.correct) if return_correct else run.accuracy


def transfer_accuracy(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackFn,
                      batch_size: int = 512, return_correct: bool = False) -> float | tuple[float, torch.Tensor]:
    """Black-box transfer accuracy in [0, 1]: x_adv = attack(source, xb, yb) is made on `source` (the
    surrogate) and scored on `target`. x: (N, C, H, W) float in [0, 1]; y: (N,) int64."""
    _check_data(source, x, y, "source")
    _check_data(target, x, y, "target")
    _check_attack(attack)
    check_int(batch_size, "batch_size")
    run = _run_attack(attack, source, target, x, y, batch_size)
    return (run.accuracy, run.correct) if return_correct else run.accuracy
