"""Checks for the exercises of notebooks 00-03 (normalisation, attacks, adversarial training).

Each `check_*(student_fn)` runs the student's function on a small fixed model and batch, compares it with the
reference in `clead_lite`, prints specific feedback ("your FGSM leaves the eps ball by 0.05", "you forgot to
clip to [0, 1]", ...) and returns True (correct) or False. A stub that still raises NotImplementedError gets
"not implemented yet", never a crash. Floor 1: imports attacks, models and validate only.
"""
from __future__ import annotations

import copy
import math
import traceback
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import attacks
from ..models import SmallCNN

__all__ = ["check_fgsm", "check_linear_perturbation", "check_normalisation_inside_model", "check_pgd_step",
           "check_projection", "check_pgd_at_step", "check_early_stopping"]

TOL = 1e-5
_FAILED = object()


# ----------------------------------------------------------------------------------------------- reporting
def _ok(name: str, message: str) -> bool:
    print(f"✅ {name}: {message}")
    return True


def _fail(name: str, message: str, hint: str | None = None) -> bool:
    print(f"❌ {name}: {message}")
    if hint:
        print(f"   hint: {hint}")
    return False


def _call(name: str, fn: Callable, *args, _hint: str | None = None, **kwargs):
    """Run the student's function; on an exception print what happened (plus `_hint` for errors other than
    NotImplementedError) and return _FAILED."""
    if not callable(fn):
        _fail(name, f"expected your function, got {type(fn).__name__}")
        return _FAILED
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        _fail(name, f"not implemented yet ({e or 'NotImplementedError'}). Replace the "
                    "`raise NotImplementedError(...)` line with your code, run that cell, then this one again.")
    except Exception as e:  # noqa: BLE001 - any error in student code is feedback, not a crash
        where = traceback.extract_tb(e.__traceback__)[-1]
        _fail(name, f"your function raised {type(e).__name__}: {e}",
              _hint or f"the error comes from line {where.lineno} ({where.line!r}) of {where.name}()")
    return _FAILED


def _check_tensor(name: str, out, like: torch.Tensor, what: str = "x_adv") -> bool:
    if not isinstance(out, torch.Tensor):
        return _fail(name, f"return a tensor {what} of shape {tuple(like.shape)}, got {type(out).__name__}")
    if out.shape != like.shape:
        return _fail(name, f"{what} must have the shape of the input {tuple(like.shape)}, got {tuple(out.shape)}")
    if not out.is_floating_point():
        return _fail(name, f"{what} must be a float tensor, got dtype {out.dtype}")
    if torch.isnan(out).any():
        return _fail(name, f"{what} contains NaN values ({int(torch.isnan(out).sum())} of {out.numel()})")
    return True


# ----------------------------------------------------------------------------------------------- fixtures
class _Recorder(nn.Module):
    """Wraps a model and records, for every forward call, whether it ran in train mode."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module  # named like DDP's wrapper so `models._unwrap` finds the real model
        self.modes: list[bool] = []

    @property
    def num_classes(self) -> int:
        return self.module.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
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


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return grad


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= tol)


# ----------------------------------------------------------------------------------------------- L-inf step
def _diagnose_linf_step(name: str, out: torch.Tensor, start: torch.Tensor, x: torch.Tensor, grad: torch.Tensor,
                        eps: float, step: float, expected: torch.Tensor, step_name: str) -> bool:
    """Common diagnosis of `out` = clip(Proj(start + step * sign(grad))) around x, budget eps.

    Checks, in order: range [0, 1]; eps ball; direction (ascent); step size; sign vs value; exact match.
    """
    lo, hi = float(out.min()), float(out.max())
    if lo < -TOL or hi > 1 + TOL:
        if _close(out.clamp(0, 1), expected):
            return _fail(name, f"you forgot to clip to [0, 1]: your pixels range from {lo:.3f} to {hi:.3f}",
                         "images live in [0, 1]; finish with .clamp(0, 1)")
        return _fail(name, f"your output leaves the valid image range [0, 1] (values from {lo:.3f} to {hi:.3f})",
                     "clip with .clamp(0, 1) as the last operation")
    dist = float((out - x).abs().max())
    if dist > eps + TOL:
        return _fail(name, f"your {step_name} leaves the eps ball by {dist - eps:.3g}: max |x_adv - x| = "
                           f"{dist:.3g}, but eps = {eps:.3g}",
                     "project back onto the ball around the ORIGINAL image x: "
                     "x_adv = torch.min(torch.max(x_adv, x - eps), x + eps), then clip to [0, 1]")
    moved = out - start
    live = grad != 0
    if float(moved.abs().max()) < TOL:
        return _fail(name, "your output equals the input: nothing moved",
                     f"take a step of size {step:.3g} along sign(grad)")
    if live.any():
        agree = float((torch.sign(moved[live]) == torch.sign(grad[live])).float().mean())
        against = float((torch.sign(moved[live]) == -torch.sign(grad[live])).float().mean())
        if against > 0.5 and against > agree:
            return _fail(name, f"you moved against the gradient ({against:.0%} of the pixels go down the loss): "
                               "that is gradient DEScent, which makes the model more confident",
                         "an attack ASCENDS the loss: x + step * grad.sign(), with a plus")
    # pixels whose step was not cut by clipping or projection: they show the step size
    free = live & (out > TOL) & (out < 1 - TOL) & ((out - x).abs() < eps - TOL)
    free = free & ((expected - start).abs() > step - TOL)
    if free.any():
        sizes = moved[free].abs()
        exact = float(((sizes - step).abs() < 1e-4).float().mean())
        if exact < 0.9:
            spread = float(sizes.max() - sizes.min())
            if spread < 1e-4:
                return _fail(name, f"every pixel moved by {float(sizes.mean()):.4g} instead of {step:.4g}",
                             f"use the function's argument for the step size ({step_name}), not a fixed number")
            return _fail(name, f"you used the gradient's VALUE, not its SIGN: your pixels moved by amounts from "
                               f"{float(sizes.min()):.2g} to {float(sizes.max()):.2g} instead of exactly "
                               f"{step:.3g}",
                         "the L-inf steepest-ascent step is step * grad.sign(): every pixel moves by the full step")
    if not _close(out, expected):
        diff = (out - expected).abs()
        return _fail(name, f"your output differs from the reference at {int((diff > TOL).sum())} of "
                           f"{diff.numel()} pixels (max difference {float(diff.max()):.3g})",
                     "compare each step with the formula in the text above")
    return True


# ----------------------------------------------------------------------------------------------- exercises
def check_fgsm(student_fgsm: Callable) -> bool:
    """Exercise (01): `fgsm(model, x, y, eps) -> x_adv`, x_adv = clip_[0,1](x + eps * sign(grad_x CE)).

    Detects: an unimplemented stub, errors, wrong shape, changing x in place, changing the model's mode or
    running it in train mode, forgetting to clip, leaving the eps ball, descent instead of ascent, gradient
    value instead of sign, a hard-coded eps; notes gradients left on the parameters.
    """
    name = "check_fgsm"
    inner = _model()
    model = _Recorder(inner).eval()
    x, y = _images()
    grad = _input_grad(inner, x, y)
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
        out = out.detach()
        expected = attacks.fgsm(inner, x, y, eps)
        if not _diagnose_linf_step(name, out, x, x, grad, eps, eps, expected, "FGSM step"):
            return False
    note = ""
    if any(p.grad is not None for p in inner.parameters()):
        note = (" (note: you left gradients in the model's parameters' .grad; torch.autograd.grad(loss, x) "
                "computes only the input's gradient)")
    return _ok(name, "your FGSM matches the reference for eps = 0.1 and 0.25: every pixel moves by exactly eps "
                     "in the direction that increases the loss, clipped to [0, 1]" + note)


def check_linear_perturbation(student_fn: Callable) -> bool:
    """Exercise (01): `worst_case_perturbation(w, eps) -> delta` maximising w . delta over |delta|_inf <= eps.

    The answer is delta = eps * sign(w), which raises the linear score by eps * |w|_1.
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
    size = float(out.abs().max())
    if size > eps + TOL:
        return _fail(name, f"your delta leaves the L-inf ball: max |delta_i| = {size:.3g} > eps = {eps}",
                     "every coordinate may move by at most eps")
    if gain < -0.5 * best:
        return _fail(name, f"your delta DEcreases the score (w . delta = {gain:.3g}); flip its sign",
                     "to increase w . delta, move each x_i in the direction of the sign of w_i")
    l2 = eps * w / w.norm()
    if _close(out, l2, 1e-4):
        return _fail(name, "that is the best step inside an L2 ball (eps * w / |w|_2); here the budget is L-inf: "
                           f"it gains only {gain:.3g} of the possible {best:.3g}",
                     "in an L-inf ball every coordinate can move by the full eps at the same time")
    if abs(gain - best) > 1e-3 * best:
        hint = ("scaling w itself is not optimal: coordinates with a small |w_i| move too little"
                if _close(out / (out.abs().max() + 1e-12), w / w.abs().max(), 1e-3) else
                "each coordinate should contribute eps * |w_i|")
        return _fail(name, f"your delta raises the score by {gain:.4g}, the best possible is eps * |w|_1 = "
                           f"{best:.4g}", hint)
    return _ok(name, f"delta = eps * sign(w) raises the score by eps * |w|_1 = {best:.2f} "
                     f"(for 784 inputs with eps = {eps}: tiny per pixel, large in total)")


def check_normalisation_inside_model(student_wrapper: Callable) -> bool:
    """Exercise (00): `NormalizedModel(net, mean, std)` -> a module taking pixels in [0, 1] and feeding
    `net` with (x - mean) / std per channel (mean, std: sequences of C numbers).

    Detects: no normalisation, multiplying by std, dividing before subtracting, wrong broadcasting shape,
    mean/std stored as trainable parameters or as plain tensors that do not follow `.to(device)`.
    """
    name = "check_normalisation_inside_model"
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 9, generator=g)
    net(x)  # materialise the lazy layer
    model = _call(name, student_wrapper, net, mean, std)
    if model is _FAILED:
        return False
    if not isinstance(model, nn.Module):
        return _fail(name, f"build an nn.Module, got {type(model).__name__}")
    out = _call(name, model, x.clone(),
                _hint="mean and std must broadcast against x of shape (B, C, H, W): reshape them to (1, C, 1, 1)")
    if out is _FAILED:
        return False
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net((x - m) / s)
        variants = {
            "raw": net(x),
            "times": net((x - m) * s),
            "order": net(x / s - m),
            "pre_normalised": net(((x - m) / s - m) / s),
        }
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return _fail(name, f"the model should return net's logits of shape {tuple(ref.shape)}, got {got}")
    out = out.detach()
    messages = {
        "raw": ("your model passes raw pixels to a network that expects normalised inputs",
                "forward(x) must compute net((x - mean) / std)"),
        "times": ("you multiplied by std instead of dividing", "(x - mean) / std"),
        "order": ("you divided before subtracting the mean", "(x - mean) / std: subtract first"),
        "pre_normalised": ("you normalised twice", "normalise once, inside forward"),
    }
    if not _close(out, ref, 1e-4):
        for key, value in variants.items():
            if _close(out, value, 1e-4):
                return _fail(name, *messages[key])
        return _fail(name, f"your logits differ from net((x - mean) / std) by up to "
                           f"{float((out - ref).abs().max()):.3g}", "reshape mean/std to (1, C, 1, 1)")
    trainable = [n for n, p in model.named_parameters() if not n.startswith(_net_prefix(model, net))]
    if trainable:
        return _fail(name, f"mean/std are trainable parameters ({', '.join(trainable)}): the optimiser would "
                           "change them", "store them with self.register_buffer('mean', ...)")
    buffers = [b for n, b in model.named_buffers() if not n.startswith(_net_prefix(model, net))]
    if len(buffers) < 2:
        return _fail(name, "mean and std are plain tensor attributes: model.to(device) would leave them on the "
                           "CPU", "store them with self.register_buffer('mean', tensor) so they follow the model")
    return _ok(name, "the model takes pixels in [0, 1] and normalises inside: attacks and eps are in pixel units")


def _net_prefix(model: nn.Module, net: nn.Module) -> str:
    for n, m in model.named_modules():
        if m is net:
            return n + "." if n else ""
    return "\0"


def check_pgd_step(student_step: Callable) -> bool:
    """Exercise (02): `pgd_step(x_adv, grad, x, eps, alpha) -> x_next`, the L-inf PGD update
    x_next = clip_[0,1](Proj_{|d|_inf <= eps}(x_adv + alpha * sign(grad) - x) + x).

    Detects: errors, no projection / projection around x_adv instead of x, forgetting to clip, descent,
    value instead of sign, eps or a fixed number as the step size, changing inputs in place.
    """
    name = "check_pgd_step"
    x, _ = _images(6, seed=2)
    g = torch.Generator().manual_seed(3)
    eps, alpha = 0.1, 0.03
    grad = torch.randn(x.shape, generator=g) * 1e-2
    grad[:, :, :2] = 0.0
    x_adv = (x + torch.empty(x.shape).uniform_(-eps, eps, generator=g)).clamp(0, 1)
    expected = torch.min(torch.max(x_adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    args = (x_adv.clone(), grad.clone(), x.clone())
    out = _call(name, student_step, *args, eps, alpha)
    if out is _FAILED:
        return False
    if not (torch.equal(args[0], x_adv) and torch.equal(args[1], grad) and torch.equal(args[2], x)):
        return _fail(name, "your function changed one of its inputs in place (x_adv, grad or x)",
                     "build new tensors (x_adv + ...) instead of x_adv.add_(...)")
    if not _check_tensor(name, out, x):
        return False
    if not _diagnose_linf_step(name, out.detach(), x_adv, x, grad, eps, alpha, expected, "PGD step"):
        return False
    return _ok(name, "your PGD step matches: ascend by alpha * sign(grad), project onto the eps ball around x, "
                     "clip to [0, 1]")


def check_projection(student_project: Callable, norm: str = "l2") -> bool:
    """Exercise (02): `project(delta, eps) -> delta'`, the closest point to delta in {|d| <= eps} per example.

    norm='l2': delta * min(1, eps / |delta|_2) per example (flattened); norm='linf': delta.clamp(-eps, eps).
    Detects: one norm for the whole batch, scaling deltas already inside the ball, division by zero for
    delta = 0, using the other norm's projection, leaving the ball, clamping to [0, eps].
    """
    name = f"check_projection[{norm}]"
    if norm not in ("l2", "linf"):
        raise ValueError(f"unknown norm {norm!r}; allowed: 'l2', 'linf'")
    g = torch.Generator().manual_seed(4)
    delta = torch.randn(5, 3, 6, 6, generator=g)
    if norm == "l2":  # norms 0.1, 0.3 (inside), 2, 4 (outside), 0 (the zero perturbation)
        eps = 0.5
        sizes = torch.tensor([0.1, 0.3, 2.0, 4.0, 0.0]).view(-1, 1, 1, 1)
        delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * sizes
        expected = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(-1, 1, 1, 1)
    else:  # L-inf sizes 0.1, 0.2 (inside), 0.6, 1.0 (outside), 0
        eps = 0.25
        sizes = torch.tensor([0.1, 0.2, 0.6, 1.0, 0.0]).view(-1, 1, 1, 1)
        delta = delta / delta.flatten(1).abs().amax(1).view(-1, 1, 1, 1) * sizes
        expected = delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1)
    out = _call(name, student_project, delta.clone(), eps)
    if out is _FAILED:
        return False
    if not _check_tensor(name, out, delta, "the projected delta"):
        if isinstance(out, torch.Tensor) and torch.isnan(out).any():
            print("   hint: delta = 0 has norm 0: guard the division, e.g. eps / norm.clamp_min(1e-12)")
        return False
    out = out.detach()
    if _close(out, expected, 1e-5):
        what = "shrinks each delta outside the ball onto its surface and leaves the others alone" if norm == "l2" \
            else "clamps every pixel to [-eps, eps]"
        return _ok(name, f"your projection {what}")
    if norm == "l2":
        if _close(out, delta * min(1.0, eps / float(delta.norm())), 1e-5):
            return _fail(name, "you computed one norm for the whole batch: every example must be projected on its "
                               "own", "per-example norms: delta.flatten(1).norm(dim=1), reshaped to (B, 1, 1, 1)")
        if _close(out, delta.clamp(-eps, eps), 1e-5) and not _close(out, delta, 1e-5):
            return _fail(name, "that is the L-inf projection (clamping each pixel); the L2 ball needs a rescaling "
                               "of the whole delta", "delta * min(1, eps / |delta|_2)")
    out_norms = out.flatten(1).norm(dim=1) if norm == "l2" else out.flatten(1).abs().amax(1)
    if float(out_norms.max()) > eps + 1e-4:
        return _fail(name, f"your projection leaves the ball: a projected delta has {norm} norm "
                           f"{float(out_norms.max()):.3g} > eps = {eps}",
                     "the norm of an example is over ALL its pixels and channels: delta.flatten(1).norm(dim=1)"
                     if norm == "l2" else "clamp every pixel to [-eps, eps]")
    if norm == "l2":
        inside = norms <= eps
        if not _close(out[inside], delta[inside], 1e-5):
            return _fail(name, "you changed deltas that were already inside the ball (projection leaves them "
                               "alone; only deltas with |delta| > eps are scaled down)",
                         "scale by min(1, eps / |delta|), not by eps / |delta|")
        return _fail(name, f"your projection differs from delta * min(1, eps / |delta|_2) by up to "
                           f"{float((out - expected).abs().max()):.3g}")
    if _close(out, delta.clamp(0, eps), 1e-5):
        return _fail(name, "you clamped to [0, eps]: negative perturbations are allowed too", "clamp(-eps, eps)")
    return _fail(name, f"your projection differs from delta.clamp(-eps, eps) by up to "
                       f"{float((out - expected).abs().max()):.3g}",
                 "the L-inf projection clamps each pixel on its own; it does not rescale the whole delta")


def check_pgd_at_step(student_step: Callable) -> bool:
    """Exercise (03): `pgd_at_step(model, optimizer, x, y, eps, alpha, steps) -> float`, one step of PGD
    adversarial training: x_adv = attacks.pgd(model, x, y, eps, alpha, steps); model.train();
    optimizer.zero_grad(); loss = CE(model(x_adv), y); loss.backward(); optimizer.step(); return loss.item().

    The student's update is compared with the reference from the same weights and the same random start.
    Detects: training on the clean images, forgetting zero_grad (gradients accumulate), forgetting
    optimizer.step(), updating in eval mode, returning the wrong loss.
    """
    name = "check_pgd_at_step"
    base = _model(seed=5)
    x, y = _images(16, seed=5)
    eps, alpha, steps, lr = 0.2, 0.05, 3, 0.5
    stale = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in
             enumerate(base.parameters())]

    def fresh():
        m = copy.deepcopy(base).train()
        for p, s in zip(m.parameters(), stale):  # the previous batch's gradients, as in a real loop
            p.grad = s.clone()
        return m, torch.optim.SGD(m.parameters(), lr=lr)

    def update(m):
        return torch.cat([(p.detach() - q.detach()).flatten() for p, q in zip(m.parameters(), base.parameters())])

    def reference(m, opt, inputs, accumulate=False):
        opt.zero_grad() if not accumulate else None
        m.train()
        loss = F.cross_entropy(m(inputs), y)
        loss.backward()
        opt.step()
        return loss.item()

    torch.manual_seed(123)
    m_ref, opt = fresh()
    x_adv = attacks.pgd(m_ref, x, y, eps, alpha, steps)
    ref_loss = reference(m_ref, opt, x_adv)
    ref = update(m_ref)
    m_clean, opt = fresh()
    reference(m_clean, opt, x)
    clean = update(m_clean)
    m_acc, opt = fresh()
    reference(m_acc, opt, x_adv, accumulate=True)
    accumulated = update(m_acc)

    torch.manual_seed(123)
    m_student, opt = fresh()
    recorder = _Recorder(m_student).train()
    out = _call(name, student_step, recorder, opt, x.clone(), y.clone(), eps, alpha, steps)
    if out is _FAILED:
        return False
    got = update(m_student)
    if float(got.abs().max()) == 0.0:
        return _fail(name, "the model's parameters did not change", "call optimizer.step() after loss.backward()")
    if recorder.modes and not recorder.modes[-1]:
        return _fail(name, "you updated the model in eval mode (the last forward pass ran with model.eval())",
                     "call model.train() after crafting the adversarial examples, before the training forward pass")

    def cos(a, b):
        return float(F.cosine_similarity(a, b, dim=0))

    if _close(got, clean, 1e-6) or (cos(got, clean) > 0.999 and cos(got, ref) < 0.999):
        return _fail(name, "you trained on the clean images x: PGD-AT trains on the adversarial examples",
                     "x_adv = attacks.pgd(model, x, y, eps, alpha, steps); loss = CE(model(x_adv), y)")
    if _close(got, accumulated, 1e-6) or (cos(got, accumulated) > 0.999 and cos(got, ref) < 0.999):
        return _fail(name, "you forgot optimizer.zero_grad(): the previous batch's gradients were added to this "
                           "one", "call optimizer.zero_grad() before loss.backward()")
    if not isinstance(out, (float, int)) and not (isinstance(out, torch.Tensor) and out.numel() == 1):
        return _fail(name, f"return the training loss as a number (loss.item()), got {type(out).__name__}")
    loss = float(out.detach()) if isinstance(out, torch.Tensor) else float(out)
    exact = _close(got, ref, 1e-6)
    if not exact and (cos(got, ref) < 0.75 or cos(got, clean) >= cos(got, ref)):
        return _fail(name, f"your update differs from the reference PGD-AT step (cosine similarity "
                           f"{cos(got, ref):.3f})", "craft x_adv with attacks.pgd(model, x, y, eps, alpha, steps), then "
                                                     "one SGD step on CE(model(x_adv), y)")
    if abs(loss - ref_loss) > (1e-4 if exact else 0.2 * ref_loss):
        return _fail(name, f"you returned {loss:.4f}, but the adversarial training loss is {ref_loss:.4f}",
                     "return loss.item() of the cross-entropy on x_adv")
    extra = "" if exact else " (same direction as the reference; the random start differs)"
    return _ok(name, f"your PGD-AT step trains on PGD examples in train mode with fresh gradients{extra}; "
                     f"loss {loss:.3f}")


def check_early_stopping(student_fn: Callable) -> bool:
    """Exercise (03): `best_epoch(history) -> int`, the epoch (value of the `epoch` column) with the highest
    held-out PGD accuracy (the first one on ties), the rule against robust overfitting.

    history: a DataFrame of `training.train` epoch records: epoch, loss, acc (accuracy on the adversarial
    training batches), val_clean_acc, val_pgd_acc (held-out).
    Detects: the last epoch, the training robust accuracy, the clean accuracy, the lowest loss, a row
    index instead of the epoch number.
    """
    import pandas as pd
    name = "check_early_stopping"
    history = pd.DataFrame({
        "epoch": [1, 2, 3, 4, 5, 6, 7, 8],
        "loss": [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5, 0.45],
        "acc": [0.20, 0.35, 0.45, 0.52, 0.60, 0.70, 0.80, 0.79],
        "val_clean_acc": [0.60, 0.75, 0.80, 0.82, 0.85, 0.88, 0.87, 0.86],
        "val_pgd_acc": [0.18, 0.30, 0.41, 0.44, 0.44, 0.40, 0.37, 0.35],
    })
    out = _call(name, student_fn, history.copy())
    if out is _FAILED:
        return False
    try:
        epoch = int(out)
    except (TypeError, ValueError):
        return _fail(name, f"return the epoch number as an int, got {out!r}")
    wrong = {8: ("you picked the last epoch (or the lowest training loss): with robust overfitting the last "
                 "epoch is not the most robust one", "select on the held-out PGD accuracy (val_pgd_acc)"),
             7: ("you picked the epoch with the highest accuracy on the (adversarial) TRAINING batches",
                 "robust overfitting: training robust accuracy keeps rising while held-out robust accuracy falls; "
                 "select on val_pgd_acc"),
             6: ("you picked the epoch with the highest held-out CLEAN accuracy",
                 "we want the most robust model: select on val_pgd_acc"),
             3: ("you returned a row index (3), not the epoch number",
                 "read the `epoch` column of the best row, e.g. history.loc[history.val_pgd_acc.idxmax(), 'epoch']"),
             5: ("on a tie keep the FIRST epoch with the best held-out robust accuracy (fewer epochs, same robustness)",
                 "idxmax returns the first maximum")}
    if epoch == 4:
        return _ok(name, "epoch 4 has the best held-out robust accuracy (44%); later epochs overfit robustly "
                         "(training robust accuracy still rises to 80%, held-out falls to 35%)")
    if epoch in wrong:
        return _fail(name, *wrong[epoch])
    return _fail(name, f"you picked epoch {epoch}; the best held-out robust accuracy is at epoch 4",
                 "select on the val_pgd_acc column")
