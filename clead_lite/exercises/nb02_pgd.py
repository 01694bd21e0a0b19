"""Checks for notebook 02's exercises: one L-inf PGD step and the projection onto an eps ball."""
from __future__ import annotations

from typing import Callable

import torch

from ._common import _FAILED, _call, _check_tensor, _close, _fail, _images, _ok, exercise
from ._linf import _constant_step, _diagnose_linf_step

__all__ = ["check_pgd_step", "check_projection"]


def pgd_step(x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: float, alpha: float) -> torch.Tensor:
    """The reference L-inf PGD step: clip_[0,1](Proj_{B_eps(x)}(x_adv + alpha * sign(grad))); all (B, C, H, W)."""
    x_next = x_adv + alpha * grad.sign()
    return torch.min(torch.max(x_next, x - eps), x + eps).clamp(0, 1)


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference L2 projection: delta * min(1, eps / |delta|_2) per example; delta: (B, ...)."""
    norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    return delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def _step_mistakes(x_adv, grad, x, eps, alpha) -> dict[str, tuple[torch.Tensor, str, str]]:
    """One PGD step as students get it wrong: (output, message, hint) per mistake."""
    s = grad.sign()
    up = x_adv + alpha * s
    return {
        "from x": (pgd_step(x, grad, x, eps, alpha),
                   "you stepped from the clean image x instead of the current iterate x_adv: every PGD step must "
                   "continue from where the previous one ended", "x_next = x_adv + alpha * grad.sign(), then project"),
        "delta [0, eps]": ((x + (up - x).clamp(0, eps)).clamp(0, 1),
                           "you clamped the perturbation to [0, eps]: it may be negative too, the ball is "
                           "[-eps, eps] around x", "delta = (x_next - x).clamp(-eps, eps)"),
        "image [-eps, eps]": (up.clamp(-eps, eps).clamp(0, 1),
                              "you clamped the image itself to [-eps, eps]; the projection clamps the "
                              "perturbation x_next - x", "x + (x_next - x).clamp(-eps, eps)"),
        "image [-eps, eps] unclipped": (up.clamp(-eps, eps),
                                        "you clamped the image itself to [-eps, eps]; the projection clamps the "
                                        "perturbation x_next - x", "x + (x_next - x).clamp(-eps, eps)"),
        "around x_adv": (torch.min(torch.max(up, x_adv - eps), x_adv + eps).clamp(0, 1),
                         "you did not project onto the eps ball around the ORIGINAL image x (no projection at "
                         "all, or a ball around the current x_adv, which lets the steps add up beyond eps)",
                         "torch.min(torch.max(x_next, x - eps), x + eps)"),
        "upper only": (torch.min(up, x + eps).clamp(0, 1),
                       "you only applied the upper bound x + eps: pixels can still go below x - eps",
                       "torch.min(torch.max(x_next, x - eps), x + eps)"),
        "lower only": (torch.max(up, x - eps).clamp(0, 1),
                       "you only applied the lower bound x - eps: pixels can still go above x + eps",
                       "torch.min(torch.max(x_next, x - eps), x + eps)"),
        "eps step": (pgd_step(x_adv, grad, x, eps, eps),
                     f"you stepped by eps = {eps:.3g} instead of alpha = {alpha:.3g}: alpha is the step, eps the "
                     "budget", "x_adv + alpha * grad.sign()"),
    }


def _pgd_case(seed: int, eps: float, alpha: float):
    x, _ = _images(6, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    grad = torch.randn(x.shape, generator=g) * 1e-2
    grad[:, :, :2] = 0.0
    x_adv = (x + torch.empty(x.shape).uniform_(-eps, eps, generator=g)).clamp(0, 1)
    return x_adv, grad, x, eps, alpha


@exercise("clead_lite.exercises.nb02_pgd:pgd_step")
def check_pgd_step(student_step: Callable) -> bool:
    """Exercise (02): `pgd_step(x_adv, grad, x, eps, alpha) -> x_next`, the L-inf PGD update
    x_next = clip_[0,1](Proj_{|d|_inf <= eps}(x_adv + alpha * sign(grad) - x) + x).

    Detects: errors, a step from x instead of x_adv, the perturbation clamped to [0, eps], the image clamped to
    [-eps, eps], no projection / projection around x_adv / one bound only, forgetting to clip, descent, value
    instead of sign, eps or a hard-coded number as the step size, changing inputs in place.
    """
    name = "check_pgd_step"
    cases = [_pgd_case(2, 0.1, 0.03), _pgd_case(7, 0.1, 0.02)]
    outs = []
    for x_adv, grad, x, eps, alpha in cases:
        args = (x_adv.clone(), grad.clone(), x.clone())
        out = _call(name, student_step, *args, eps, alpha)
        if out is _FAILED:
            return False
        if not (torch.equal(args[0], x_adv) and torch.equal(args[1], grad) and torch.equal(args[2], x)):
            return _fail(name, "your function changed one of its inputs in place (x_adv, grad or x)",
                         "build new tensors (x_adv + ...) instead of x_adv.add_(...)")
        if not _check_tensor(name, out, x):
            return False
        outs.append(out.detach())
    for out, (x_adv, grad, x, eps, alpha) in zip(outs, cases):
        expected = pgd_step(x_adv, grad, x, eps, alpha)
        if _close(out, expected):
            continue
        for candidate, message, hint in _step_mistakes(x_adv, grad, x, eps, alpha).values():
            if _close(out, candidate) and not _close(candidate, expected):
                return _fail(name, message, hint)
    sizes = [_constant_step(out, x_adv, grad, x, eps) for out, (x_adv, grad, x, eps, _) in zip(outs, cases)]
    (a1, a2) = (c[4] for c in cases)
    if None not in sizes and abs(sizes[0] - sizes[1]) < 1e-4 and \
            not all(_close(o, pgd_step(*c)) for o, c in zip(outs, cases)):
        return _fail(name, f"you hard-coded the step size: pixels moved by {sizes[0]:.3g} for alpha = {a1} and "
                           f"for alpha = {a2}", "use the function's argument: x_adv + alpha * grad.sign()")
    for out, (x_adv, grad, x, eps, alpha) in zip(outs, cases):
        if not _diagnose_linf_step(name, out, x_adv, x, grad, eps, alpha, pgd_step(x_adv, grad, x, eps, alpha),
                                   "PGD step"):
            return False
    return _ok(name, "your PGD step matches: ascend by alpha * sign(grad), project onto the eps ball around x, "
                     "clip to [0, 1]")


@exercise("clead_lite.exercises.nb02_pgd:project_l2")
def check_projection(student_project: Callable, norm: str = "l2") -> bool:
    """Exercise (02): `project(delta, eps) -> delta'`, the closest point to delta in {|d| <= eps} per example.

    norm='l2': delta * min(1, eps / |delta|_2) per example (flattened); norm='linf': delta.clamp(-eps, eps).
    Detects: one norm for the whole batch, scaling deltas already inside the ball, division by zero for
    delta = 0, the squared norm, using the other norm's projection, leaving the ball, clamping to [0, eps],
    losing the sign, pushing every pixel to +-eps.
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
        expected = project_l2(delta, eps)
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
        n4 = norms.view(-1, 1, 1, 1)
        if _close(out, delta * min(1.0, eps / float(delta.norm())), 1e-5):
            return _fail(name, "you computed one norm for the whole batch: every example must be projected on its "
                               "own", "per-example norms: delta.flatten(1).norm(dim=1), reshaped to (B, 1, 1, 1)")
        if _close(out, delta * (eps / n4.pow(2).clamp_min(1e-12)).clamp(max=1.0), 1e-5):
            return _fail(name, "you divided by the squared norm |delta|^2; scale by eps / |delta|_2",
                         "delta.flatten(1).norm(dim=1) is already the L2 norm (the square root is inside)")
        if _close(out, delta.clamp(-eps, eps), 1e-5) and not _close(out, delta, 1e-5):
            return _fail(name, "that is the L-inf projection (clamping each pixel); the L2 ball needs a rescaling "
                               "of the whole delta", "delta * min(1, eps / |delta|_2)")
    out_norms = out.flatten(1).norm(dim=1) if norm == "l2" else out.flatten(1).abs().amax(1)
    if norm == "linf":
        if _close(out, delta.clamp(0, eps), 1e-5):
            return _fail(name, "you clamped to [0, eps]: negative perturbations are allowed too", "clamp(-eps, eps)")
        if _close(out, delta.abs().clamp(max=eps), 1e-5):
            return _fail(name, "you lost the sign of delta (abs before clamping): negative perturbations must stay "
                               "negative", "delta.clamp(-eps, eps)")
        if _close(out, eps * delta.sign(), 1e-5):
            return _fail(name, "you pushed every pixel to +-eps (that is an FGSM step, not a projection): pixels "
                               "already inside [-eps, eps] must stay where they are", "delta.clamp(-eps, eps)")
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
    return _fail(name, f"your projection differs from delta.clamp(-eps, eps) by up to "
                       f"{float((out - expected).abs().max()):.3g}",
                 "the L-inf projection clamps each pixel on its own; it does not rescale the whole delta")
