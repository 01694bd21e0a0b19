"""Checks for notebook 05's exercises: the C-LEAD online loss and the per-example contrastive loss that PGD
maximises to craft views. Same method as notebook 04's checks: compare with the reference (value and
gradients), then with a catalogue of typical mistakes."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import info_nce, supcon
from ._common import NAN_TRAP, _allclose, _as_scalar_loss, _diagnose, _say, _try, _variants, exercise
from .nb04_contrastive import (COSINE_INSTEAD, INFO_NCE_MESSAGES, INFO_NCE_OPTIONS, info_nce_cases, scaled_temperature,
                               info_nce_variant)

__all__ = ["check_clead_step", "check_contrastive_attack_loss"]

_close = _allclose
_call = _try


def _tiny_model(seed: int = 0) -> nn.Module:
    """A tiny untrained SmallCNN whose embeddings differ from image to image (He init, zero biases: PyTorch's
    default init maps every image to almost the same direction, which would make every loss variant equal)."""
    from ..models import SmallCNN
    g = torch.Generator().manual_seed(seed)
    model = SmallCNN(num_classes=10, width=4, feature_dim=16, proj_dim=8)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / m.weight[0].numel()))
                m.bias.zero_()
    return model


def _tiny_batch(seed: int = 0, b: int = 6, eps: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth random 'images' (upsampled 4x4 noise) in [0, 1], sign-noise perturbed copies and labels."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(b, 1, 4, 4, generator=g), size=28, mode="bilinear", align_corners=False)
    x_adv = (x + eps * torch.sign(torch.randn(x.shape, generator=g))).clamp(0, 1)
    y = torch.randint(0, 10, (b,), generator=g)
    return x, x_adv, y


def _forward(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> dict:
    """Every model output the C-LEAD loss variants need, computed once (for one batch and one y)."""
    f_clean, f_adv = model.features(x), model.features(x_adv)
    return {"f_clean": f_clean, "f_adv": f_adv, "logits_clean": model.classifier(f_clean),
            "logits_adv": model.classifier(f_adv), "z_clean": model.head(f_clean), "z_adv": model.head(f_adv)}


def _contrast(z_clean, z_adv, y, tau: float, kind: str, symmetric: bool) -> torch.Tensor:
    if kind == "info_nce":
        return info_nce(z_clean, z_adv, temperature=tau, symmetric=symmetric)
    if kind == "supcon":
        return supcon(torch.cat([z_clean, z_adv]), torch.cat([y, y]), temperature=tau)
    cos = F.cosine_similarity(z_clean, z_adv, dim=1)
    return -cos.mean() if kind == "cosine" else (1 - cos).mean()


def clead_step_variant(out: dict[str, torch.Tensor], y: torch.Tensor, lam: float, tau: float,
                       ce_on: str = "adversarial", weight: str = "contrastive", embedding: str = "projection",
                       query: str = "clean", temperature: str = "once", contrastive: bool = True,
                       sign: str = "+", loss: str = "info_nce") -> torch.Tensor:
    """The C-LEAD online loss from the model outputs `_forward(model, x, x_adv)`, with switches for the typical
    mistakes; the defaults are the correct loss
    CE(model(x_adv), y) + lam * info_nce(model.project(x), model.project(x_adv), temperature=tau)."""
    cache = out.setdefault("cache", {})               # many variants share their parts: compute each once

    def part(key, compute):
        if key not in cache:
            cache[key] = compute()
        return cache[key]
    ce_adv = part("ce_adv", lambda: F.cross_entropy(out["logits_adv"], y))
    ce_clean = part("ce_clean", lambda: F.cross_entropy(out["logits_clean"], y))
    ce = {"adversarial": ce_adv, "clean": ce_clean, "both": ce_adv + ce_clean}[ce_on]
    if not contrastive:
        return ce
    key = {"projection": "z", "features": "f", "logits": "logits"}[embedding]
    z_clean, z_adv = out[f"{key}_clean"], out[f"{key}_adv"]
    if query == "adversarial":
        z_clean, z_adv = z_adv, z_clean
    con = part((embedding, query, temperature, loss), lambda: _contrast(
        z_clean, z_adv, y, scaled_temperature(tau, temperature), loss, symmetric=(query == "both")))
    if sign == "-":
        con = -con
    return {"contrastive": ce + lam * con, "cross-entropy": lam * ce + con, "missing": ce + con}[weight]


CLEAD_STEP_OPTIONS = {
    "ce_on": ("adversarial", "clean", "both"),
    "weight": ("contrastive", "cross-entropy", "missing"),
    "embedding": ("projection", "features", "logits"),
    "query": ("clean", "adversarial", "both"),
    "temperature": ("once", "twice", "missing", "multiplied", "hard-coded 0.1"),
    "contrastive": (True, False),
    "sign": ("+", "-"),
    "loss": ("info_nce", "supcon", "cosine", "one minus cosine"),
}
CLEAD_STEP_MESSAGES = {
    "ce_on=clean": ("the cross-entropy must be computed on the adversarial inputs x_adv (that is what makes it "
                    "adversarial training); yours uses the clean x."),
    "ce_on=both": ("you added the cross-entropy on the clean inputs too; this exercise (and clead_online's default) "
                   "uses the adversarial cross-entropy only."),
    "weight=cross-entropy": "lambda weighs the contrastive term, not the cross-entropy: CE + lam * InfoNCE.",
    "weight=missing": "you forgot lambda: the loss is CE + lam * InfoNCE.",
    "embedding=features": ("the contrastive term uses the projection head, model.project(x) (or the second output "
                           "of model.forward_all), not model.features(x)."),
    "embedding=logits": ("you contrasted the logits; the contrastive term uses the projection head, "
                         "model.project(x) (the second output of model.forward_all)."),
    "query=adversarial": ("you swapped the roles: the clean embedding is the query (anchor) and the adversarial one "
                          "its positive view: info_nce(z_clean, z_adv, ...)."),
    "query=both": ("you used the symmetric NT-Xent; in C-LEAD the clean embedding is the only query: "
                   "info_nce(z_clean, z_adv, temperature=temperature) (symmetric=False)."),
    "temperature=twice": INFO_NCE_MESSAGES["temperature=twice"],
    "temperature=missing": "you did not pass the temperature on to info_nce (temperature=temperature).",
    "temperature=multiplied": INFO_NCE_MESSAGES["temperature=multiplied"],
    "temperature=hard-coded 0.1": "you ignored the `temperature` argument: pass temperature=temperature to info_nce.",
    "contrastive=False": "your loss has no contrastive term: add lam * info_nce(z_clean, z_adv, ...).",
    "sign=-": ("you SUBTRACTED the contrastive term (CE - lam * InfoNCE): minimising that pushes each adversarial "
               "embedding AWAY from its clean partner, the opposite of C-LEAD; the loss is CE + lam * InfoNCE."),
    "loss=supcon": ("you used SupCon, with the labels; C-LEAD online's contrastive term is InfoNCE, which needs no "
                    "labels: info_nce(z_clean, z_adv, temperature=temperature)."),
    "loss=cosine": ("you used the cosine similarity of each clean/adversarial pair instead of InfoNCE: without the "
                    "negatives in the denominator nothing keeps different images apart (the embeddings can "
                    "collapse); use info_nce(z_clean, z_adv, temperature=temperature)."),
    "loss=one minus cosine": ("you used 1 - cosine similarity of each clean/adversarial pair instead of InfoNCE: "
                              "without the negatives nothing keeps different images apart; use "
                              "info_nce(z_clean, z_adv, temperature=temperature)."),
}


def clead_online_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, lam: float,
                      temperature: float) -> torch.Tensor:
    """The reference: CE(model(x_adv), y) + lam * info_nce(model.project(x), model.project(x_adv))."""
    logits_adv, z_adv = model.forward_all(x_adv)
    return F.cross_entropy(logits_adv, y) + lam * info_nce(model.project(x), z_adv, temperature=temperature)


@exercise("clead_lite.exercises.nb05_clead:clead_online_loss")
def check_clead_step(student_fn: Callable[..., torch.Tensor]) -> bool:
    """Check `student_fn(model, x, x_adv, y, lam, temperature) -> scalar`, the C-LEAD online loss:
    CE(model(x_adv), y) + lam * InfoNCE(clean projection as query, adversarial projection as positive)."""
    model = _tiny_model(0)
    cases = [(*_tiny_batch(1), 0.7, 0.5), (*_tiny_batch(2, b=5), 1.3, 0.2)]
    params = [p for p in model.parameters()]
    student, expected = [], []
    for x, x_adv, y, lam, tau in cases:
        model.train()
        out, err = _call(student_fn, model, x.clone(), x_adv.clone(), y.clone(), lam, tau)
        if err:
            return _say(False, err)
        if any(p.grad is not None for p in params):
            return _say(False, "your function called backward() (the model's parameters now have .grad): return the "
                               "loss and let the training loop call loss.backward() once, after zero_grad().")
        if not model.training:
            return _say(False, "your function switched the model to eval mode: the loss is computed during training "
                               "(model.train()); leave the mode as you found it.")
        out, err = _as_scalar_loss(out)
        if err:
            return _say(False, err)
        ref = clead_step_variant(_forward(model, x, x_adv), y, lam, tau)
        student.append(out.detach())
        expected.append(ref.detach())
        if _close(out.detach(), ref.detach()):
            g_ref = torch.autograd.grad(ref, params, allow_unused=True)
            g_student = torch.autograd.grad(out, params, allow_unused=True)
            for (name, p), gs, gr in zip(model.named_parameters(), g_student, g_ref):
                gs = torch.zeros_like(p) if gs is None else gs
                gr = torch.zeros_like(p) if gr is None else gr
                if not _close(gs, gr):
                    return _say(False, f"the value is right but the gradient of {name} is not: did you .detach() "
                                       "one of the embeddings or run part of the model under torch.no_grad()? In "
                                       "C-LEAD online both branches are trained.")
    if all(_close(s, e) for s, e in zip(student, expected)):
        x, x_adv, y, _, tau = cases[0]
        out0, _ = _call(student_fn, model, x, x_adv, y, 0.0, tau)
        if out0 is None or not _close(out0.detach(), F.cross_entropy(model(x_adv), y).detach()):
            return _say(False, "with lam = 0 your loss should be the plain adversarial cross-entropy (PGD-AT).")
        return _say(True, "your C-LEAD online loss matches the reference, gradients included; with lam = 0 it is "
                          "exactly PGD-AT's cross-entropy on x_adv.")
    with torch.no_grad():
        outs = [_forward(model, x, xa) for x, xa, _, _, _ in cases]
    variants = _variants(CLEAD_STEP_OPTIONS, lambda s: [
        clead_step_variant(o, y, lam, tau, **s) for o, (_, _, y, lam, tau) in zip(outs, cases)])
    why = _diagnose(student, variants, CLEAD_STEP_MESSAGES)
    if why:
        return _say(False, why)
    return _say(False, f"the loss should be {expected[0].item():.4f} on the first test batch, yours is "
                       f"{student[0].item():.4f}. Recipe: logits_adv, z_adv = model.forward_all(x_adv); "
                       "z_clean = model.project(x); CE(logits_adv, y) + lam * info_nce(z_clean, z_adv, "
                       "temperature=temperature).")


# ================================================================ 05: crafting views against the contrast
ATTACK_LOSS_OPTIONS = {**INFO_NCE_OPTIONS, "reduction": ("none", "mean", "sum"), "query": ("clean", "adversarial")}
ATTACK_LOSS_MESSAGES = {
    **INFO_NCE_MESSAGES,
    "reduction=mean": ("return one loss per example, shape (B,) (F.cross_entropy(..., reduction='none')): PGD "
                       "keeps the worst restart of each example separately. Their mean is info_nce itself."),
    "reduction=sum": ("return one loss per example, shape (B,) (F.cross_entropy(..., reduction='none')), not "
                      "their sum: PGD keeps the worst restart of each example separately."),
    "query=adversarial": ("the clean embedding is the query: row i is clean_i against its positive adv_i and the "
                          "negatives clean_j, adv_j (j != i) — the rows of the training loss info_nce(z_clean, "
                          "z_adv), so the attacker maximises exactly what the defender minimises."),
    "sign=-": ("wrong sign: PGD *maximises* loss_fn, so return the contrastive loss itself; your negative would "
               "pull each adversarial embedding towards its clean partner instead of away from it."),
}


def contrastive_attack_loss(z_clean: torch.Tensor, z_adv: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The reference: the (B,) per-example InfoNCE terms with the clean embeddings as queries."""
    return info_nce_variant(z_clean, z_adv, temperature, reduction="none")


@exercise("clead_lite.exercises.nb05_clead:contrastive_attack_loss")
def check_contrastive_attack_loss(student_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check `student_fn(z_clean (B, D), z_adv (B, D), temperature) -> (B,)`: the per-example InfoNCE that PGD
    maximises to craft views against the contrastive loss (clean_i the query, adv_i its positive, the other
    2B - 2 embeddings the negatives; its mean is `info_nce(z_clean, z_adv)`). z_clean is fixed (no gradient)."""
    cases = info_nce_cases()
    student, expected = [], []
    for z_clean, z_adv, tau in cases:
        za = z_adv.clone().requires_grad_(True)
        out, err = _call(student_fn, z_clean.clone(), za, tau)
        if err:
            return _say(False, err)
        if not isinstance(out, torch.Tensor):
            return _say(False, f"return a tensor of shape (B,) = ({len(z_adv)},), got a {type(out).__name__}.")
        if not out.requires_grad:
            return _say(False, "your loss carries no gradient with respect to z_adv (requires_grad is False): PGD "
                               "needs d loss / d x_adv, so no .item(), .detach() or torch.no_grad() on z_adv.")
        if out.shape != (len(z_adv),):
            if out.numel() == 1:
                return _say(False, ATTACK_LOSS_MESSAGES["reduction=mean"])
            return _say(False, f"return one loss per example, shape ({len(z_adv)},), got {tuple(out.shape)}.")
        if torch.isnan(out.detach()).any():
            return _say(False, NAN_TRAP)
        ref = info_nce_variant(z_clean, z_adv.clone().requires_grad_(True), tau, reduction="none")
        student.append(out.detach())
        expected.append(ref.detach())
        if _close(out.detach(), ref.detach()):
            g_student, = torch.autograd.grad(out.sum(), za)
            zr = z_adv.clone().requires_grad_(True)
            g_ref, = torch.autograd.grad(info_nce_variant(z_clean, zr, tau, reduction="none").sum(), zr)
            if not _close(g_student, g_ref):
                return _say(False, "the values are right but the gradient with respect to z_adv is not: is part of "
                                   "the adversarial branch detached?")
    if all(_close(s, e) for s, e in zip(student, expected)):
        return _say(True, "one contrastive loss per example, matching the reference (and its mean is "
                          "info_nce(z_clean, z_adv)); PGD can now maximise it to push each adversarial embedding "
                          "away from its clean partner.")
    cosines = [F.cosine_similarity(a, v, dim=1) for a, v, _ in cases]
    if any(all(_close(s, f(c)) for s, c in zip(student, cosines)) for f in (lambda c: -c, lambda c: 1 - c,
                                                                           lambda c: c)):
        return _say(False, COSINE_INSTEAD)
    variants = _variants(ATTACK_LOSS_OPTIONS, lambda s: [info_nce_variant(a, v, tau, **s) for a, v, tau in cases])
    why = _diagnose(student, variants, ATTACK_LOSS_MESSAGES)
    if why:
        return _say(False, why)
    return _say(False, f"on the first test batch the losses should be {_fmt(expected[0])}, yours are "
                       f"{_fmt(student[0])}. Recipe: u, v = F.normalize(z_clean, dim=1), F.normalize(z_adv, dim=1); "
                       "logits = [u @ v.T | u @ u.T with the diagonal -inf] / temperature; "
                       "F.cross_entropy(logits, torch.arange(B), reduction='none').")


def _fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in t.flatten()[:4].tolist()) + (", ...]" if t.numel() > 4 else "]")
