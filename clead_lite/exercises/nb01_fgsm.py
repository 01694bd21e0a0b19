"""Checks for notebook 01's exercises: FGSM and the worst-case perturbation of a linear score."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import attacks
from ._common import (_FAILED, TOL, _call, _check_tensor, _close, _fail, _images, _input_grad, _model, _ok,
                      _Recorder, exercise)
from ._linf import _constant_step, _diagnose_linf_step

__all__ = ["check_fgsm", "check_linear_perturbation"]


def _fgsm_mistakes(model, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, tuple[torch.Tensor, str, str]]:
    """FGSM as students get it wrong with the right formula around it: (x_adv, message, hint) per mistake."""
    def step(loss):
        return (x + eps * _input_grad(model, x, y, loss).sign()).clamp(0, 1)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    return {
        "softmax": (step(lambda z, t: F.cross_entropy(z.softmax(1), t)),
                    "you applied softmax before F.cross_entropy, which applies log-softmax itself: the loss (and "
                    "its gradient) is squashed", "pass the raw logits: F.cross_entropy(model(x_in), y)"),
        "nll": (step(lambda z, t: F.nll_loss(z, t)),
                "you used F.nll_loss on the raw logits; nll_loss expects log-probabilities",
                "F.cross_entropy(model(x_in), y) (= nll_loss(log_softmax(logits), y))"),
        "predicted": (step(lambda z, t: F.cross_entropy(z, predicted)),
                      "you attacked the model's own predictions instead of the true labels y",
                      "the loss is F.cross_entropy(model(x_in), y) with the labels passed in"),
    }


@exercise("clead_lite.attacks:fgsm")
def check_fgsm(student_fgsm: Callable) -> bool:
    """Exercise (01): `fgsm(model, x, y, eps) -> x_adv`, x_adv = clip_[0,1](x + eps * sign(grad_x CE)).

    Detects: an unimplemented stub, errors (in plain words: x without requires_grad, x.grad None), wrong shape,
    changing x in place, changing the model's mode or running it in train mode, forgetting to clip, leaving the
    eps ball, descent instead of ascent, gradient value instead of sign, a hard-coded eps, a multiple of eps,
    softmax before the cross-entropy, nll_loss on logits, the model's predictions as labels, returning a tensor
    still attached to the graph; notes gradients left on the parameters.
    """
    name = "check_fgsm"
    inner = _model()
    model = _Recorder(inner).eval()
    x, y = _images()
    grad = _input_grad(inner, x, y)
    outs = {}
    for eps in (0.1, 0.25):
        x_in = x.clone()
        inner.zero_grad(set_to_none=True)
        model.modes.clear()
        out = _call(name, student_fgsm, model, x_in, y, eps)
        if out is _FAILED:
            return False
        if not torch.equal(x_in, x):
            return _fail(name, "your function changed the input x in place",
                         "work on a copy: x_adv = x.clone().detach() (or build a new tensor: x + ...)")
        if model.training:
            return _fail(name, "your function changed the model's mode: it was in eval mode and is now in train "
                               "mode", "do not call model.train() inside an attack; leave the mode as you found it")
        if any(model.modes):
            return _fail(name, "you ran the model in train mode while computing the gradient",
                         "attacks use the model in eval mode (dropout and batch norm behave differently in train mode)")
        if not model.modes:
            return _fail(name, "your function never called the model: FGSM needs the gradient of the model's loss")
        if not _check_tensor(name, out, x):
            return False
        outs[eps] = out
    sizes = {eps: _constant_step(out.detach(), x, grad) for eps, out in outs.items()}
    (e1, c1), (e2, c2) = sizes.items()
    if c1 is not None and c2 is not None:
        if abs(c1 - c2) < 1e-4:  # the same step for two different eps
            return _fail(name, f"you hard-coded the step: every pixel moved by {c1:.3g} for eps = {e1} and for "
                               f"eps = {e2}", "use the function's argument: x + eps * grad.sign()")
        if abs(c1 / e1 - c2 / e2) < 1e-3 and abs(c1 / e1 - 1) > 1e-3:
            return _fail(name, f"your step is {c1 / e1:.3g} x eps: every pixel moved by {c1:.3g} for eps = {e1}"
                               + (" (so it leaves the eps ball)" if c1 > e1 else ""),
                         "the FGSM step is exactly eps * grad.sign()")
    for eps, out in outs.items():
        detached = out.detach()
        expected = attacks.fgsm(inner, x, y, eps)
        if not _close(detached, expected):
            for candidate, message, hint in _fgsm_mistakes(inner, x, y, eps).values():
                if _close(detached, candidate) and not _close(candidate, expected):
                    return _fail(name, message, hint)
        if not _diagnose_linf_step(name, detached, x, x, grad, eps, eps, expected, "FGSM step"):
            return False
        if out.requires_grad:
            return _fail(name, "your x_adv is still attached to the autograd graph (requires_grad=True): later "
                               "code cannot turn it into an image and keeps the graph in memory",
                         "return x_adv.detach()")
    note = ""
    if any(p.grad is not None for p in inner.parameters()):
        note = (" (note: you left gradients in the model's parameters' .grad; torch.autograd.grad(loss, x) "
                "computes only the input's gradient)")
    return _ok(name, "your FGSM matches the reference for eps = 0.1 and 0.25: every pixel moves by exactly eps "
                     "in the direction that increases the loss, clipped to [0, 1]" + note)


def worst_case_perturbation(w: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference solution: delta = eps * sign(w), the maximiser of w . delta over |delta|_inf <= eps."""
    return eps * w.sign()


@exercise("clead_lite.exercises.nb01_fgsm:worst_case_perturbation")
def check_linear_perturbation(student_fn: Callable) -> bool:
    """Exercise (01): `worst_case_perturbation(w, eps) -> delta` maximising w . delta over |delta|_inf <= eps.

    The answer is delta = eps * sign(w), which raises the linear score by eps * |w|_1. Detects: the values of w
    instead of their signs, the sign without eps, only the positive coordinates, every coordinate up, only the
    largest coordinate (the L1 answer), the L2 answer, the opposite sign, leaving the ball.
    """
    name = "check_linear_perturbation"
    g = torch.Generator().manual_seed(1)
    w = torch.randn(784, generator=g)
    w[:10] = 0.0
    eps = 0.1
    out = _call(name, student_fn, w.clone(), eps)
    if out is _FAILED:
        return False
    if not _check_tensor(name, out, w, "delta"):
        return False
    out = out.detach()
    best = eps * float(w.abs().sum())
    gain = float(w @ out)
    one = torch.zeros_like(w)
    top = int(w.abs().argmax())
    one[top] = eps * float(w[top].sign())
    named = [
        (eps * w, "you used the VALUES of w (eps * w), not their signs: coordinates with a small |w_i| move too "
                  "little and large ones leave the ball", "delta = eps * w.sign()"),
        (w.sign(), "you returned sign(w) without the factor eps: every coordinate moves by 1, far outside the ball",
         "delta = eps * w.sign()"),
        (eps * (w > 0).float(), "you only moved the coordinates with w_i > 0; those with w_i < 0 raise the score "
                                "too when they move DOWN by eps", "delta = eps * w.sign()"),
        (torch.full_like(w, eps), "you moved every coordinate up by eps whatever the sign of w_i: the coordinates "
                                  "with w_i < 0 lower the score", "delta = eps * w.sign()"),
        (one, "you moved only the coordinate with the largest |w_i|: that is the best step in an L1 ball; in an "
              "L-inf ball every coordinate can move by eps at the same time", "delta = eps * w.sign()"),
        (eps * w / w.norm(), "that is the best step inside an L2 ball (eps * w / |w|_2); here the budget is L-inf: "
                             f"it gains only {gain:.3g} of the possible {best:.3g}",
         "in an L-inf ball every coordinate can move by the full eps at the same time"),
    ]
    if not _close(out, eps * w.sign(), 1e-6):
        for candidate, message, hint in named:
            if _close(out, candidate, 1e-4):
                return _fail(name, message, hint)
    size = float(out.abs().max())
    if size > eps + TOL:
        return _fail(name, f"your delta leaves the L-inf ball: max |delta_i| = {size:.3g} > eps = {eps}",
                     "every coordinate may move by at most eps")
    if gain < -0.5 * best:
        return _fail(name, f"your delta DEcreases the score (w . delta = {gain:.3g}); flip its sign",
                     "to increase w . delta, move each x_i in the direction of the sign of w_i")
    if abs(gain - best) > 1e-3 * best:
        hint = ("scaling w itself is not optimal: coordinates with a small |w_i| move too little"
                if _close(out / (out.abs().max() + 1e-12), w / w.abs().max(), 1e-3) else
                "each coordinate should contribute eps * |w_i|")
        return _fail(name, f"your delta raises the score by {gain:.4g}, the best possible is eps * |w|_1 = "
                           f"{best:.4g}", hint)
    return _ok(name, f"delta = eps * sign(w) raises the score by eps * |w|_1 = {best:.2f} "
                     f"(for 784 inputs with eps = {eps}: tiny per pixel, large in total)")
