"""Argument checks shared by every module: each raises a one-line error with the argument's name, its value and
what is allowed. Call them once where a user calls in, never inside a loop: reading a tensor's values (the range
checks below) waits for the device when the tensor is on a GPU."""
from __future__ import annotations

import dataclasses
import math

import torch

NORMS = ("linf", "l2")
SEED_MAX = 2**32 - 1     # what every generator the course seeds accepts (NumPy's legacy seed is 32-bit)


def check_eps(eps: float, name: str = "eps") -> float:
    """eps: a perturbation budget in pixel units, a real number in [0, 1]."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or math.isnan(eps):
        raise TypeError(f"{name} must be a number in [0, 1], got {eps!r}")
    if not 0.0 <= eps <= 1.0:
        hint = " (pixel values are in [0, 1]: write 8/255, not 8)" if eps > 1 else ""
        raise ValueError(f"{name} must be in [0, 1], got {eps}{hint}")
    return float(eps)


def check_budget(eps: float, norm: str, name: str = "eps") -> float:
    """A perturbation budget: L-inf in [0, 1]; L2 (e.g. 2.0 on MNIST) any finite number >= 0."""
    return check_eps(eps, name) if norm == "linf" else check_nonnegative(eps, name)


def check_positive(value: float, name: str) -> float:
    """A finite number > 0 (inf is refused: an infinite lr, weight or step never trains or attacks anything)."""
    return _finite(value, name, ">", "a positive number")


def check_nonnegative(value: float, name: str) -> float:
    """A finite number >= 0."""
    return _finite(value, name, ">=", "a number >= 0")


def _finite(value, name: str, op: str, kind: str) -> float:
    """The two checks above: `value op 0`, op '>' or '>='."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name} must be a finite number {op} 0, got {value}")
    if value < 0 or (op == ">" and value == 0):
        raise ValueError(f"{name} must be {op} 0, got {value}")
    return float(value)


def check_seed(value: int, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**32 - 1]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in [0, {SEED_MAX}], got {value!r}")
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} must be an integer in [0, {SEED_MAX}] (2**32 - 1), got {value}")
    return value


def check_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(value: str, name: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(map(repr, allowed))}")
    return value


def check_settings(obj, *, choices: dict | None = None, ints: dict | None = None, optional: tuple = (),
                   fractions: dict | None = None, positive: tuple = (), bools: tuple = ()) -> None:
    """The field checks of a settings dataclass, from tables: {field: allowed values}, {field: minimum},
    fields that may be None, {field: '[0, 1)'-style interval}, fields > 0 (None skipped), fields True / False."""
    for table, check in ((choices or {}, check_choice), (ints or {}, check_int)):     # allowed values, minimum
        for name, arg in table.items():
            if getattr(obj, name) is not None or name not in optional:
                check(getattr(obj, name), name, arg)
    for name in positive:
        if getattr(obj, name) is not None:
            check_positive(getattr(obj, name), name)
    for name, interval in (fractions or {}).items():     # ( ) open, [ ] closed
        if getattr(obj, name) is not None:
            value = check_nonnegative(getattr(obj, name), name)
            if (interval[0] == "(" and value == 0) or value > 1 or (interval[-1] == ")" and value == 1):
                raise ValueError(f"{name} must be in {interval}, got {value}")
    for name in bools:
        if not isinstance(getattr(obj, name), bool):
            raise TypeError(f"{name} must be True or False, got {getattr(obj, name)!r}")


class Settings:
    """What TrainConfig and FaithfulConfig (frozen dataclasses) share: plain-data round trips and `replace`."""

    @classmethod
    def from_dict(cls, d: dict):
        """From `to_dict()` output (unknown keys, e.g. of older versions or the other config, are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        """Plain data (lists for tuples), for checkpoints and JSON."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes):
        """A copy with fields changed; unknown names get a clear error."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in changes if k not in known]
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} field(s) {', '.join(map(repr, unknown))}; fields: "
                            f"{', '.join(known)}")
        return dataclasses.replace(self, **changes)


def check_images(x: torch.Tensor, name: str = "x", channels: int | None = None, values: bool = True) -> torch.Tensor:
    """x: (B, C, H, W) floating tensor in [0, 1] with B >= 1 (and `channels` channels if given). values=False skips
    the range check, the only part that reads x (a GPU->CPU sync when x is on a GPU)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)} (rank {x.dim()})")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one image")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} (divide uint8 by 255)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels, the model expects {channels} (shape {tuple(x.shape)})")
    if values:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0 or math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                             "attacks work in pixel space: do not normalise the input, the model does that itself")
    return x


def check_labels(y: torch.Tensor, batch: int, num_classes: int | None = None, name: str = "y",
                 values: bool = True) -> torch.Tensor:
    """y: (B,) int64 class indices in [0, num_classes); values=False skips the range check (it reads y)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 labels, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype torch.int64 (class indices), got {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape (B,), got {tuple(y.shape)}")
    if y.shape[0] != batch:
        raise ValueError(f"x and {name} disagree on the batch size: x has {batch}, {name} has {y.shape[0]}")
    if values and num_classes is not None and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must be in [0, {num_classes - 1}], got values in [{lo}, {hi}]")
    return y


def check_logits(logits, batch: int, name: str = "the model's output") -> torch.Tensor:
    """logits: (B, num_classes) for a batch of B images (a shape check only: no host-device sync)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of logits (B, num_classes), got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ValueError(f"{name} has shape {tuple(logits.shape)}; a classifier must return logits of shape "
                         f"(B, num_classes) = ({batch}, C) for a batch of {batch} images (e.g. not (B,): keep the "
                         "class axis, one score per class)")
    return logits


def check_attack(attack):
    """attack: a callable attack(model, x, y) -> x_adv."""
    if not callable(attack):
        raise TypeError("attack must be a callable attack(model, x, y) -> x_adv (e.g. attacks.make_attack("
                        f"'pgd', eps=0.3, alpha=0.0375, steps=20)), got {type(attack).__name__}")
    return attack


def check_adversarial(x_adv, x: torch.Tensor) -> torch.Tensor:
    """What an attack returned: a tensor of its input's shape (a shape, not a value: no sync)."""
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise ValueError(f"attack must return x_adv with the shape of its input {tuple(x.shape)}, got {got}")
    return x_adv
