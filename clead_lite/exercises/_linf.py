"""Diagnosis of an L-inf sign step (FGSM, one PGD step), shared by the checks of notebooks 01 and 02."""
from __future__ import annotations

import torch

from ._common import TOL, _close, _fail


def _constant_step(out: torch.Tensor, start: torch.Tensor, grad: torch.Tensor, x: torch.Tensor | None = None,
                   eps: float | None = None) -> float | None:
    """The size by which every freely moving pixel moved (not clipped at 0 or 1, not on the surface of the eps ball
    around x when given, gradient not 0), when it is the same for all of them; else None."""
    free = (grad != 0) & (out > TOL) & (out < 1 - TOL)
    if x is not None:
        free &= ((out - x).abs() - eps).abs() > 1e-4
    if not free.any():
        return None
    sizes = (out - start)[free].abs()
    if float(sizes.max() - sizes.min()) > 1e-4 or float(sizes.mean()) < TOL:
        return None
    return float(sizes.mean())


def _diagnose_linf_step(name: str, out: torch.Tensor, start: torch.Tensor, x: torch.Tensor, grad: torch.Tensor,
                        eps: float, step: float, expected: torch.Tensor, step_name: str) -> bool:
    """Common diagnosis of `out` = clip(Proj(start + step * sign(grad))) around x, budget eps, once the named
    mistakes have been ruled out.

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
