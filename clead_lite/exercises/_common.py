"""Shared machinery of the exercise checks: printing the verdict, running the student's code safely, the
small fixed models and batches, the catalogue-of-mistakes search, and the stand-in for unsolved exercises.

Every `check_*` is wrapped by `exercise(reference)`: it records whether the student's object passed, so that
`or_reference(obj)` in the check cell can hand the rest of the notebook the reference solution when the
exercise is not solved yet (and say so).
"""
from __future__ import annotations

import functools
import importlib
import itertools
import traceback
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models import SmallCNN

TOL = 1e-5
RTOL, ATOL = 1e-4, 1e-5
_FAILED = object()

NOT_IMPLEMENTED = ("not implemented yet ({}). Replace the `raise NotImplementedError(...)` line with your code, run "
                   "that cell, then this one again.")


# ------------------------------------------------------------------------------------- stand-in solutions
class _Verdicts:
    """What the last check said about each student object (by identity), and whether a stub was hit."""

    def __init__(self) -> None:
        self.results: dict[int, tuple[object, bool, bool, str]] = {}
        self.unsolved = False


_VERDICTS = _Verdicts()


def exercise(reference: str) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
    """Decorator for a check: `reference` ('clead_lite.module:name') is the solution that stands in for
    the student's when the check does not pass (see `or_reference`)."""
    def wrap(check: Callable[..., bool]) -> Callable[..., bool]:
        @functools.wraps(check)
        def run(student, *args, **kwargs) -> bool:
            _VERDICTS.unsolved = False
            ok = bool(check(student, *args, **kwargs))
            _VERDICTS.results[id(student)] = (student, ok, _VERDICTS.unsolved, reference)
            return ok
        run.reference = reference
        return run
    return wrap


def _resolve(reference: str):
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def or_reference(student):
    """The student's function (or class) if its check passed, else the reference solution, with a line saying
    so: the notebook's later cells then run either way. Call it right after the check, in the same cell."""
    entry = _VERDICTS.results.get(id(student))
    if entry is None or entry[0] is not student:
        print("(run the check on this function first; until then the notebook uses your version as it is)")
        return student
    _, ok, unsolved, reference = entry
    if ok:
        return student
    where = reference.replace(":", ".")
    why = "is not implemented yet" if unsolved else "did not pass its check"
    label = getattr(student, "__name__", type(student).__name__)
    print(f"↪ `{label}` {why}: the rest of this notebook uses the reference solution ({where}) in its place. "
          "Finish the exercise and run its cells again to use yours.")
    return _resolve(reference)


# ----------------------------------------------------------------------------------------------- reporting
def _ok(name: str, message: str) -> bool:
    print(f"✅ {name}: {message}")
    return True


def _fail(name: str, message: str, hint: str | None = None) -> bool:
    print(f"❌ {name}: {message}")
    if hint:
        print(f"   hint: {hint}")
    return False


def _say(ok: bool, message: str) -> bool:
    """The contrastive checks' verdict line."""
    print(("✅ Correct! " if ok else "❌ Not yet: ") + message)
    return ok


# Error messages of PyTorch that students meet in these exercises, and what they mean in plain words.
_PLAIN_ERRORS = [
    (("does not require grad",),
     "your input has no gradient: PyTorch computes gradients only for tensors marked with requires_grad=True "
     "BEFORE the forward pass. Start from x_in = x.clone().detach().requires_grad_(True), run the model on x_in, "
     "then take torch.autograd.grad(loss, x_in). (Inside torch.no_grad() nothing gets a gradient either.)"),
    (("NoneType",),
     "x.grad is None: PyTorch fills .grad only for tensors created with requires_grad=True, and only after "
     "loss.backward(). Start from x_in = x.clone().detach().requires_grad_(True) and use x_in.grad (or "
     "torch.autograd.grad(loss, x_in))."),
    (("leaf Variable that requires grad", "in-place"),
     "you changed a tensor that requires grad in place (e.g. x_in += ... or z /= z.norm(...)): build a new tensor "
     "instead (x_adv = x_in + ..., F.normalize(z, dim=1))"),
    (("in-place operation",),
     "you changed a tensor in place that autograd still needs (e.g. z /= z.norm(...)); use out-of-place "
     "operations such as F.normalize(z, dim=1), which return a new tensor"),
    (("numpy() on Tensor that requires grad",),
     "a tensor that requires grad cannot become a numpy array: call .detach() first (and keep the loss a tensor)"),
    (("must match the size of tensor",),
     "two tensors have different sizes: did you take argmax/sum/softmax over the wrong dimension? Classes and "
     "features are dim=1, the batch is dim=0"),
]


def _plain(e: Exception) -> str | None:
    text = f"{type(e).__name__}: {e}"
    for needles, message in _PLAIN_ERRORS:
        if any(n in text for n in needles):
            if needles == ("NoneType",) and ".grad" not in "".join(
                    (f.line or "") for f in traceback.extract_tb(e.__traceback__)):
                continue
            return message
    return None


def _call(name: str, fn: Callable, *args, _hint: str | None = None, **kwargs):
    """Run the student's function; on an exception print what happened in plain words and return _FAILED."""
    if not callable(fn):
        _fail(name, f"expected your function, got {type(fn).__name__}")
        return _FAILED
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        _VERDICTS.unsolved = True
        _fail(name, NOT_IMPLEMENTED.format(e or "NotImplementedError"))
    except Exception as e:  # noqa: BLE001 - any error in student code is feedback, not a crash
        plain = None if _hint else _plain(e)
        where = traceback.extract_tb(e.__traceback__)[-1]
        if plain:
            _fail(name, plain, f"(PyTorch said: {type(e).__name__}: {str(e).splitlines()[0][:160]})")
        else:
            _fail(name, f"your function raised {type(e).__name__}: {e}",
                  _hint or f"the error comes from line {where.lineno} ({where.line!r}) of {where.name}()")
    return _FAILED


def _try(fn: Callable, *args):
    """fn(*args) as (value, None), or (None, message) when it raises (the contrastive checks' style)."""
    try:
        return fn(*args), None
    except NotImplementedError as e:
        _VERDICTS.unsolved = True
        return None, NOT_IMPLEMENTED.format(e or "NotImplementedError")
    except Exception as e:  # noqa: BLE001 - any student error becomes feedback
        plain = _plain(e)
        if plain:
            return None, f"{plain} (PyTorch said: {type(e).__name__}: {str(e).splitlines()[0][:160]})"
        return None, f"your function raised {type(e).__name__}: {e}"


def _check_tensor(name: str, out, like: torch.Tensor, what: str = "x_adv") -> bool:
    if not isinstance(out, torch.Tensor):
        return _fail(name, f"return a tensor {what} of shape {tuple(like.shape)}, got {type(out).__name__}")
    if out.shape != like.shape:
        return _fail(name, f"{what} must have the shape of the input {tuple(like.shape)}, got {tuple(out.shape)}")
    if not out.is_floating_point():
        return _fail(name, f"{what} must be a float tensor, got dtype {out.dtype}")
    if torch.isnan(out).any():
        return _fail(name, f"{what} contains NaN values ({int(torch.isnan(out).sum())} of {out.numel()})",
                     "where the gradient is exactly 0, grad / grad.abs() is 0 / 0 = nan: use grad.sign() "
                     "(and guard every division by a norm that can be 0)")
    return True


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= tol)


def _allclose(a, b) -> bool:
    """Relative closeness of two finite tensors/numbers (the contrastive checks' comparison)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


NAN_TRAP = ("your loss is nan: in floating point -inf * 0 = nan. You set masked entries to -inf and then multiplied "
            "by a 0/1 mask (or a one-hot target), e.g. (log_prob * mask).sum(1): select with "
            "log_prob.masked_fill(~mask, 0.0) or torch.where(mask, log_prob, 0.0), or use F.cross_entropy with "
            "integer targets.")


INF_TARGET = ("your loss is inf: the logit of a target is -inf, so its probability is 0. Did you mask the positive "
              "too? Only the self-similarity (the diagonal of the anchor-anchor block) is set to -inf; the positive "
              "(the diagonal of a @ v.T) stays in numerator and denominator.")


def _as_scalar_loss(out, what: str = "loss") -> tuple[torch.Tensor | None, str | None]:
    """The student's output as a 0-d tensor that carries gradients, or an explanation why it is not."""
    if not isinstance(out, torch.Tensor):
        return None, (f"your {what} is a {type(out).__name__}, not a torch.Tensor: keep it a tensor (no .item(), "
                      "no numpy) so that loss.backward() can train the model.")
    if out.numel() != 1:
        return None, (f"your {what} has shape {tuple(out.shape)}; it must be one number (a 0-d tensor): "
                      "average over the batch with .mean().")
    if torch.isnan(out.detach()).any():
        return None, NAN_TRAP
    if torch.isinf(out.detach()).any():
        return None, INF_TARGET
    if not out.requires_grad:
        return None, (f"your {what} carries no gradient (requires_grad is False): did you use .item(), .detach(), "
                      "numpy or torch.no_grad()? The loss must stay differentiable.")
    return out.reshape(()), None


def _diagnose(student: list[torch.Tensor], variants: list[tuple[tuple[str, ...], list[torch.Tensor]]],
              messages: dict[str, str]) -> str | None:
    """The explanation of the first (fewest-mistakes) variant whose values all equal the student's."""
    for mistakes, values in variants:
        if mistakes and all(_allclose(s, v) for s, v in zip(student, values)):
            return " AND ".join(messages[m] for m in mistakes)
    return None


def _variants(options: dict[str, tuple], evaluate: Callable[[dict], list[torch.Tensor] | None],
              max_mistakes: int = 2) -> list[tuple[tuple[str, ...], list[torch.Tensor]]]:
    """Evaluate every setting of the switches that deviates from the correct one (the first value of each
    option) in at most `max_mistakes` places; sorted by the number of mistakes. Each deviation is named
    '<option>=<value>'."""
    names = list(options)
    out = []
    for k in range(1, max_mistakes + 1):
        for chosen in itertools.combinations(names, k):
            for values in itertools.product(*(options[n][1:] for n in chosen)):
                setting = {n: options[n][0] for n in names}
                setting.update(dict(zip(chosen, values)))
                with torch.no_grad():
                    result = evaluate(setting)
                if result is not None and all(bool(torch.isfinite(r).all()) for r in result):
                    out.append((tuple(f"{n}={v}" for n, v in zip(chosen, values)), result))
    return out


def _inputs_unchanged(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return all(torch.equal(b, a) for b, a in zip(before, after))


def _letter(answer, options: dict) -> tuple[str | None, str | None]:
    """The chosen letter from a string or from a function returning one (the exercise stub)."""
    if callable(answer):
        answer, err = _try(answer)
        if err:
            return None, err
    letter = str(answer).strip().upper()[:1]
    if letter not in options:
        return None, f"answer with one letter of {', '.join(options)}, got {answer!r}."
    return letter, None


# ----------------------------------------------------------------------------------------------- fixtures
class _Recorder(nn.Module):
    """Wraps a model and records, for every forward call, whether it ran in train mode (and, if asked, a copy
    of its input)."""

    def __init__(self, module: nn.Module, keep_inputs: bool = False):
        super().__init__()
        self.module = module  # named like DDP's wrapper so `models.unwrap` finds the real model
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []
        self.keep_inputs = keep_inputs

    @property
    def num_classes(self) -> int:
        return self.module.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        if self.keep_inputs:
            self.inputs.append(x.detach().clone())
        return self.module(x)


def _model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(width=8, feature_dim=32, proj_dim=16).eval()


def _images(n: int = 8, channels: int = 1, size: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images in [0, 1] with many pixels exactly 0 or 1 (as in MNIST), so clipping matters."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g)
    u = torch.rand(x.shape, generator=g)
    x = torch.where(u < 0.3, torch.zeros_like(x), torch.where(u > 0.85, torch.ones_like(x), x))
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Callable | None = None) -> torch.Tensor:
    """d loss / d x at x for `loss(logits, y)` (default: mean cross-entropy)."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad((loss or F.cross_entropy)(model(x), y), x)
    return grad
