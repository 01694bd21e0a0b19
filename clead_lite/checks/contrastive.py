"""Checks for the exercises of notebooks 04-07 (contrastive losses, C-LEAD, honest evaluation, embeddings).

Each `check_*` runs the student's function on small fixed inputs, compares it with the reference, and when
they differ, compares it with the typical mistakes (one or two at a time) to say *which* mistake it is:
"you forgot to normalise the embeddings", "temperature applied twice", ... It prints that feedback and
returns True (correct) or False.

The references are `clead_lite.losses` (InfoNCE, SupCon) and short formulas written out here; the mistake
variants are written here, with the correct formula as one setting of their switches (the tests check that
this setting equals `clead_lite.losses`). Floor 1: imports `losses` and `models` only.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import info_nce, supcon

__all__ = [
    "check_info_nce", "check_supcon", "check_clead_step", "check_contrastive_attack_loss",
    "check_transfer_eval", "check_spot_the_flaw", "check_separation_metric", "check_umap_reading",
    "SPOT_THE_FLAW_OPTIONS", "UMAP_READING_OPTIONS",
]

RTOL, ATOL = 1e-4, 1e-5


# --------------------------------------------------------------------------------------- reporting
def _say(ok: bool, message: str) -> bool:
    """Print the feedback with a clear verdict and return `ok`."""
    print(("✅ Correct! " if ok else "❌ Not yet: ") + message)
    return ok


def _close(a, b) -> bool:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a, b, rtol=RTOL, atol=ATOL)


def _call(fn: Callable, *args):
    """fn(*args), or (None, message) when it raises (NotImplementedError: the stub is not filled in yet)."""
    try:
        return fn(*args), None
    except NotImplementedError as e:
        return None, (f"not implemented yet ({e or 'NotImplementedError'}). Replace the "
                      "`raise NotImplementedError(...)` line with your code, run that cell, then this one again.")
    except Exception as e:  # noqa: BLE001 - any student error becomes feedback
        hint = ""
        if "in-place" in str(e):
            hint = (" — you changed a tensor in place (e.g. z /= z.norm(...)); use F.normalize(z, dim=1), which "
                    "returns a new tensor")
        return None, f"your function raised {type(e).__name__}: {e}{hint}"


def _as_scalar_loss(out, what: str = "loss") -> tuple[torch.Tensor | None, str | None]:
    """The student's output as a 0-d tensor that carries gradients, or an explanation why it is not."""
    if not isinstance(out, torch.Tensor):
        return None, (f"your {what} is a {type(out).__name__}, not a torch.Tensor: keep it a tensor (no .item(), "
                      "no numpy) so that loss.backward() can train the model.")
    if out.numel() != 1:
        return None, (f"your {what} has shape {tuple(out.shape)}; it must be one number (a 0-d tensor): "
                      "average over the batch with .mean().")
    if not out.requires_grad:
        return None, (f"your {what} carries no gradient (requires_grad is False): did you use .item(), .detach(), "
                      "numpy or torch.no_grad()? The loss must stay differentiable.")
    return out.reshape(()), None


def _diagnose(student: list[torch.Tensor], variants: list[tuple[tuple[str, ...], list[torch.Tensor]]],
              messages: dict[str, str]) -> str | None:
    """The explanation of the first (fewest-mistakes) variant whose values all equal the student's."""
    for mistakes, values in variants:
        if mistakes and all(_close(s, v) for s, v in zip(student, values)):
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


# ============================================================================ 04: InfoNCE (one view)
def _temperature(tau: float, how: str) -> float:
    """The temperature a student effectively divides by."""
    return {"once": tau, "missing": 1.0, "twice": tau * tau, "multiplied": 1.0 / tau, "hard-coded 0.1": 0.1}[how]


def _mask(m: torch.Tensor, mode: str) -> torch.Tensor:
    """Remove the diagonal of a similarity block ('excluded'), keep it ('included'), or set it to 0 ('zeroed')."""
    eye = torch.eye(m.shape[0], m.shape[1], dtype=torch.bool)
    if mode == "excluded":
        return m.masked_fill(eye, float("-inf"))
    if mode == "zeroed":
        return m.masked_fill(eye, 0.0)
    return m


def info_nce_variant(anchor: torch.Tensor, view: torch.Tensor, tau: float, normalise: bool = True,
                     self_similarity: str = "excluded", positive: str = "included", anchor_negatives: bool = True,
                     temperature: str = "once", reduction: str = "mean", sign: str = "+",
                     query: str = "clean") -> torch.Tensor:
    """One InfoNCE term (anchor queries, view positives) with switches for the typical mistakes; the
    defaults are the correct loss, `losses.info_nce(anchor, view, temperature=tau)`. reduction 'none' gives
    the (B,) per-anchor losses; query 'adversarial' swaps the roles of anchor and view."""
    if query == "adversarial":
        anchor, view = view, anchor
    a, v = (F.normalize(anchor, dim=1), F.normalize(view, dim=1)) if normalise else (anchor, view)
    t = _temperature(tau, temperature)
    cross = a @ v.T / t                                   # (B, B): the diagonal holds the positives
    blocks = [_mask(cross, positive)]
    if anchor_negatives:
        blocks.append(_mask(a @ a.T / t, self_similarity))  # (B, B): the diagonal is the anchor itself
    per_anchor = torch.logsumexp(torch.cat(blocks, dim=1), dim=1) - cross.diagonal()
    loss = {"mean": per_anchor.mean, "sum": per_anchor.sum, "none": lambda: per_anchor}[reduction]()
    return loss if sign == "+" else -loss


INFO_NCE_OPTIONS = {
    "normalise": (True, False),
    "self_similarity": ("excluded", "included", "zeroed"),
    "positive": ("included", "excluded", "zeroed"),
    "anchor_negatives": (True, False),
    "temperature": ("once", "twice", "missing", "multiplied", "hard-coded 0.1"),
    "reduction": ("mean", "sum"),
    "sign": ("+", "-"),
}
INFO_NCE_MESSAGES = {
    "normalise=False": ("you forgot to normalise the embeddings: cosine similarity needs unit vectors, "
                        "u = F.normalize(z, dim=1), before the dot products."),
    "self_similarity=included": ("you included the self-similarity s(a_i, a_i) in the denominator: it is "
                                 "always 1/tau and no negative; mask the diagonal of the anchor-anchor block "
                                 "with -inf."),
    "self_similarity=zeroed": ("you set the self-similarity to 0, but exp(0) = 1 still adds to the denominator: "
                               "mask it with -inf (or drop it) instead."),
    "positive=excluded": ("the positive must be included in the denominator: InfoNCE is a softmax over the "
                          "positive and all negatives, -log(e^{s+} / (e^{s+} + sum e^{s-})); you left it out."),
    "positive=zeroed": ("you set the positive's similarity to 0 in the denominator; it must appear there with its "
                        "real value s(a_i, v_i)/tau (the loss is a cross-entropy over 2B - 1 candidates)."),
    "anchor_negatives=False": ("you only used the other *views* as negatives; the other anchors a_j (j != i) are "
                               "negatives too, 2B - 2 negatives in all (concatenate the anchor-anchor block)."),
    "temperature=twice": "temperature applied twice: divide the cosine similarities by tau exactly once.",
    "temperature=missing": "you forgot the temperature: divide the cosine similarities by tau.",
    "temperature=multiplied": "you multiplied by the temperature; divide the similarities by tau.",
    "temperature=hard-coded 0.1": "you ignored the `temperature` argument (your loss uses tau = 0.1 always).",
    "reduction=sum": "you summed over the batch; take the mean over the anchors.",
    "sign=-": "wrong sign: the loss is -log(probability of the positive) >= 0; yours is its negative.",
}


def _info_nce_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Small embeddings with varied norms (so normalising matters) and correlated positives."""
    g = torch.Generator().manual_seed(4)
    cases = []
    for b, d, tau in ((6, 5, 0.25), (4, 7, 0.5)):
        anchor = torch.randn(b, d, generator=g) * 0.6
        view = anchor + 0.5 * torch.randn(b, d, generator=g)
        scale_a = 0.5 + torch.rand(b, 1, generator=g)
        scale_v = 0.5 + torch.rand(b, 1, generator=g)
        cases.append((anchor * scale_a, view * scale_v, tau))
    return cases


def check_info_nce(student_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check `student_fn(anchor (B, D), view (B, D), temperature) -> scalar`, one InfoNCE term: anchor i is the
    query, view i its positive, the 2B - 2 other anchors and views the negatives (mean over anchors)."""
    cases = _info_nce_cases()
    student, expected = [], []
    for anchor, view, tau in cases:
        a, v = anchor.clone().requires_grad_(True), view.clone().requires_grad_(True)
        before = [a.detach().clone(), v.detach().clone()]
        out, err = _call(student_fn, a, v, tau)
        if err:
            return _say(False, err)
        out, err = _as_scalar_loss(out)
        if err:
            return _say(False, err)
        if not _inputs_unchanged(before, [a.detach(), v.detach()]):
            return _say(False, "your function changed its inputs in place (e.g. z /= z.norm()); use "
                               "F.normalize(z, dim=1), which returns a new tensor.")
        ref = info_nce(anchor, view, temperature=tau)
        student.append(out.detach())
        expected.append(ref)
        if _close(out.detach(), ref):
            a_ref, v_ref = anchor.clone().requires_grad_(True), view.clone().requires_grad_(True)
            g_ref = torch.autograd.grad(info_nce(a_ref, v_ref, temperature=tau), (a_ref, v_ref))
            g_student = torch.autograd.grad(out, (a, v), allow_unused=True)
            if any(gs is None or not _close(gs, gr) for gs, gr in zip(g_student, g_ref)):
                return _say(False, "the value is right but the gradients are not: did you .detach() one of the "
                                   "embeddings (or compute part of the loss outside torch)?")
    if all(_close(s, e) for s, e in zip(student, expected)):
        return _say(True, f"your InfoNCE matches clead_lite.losses.info_nce (e.g. {student[0].item():.4f} for "
                          f"B = {len(cases[0][0])}, tau = {cases[0][2]}).")
    variants = _variants(INFO_NCE_OPTIONS, lambda s: [info_nce_variant(a, v, tau, **s) for a, v, tau in cases])
    why = _diagnose(student, variants, INFO_NCE_MESSAGES)
    if why:
        return _say(False, why)
    b, tau = len(cases[0][0]), cases[0][2]
    return _say(False, f"for B = {b}, tau = {tau} the loss should be {expected[0].item():.4f}, yours is "
                       f"{student[0].item():.4f}. Check, in order: normalise both embeddings; the similarity "
                       "matrix [a @ v.T | a @ a.T] / tau with the anchor-anchor diagonal masked by -inf; the "
                       "positive (the diagonal of a @ v.T) in numerator and denominator; cross-entropy with "
                       "target i for row i; mean over anchors.")


# ============================================================================= 04: SupCon (L_out)
def supcon_variant(z: torch.Tensor, labels: torch.Tensor, tau: float, normalise: bool = True,
                   self_similarity: str = "excluded", self_positive: bool = False, form: str = "out",
                   average: str = "per anchor", temperature: str = "once", reduction: str = "mean",
                   sign: str = "+") -> torch.Tensor | None:
    """SupCon with switches for the typical mistakes; the defaults are `losses.supcon` (Khosla L_out).
    Returns None for settings that do not define a loss."""
    u = F.normalize(z, dim=1) if normalise else z
    n = len(u)
    eye = torch.eye(n, dtype=torch.bool)
    logits = _mask(u @ u.T / _temperature(tau, temperature), self_similarity)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = labels[:, None] == labels[None, :]
    if not self_positive:
        positives = positives & ~eye
    elif self_similarity == "excluded":
        return None                                       # log p(i | i) = -inf: not a loss anyone reports
    n_pos = positives.sum(1)
    keep = n_pos > 0
    if form == "in":
        prob = log_prob.exp().masked_fill(~positives, 0.0).sum(1)
        per_anchor = -torch.log(prob[keep] / n_pos[keep])
    elif average == "all pairs":
        total = log_prob.masked_fill(~positives, 0.0).sum()
        return _reduce_sign(-total / n_pos.sum(), reduction, sign, int(keep.sum()))
    else:
        per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1)[keep] / n_pos[keep]
    loss = per_anchor.mean() if reduction == "mean" else per_anchor.sum()
    return loss if sign == "+" else -loss


def _reduce_sign(loss: torch.Tensor, reduction: str, sign: str, n: int) -> torch.Tensor:
    loss = loss if reduction == "mean" else loss * n
    return loss if sign == "+" else -loss


SUPCON_OPTIONS = {
    "normalise": (True, False),
    "self_similarity": ("excluded", "included", "zeroed"),
    "self_positive": (False, True),
    "form": ("out", "in"),
    "average": ("per anchor", "all pairs"),
    "temperature": ("once", "twice", "missing", "multiplied", "hard-coded 0.1"),
    "reduction": ("mean", "sum"),
    "sign": ("+", "-"),
}
SUPCON_MESSAGES = {
    "normalise=False": INFO_NCE_MESSAGES["normalise=False"],
    "self_similarity=included": ("you kept the anchor itself in the denominator: A(i) = {a != i}; mask the "
                                 "diagonal of z @ z.T with -inf."),
    "self_similarity=zeroed": INFO_NCE_MESSAGES["self_similarity=zeroed"],
    "self_positive=True": ("you counted the anchor as its own positive: P(i) = {p != i : y_p = y_i}; remove the "
                           "diagonal from the positive mask."),
    "form=in": ("you averaged the probabilities inside the log (Khosla et al.'s L_in); the loss to use is L_out: "
                "the mean over positives of the log-probabilities, -1/|P(i)| sum_p log p(p | i)."),
    "average=all pairs": ("you averaged over all positive pairs of the batch at once; average over the positives "
                          "of each anchor first (1/|P(i)|), then over the anchors — they differ when classes "
                          "have different counts."),
    "temperature=twice": INFO_NCE_MESSAGES["temperature=twice"],
    "temperature=missing": INFO_NCE_MESSAGES["temperature=missing"],
    "temperature=multiplied": INFO_NCE_MESSAGES["temperature=multiplied"],
    "temperature=hard-coded 0.1": INFO_NCE_MESSAGES["temperature=hard-coded 0.1"],
    "reduction=sum": INFO_NCE_MESSAGES["reduction=sum"],
    "sign=-": INFO_NCE_MESSAGES["sign=-"],
}


def _supcon_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Embeddings with varied norms; unequal class counts (so per-anchor and per-pair averages differ)."""
    g = torch.Generator().manual_seed(7)
    cases = []
    for labels, d, tau in (([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3], 6, 0.3), ([1, 1, 0, 0, 0, 0, 2, 2], 5, 0.5)):
        y = torch.tensor(labels)
        centres = torch.randn(int(y.max()) + 1, d, generator=g)
        z = (centres[y] + 0.8 * torch.randn(len(y), d, generator=g)) * 0.6
        z = z * (0.5 + torch.rand(len(y), 1, generator=g))
        cases.append((z, y, tau))
    return cases


def check_supcon(student_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check `student_fn(z (N, D), labels (N,) int64, temperature) -> scalar`, SupCon L_out (Khosla et al. 2020):
    positives = the other samples of the same class, denominator = all samples but the anchor."""
    cases = _supcon_cases()
    student, expected = [], []
    for z, y, tau in cases:
        zz = z.clone().requires_grad_(True)
        out, err = _call(student_fn, zz, y.clone(), tau)
        if err:
            return _say(False, err)
        out, err = _as_scalar_loss(out)
        if err:
            return _say(False, err)
        if not torch.equal(zz.detach(), z):
            return _say(False, "your function changed z in place; use F.normalize(z, dim=1), which returns a new "
                               "tensor.")
        student.append(out.detach())
        expected.append(supcon(z, y, temperature=tau))
    if not all(_close(s, e) for s, e in zip(student, expected)):
        variants = _variants(SUPCON_OPTIONS, lambda s: _all_or_none(
            [supcon_variant(z, y, tau, **s) for z, y, tau in cases]))
        why = _diagnose(student, variants, SUPCON_MESSAGES)
        if why:
            return _say(False, why)
        return _say(False, f"for N = {len(cases[0][1])}, tau = {cases[0][2]} the loss should be "
                           f"{expected[0].item():.4f}, yours is {student[0].item():.4f}. Check: normalise z; "
                           "logits z @ z.T / tau with the diagonal masked by -inf; log-softmax over each row; "
                           "positive mask = same label and not the diagonal; mean of the log-probabilities over "
                           "each anchor's positives, then the mean over anchors, with a minus sign.")
    # An anchor whose class appears once has no positive: it must be left out, not produce nan.
    g = torch.Generator().manual_seed(11)
    z1, y1 = torch.randn(7, 4, generator=g), torch.tensor([0, 0, 1, 1, 1, 2, 3])
    out, err = _call(student_fn, z1.clone().requires_grad_(True), y1, 0.5)
    if err:
        return _say(False, f"on a batch where classes 2 and 3 appear only once: {err}")
    value = torch.as_tensor(out.detach() if isinstance(out, torch.Tensor) else out, dtype=torch.float64)
    if not bool(torch.isfinite(value).all()):
        return _say(False, "when a class appears only once in the batch, that anchor has no positive and your "
                           "loss becomes nan (0 / 0): leave such anchors out of the mean (keep = n_pos > 0).")
    if not _close(value, supcon(z1, y1, temperature=0.5)):
        return _say(False, "anchors without a positive (a class that appears once in the batch) must be left out "
                           "of the mean, not counted as 0: average only over anchors with n_pos > 0.")
    return _say(True, f"your SupCon matches clead_lite.losses.supcon (e.g. {student[0].item():.4f} for "
                      f"N = {len(cases[0][1])}, tau = {cases[0][2]}), including anchors without positives.")


def _all_or_none(values: list):
    return None if any(v is None for v in values) else values


# ===================================================================== 05: the C-LEAD online loss step
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


def clead_step_variant(out: dict[str, torch.Tensor], y: torch.Tensor, lam: float, tau: float,
                       ce_on: str = "adversarial", weight: str = "contrastive", embedding: str = "projection",
                       query: str = "clean", temperature: str = "once", contrastive: bool = True) -> torch.Tensor:
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
    con = part((embedding, query, temperature), lambda: info_nce(
        z_clean, z_adv, temperature=_temperature(tau, temperature), symmetric=(query == "both")))
    return {"contrastive": ce + lam * con, "cross-entropy": lam * ce + con, "missing": ce + con}[weight]


CLEAD_STEP_OPTIONS = {
    "ce_on": ("adversarial", "clean", "both"),
    "weight": ("contrastive", "cross-entropy", "missing"),
    "embedding": ("projection", "features", "logits"),
    "query": ("clean", "adversarial", "both"),
    "temperature": ("once", "twice", "missing", "multiplied", "hard-coded 0.1"),
    "contrastive": (True, False),
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
}


def check_clead_step(student_fn: Callable[..., torch.Tensor]) -> bool:
    """Check `student_fn(model, x, x_adv, y, lam, temperature) -> scalar`, the C-LEAD online loss:
    CE(model(x_adv), y) + lam * InfoNCE(clean projection as query, adversarial projection as positive)."""
    model = _tiny_model(0)
    cases = [(*_tiny_batch(1), 0.7, 0.5), (*_tiny_batch(2, b=5), 1.3, 0.2)]
    params = [p for p in model.parameters()]
    student, expected = [], []
    for x, x_adv, y, lam, tau in cases:
        out, err = _call(student_fn, model, x.clone(), x_adv.clone(), y.clone(), lam, tau)
        if err:
            return _say(False, err)
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


def check_contrastive_attack_loss(student_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check `student_fn(z_clean (B, D), z_adv (B, D), temperature) -> (B,)`: the per-example InfoNCE that PGD
    maximises to craft views against the contrastive loss (clean_i the query, adv_i its positive, the other
    2B - 2 embeddings the negatives; its mean is `info_nce(z_clean, z_adv)`). z_clean is fixed (no gradient)."""
    cases = _info_nce_cases()
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


# ========================================================================= 06: transfer accuracy
class _Linear(nn.Module):
    """A linear classifier on 1x28x28 images with fixed weights (a stand-in model for the check)."""

    in_channels = 1

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def _transfer_scenario():
    """A target model, a related but different source model, data and an FGSM attack, built so that clean,
    white-box, transfer and the typical wrong answers all give different accuracies."""
    g = torch.Generator().manual_seed(0)
    w_true = torch.randn(10, 784, generator=g)
    x = torch.rand(200, 1, 28, 28, generator=g)

    def centred(w: torch.Tensor) -> _Linear:       # logits of (x - 0.5), so no class dominates
        return _Linear(w, -0.5 * w.sum(1))
    y = centred(w_true)(x).argmax(1).detach()
    target = centred(w_true + 0.6 * torch.randn(10, 784, generator=g))
    source = centred(w_true + 1.2 * torch.randn(10, 784, generator=g))

    def attack(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
        xb = xb.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xb), yb)
        grad, = torch.autograd.grad(loss, xb)
        return (xb + eps * grad.sign()).clamp(0, 1).detach()
    return source, target, x, y, attack


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def transfer_candidates(source, target, x, y, attack) -> dict[str, float]:
    """The correct transfer accuracy and the values of the typical mistakes."""
    x_src, x_tgt = attack(source, x, y), attack(target, x, y)
    correct = _acc(target, x_src, y)
    return {"correct": correct, "white-box": _acc(target, x_tgt, y), "source evaluated": _acc(source, x_src, y),
            "reversed": _acc(source, x_tgt, y), "clean": _acc(target, x, y), "error rate": 1.0 - correct,
            "percent": 100.0 * correct, "count": correct * len(y)}


TRANSFER_MESSAGES = {
    "white-box": ("you crafted the attack on the target itself: that is white-box robust accuracy. Transfer means "
                  "x_adv = attack(source, x, y), then evaluate the *target* on x_adv."),
    "source evaluated": ("you evaluated the source model on its own adversarial examples (white-box for the "
                         "source); evaluate the target: target(x_adv)."),
    "reversed": "you swapped the models: craft on the source, evaluate on the target.",
    "clean": "you evaluated the target on the clean images x; evaluate it on x_adv = attack(source, x, y).",
    "error rate": "you returned the error rate (1 - accuracy); return the accuracy, the fraction correct.",
    "percent": "return a fraction in [0, 1], not a percentage.",
    "count": "you returned the number of correct predictions; divide by the number of images.",
}


def check_transfer_eval(student_fn: Callable[..., float]) -> bool:
    """Check `student_fn(source, target, x, y, attack) -> float in [0, 1]`: the accuracy of `target` on adversarial
    examples crafted against `source` (attack(model, x, y) -> x_adv)."""
    source, target, x, y, attack = _transfer_scenario()
    out, err = _call(student_fn, source, target, x.clone(), y.clone(), attack)
    if err:
        return _say(False, err)
    try:
        value = float(out)
    except (TypeError, ValueError):
        return _say(False, f"return one number (a float), got {type(out).__name__}"
                           + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "") + ".")
    cands = transfer_candidates(source, target, x, y, attack)
    if abs(value - cands["correct"]) < 1e-6:
        return _say(True, f"transfer accuracy {value:.3f} (white-box on the same target: {cands['white-box']:.3f}, "
                          f"clean: {cands['clean']:.3f}) — transfer attacks are weaker than white-box ones.")
    for name, v in cands.items():
        if name != "correct" and abs(value - v) <= 1e-5 * max(1.0, abs(v)) and abs(v - cands["correct"]) > 1e-6:
            return _say(False, TRANSFER_MESSAGES[name])
    return _say(False, f"expected {cands['correct']:.3f}, got {value:.3f}. Recipe: x_adv = attack(source, x, y); "
                       "then the fraction of target(x_adv).argmax(1) == y (under torch.no_grad()).")


# ================================================================= 06: spot the flawed evaluation
SPOT_THE_FLAW_OPTIONS = {
    "A": "The wrapped model is genuinely robust: scaling the logits made it hard to attack.",
    "B": ("The attack receives useless gradients (gradient masking): the softmax saturates, the cross-entropy "
          "gradient is exactly zero, so PGD cannot find a direction and the robust accuracy is an illusion."),
    "C": "eps is too small for this dataset; increasing it would be the fix.",
    "D": "The test subset is too easy: evaluate on more images and the problem goes away.",
}
_SPOT_THE_FLAW_FEEDBACK = {
    "A": ("the wrapped model makes exactly the same predictions as the standard model on every input (multiplying "
          "the logits by a positive number never changes the argmax), so it cannot be more robust. The failed "
          "checks say the *evaluation* is broken: a transfer attack beats the white-box one, random noise is as "
          "strong as the attack."),
    "B": ("with logits x 1e4 the softmax is exactly one-hot in float32, so the cross-entropy gradient underflows "
          "to zero and PGD only keeps its random start: it is no stronger than random noise, and examples made on "
          "the unwrapped model transfer better than the 'white-box' attack. This is the signature of gradient "
          "masking (Carlini & Wagner 2016 on defensive distillation; Athalye et al. 2018). The fix: a loss that "
          "does not saturate (the CW margin on the logits), transfer and gradient-free attacks, AutoAttack."),
    "C": ("eps is not the problem: the predictions are identical to the standard model's, which the same eps "
          "breaks easily. The failed checks point at the attack, not at the budget."),
    "D": ("more images make the estimate tighter, but a check that fails by tens of percentage points is not noise: "
          "the attack itself is not working."),
}


def _letter(answer, options: dict) -> tuple[str | None, str | None]:
    """The chosen letter from a string or from a function returning one (the exercise stub)."""
    if callable(answer):
        answer, err = _call(answer)
        if err:
            return None, err
    letter = str(answer).strip().upper()[:1]
    if letter not in options:
        return None, f"answer with one letter of {', '.join(options)}, got {answer!r}."
    return letter, None


def check_spot_the_flaw(answer) -> bool:
    """Check the letter chosen for the broken-evaluation question of notebook 06 (a model whose logits are scaled
    by 1e4, attacked with cross-entropy PGD; options in SPOT_THE_FLAW_OPTIONS). answer: a letter, or a function
    returning one."""
    letter, err = _letter(answer, SPOT_THE_FLAW_OPTIONS)
    if err:
        return _say(False, err)
    return _say(letter == "B", _SPOT_THE_FLAW_FEEDBACK[letter])


# ======================================================================= 07: a separation metric
def separation_variant(z_clean: torch.Tensor, z_adv: torch.Tensor, normalise: bool = True,
                       pairs: str = "matched", quantity: str = "cosine") -> torch.Tensor:
    """The mean clean/adversarial cosine similarity of matched pairs, with switches for typical mistakes."""
    a, b = (F.normalize(z_clean, dim=1), F.normalize(z_adv, dim=1)) if normalise else (z_clean, z_adv)
    sims = (a * b).sum(1) if pairs == "matched" else (a @ b.T).flatten()
    if quantity == "distance":
        sims = 1 - sims
    elif quantity == "euclidean":
        diff = a - b if pairs == "matched" else (a[:, None] - b[None]).flatten(0, 1)
        sims = diff.norm(dim=1)
    return sims.mean()


SEPARATION_OPTIONS = {
    "normalise": (True, False),
    "pairs": ("matched", "all pairs"),
    "quantity": ("cosine", "distance", "euclidean"),
}
SEPARATION_MESSAGES = {
    "normalise=False": "you averaged raw dot products: normalise both embeddings first (cosine similarity).",
    "pairs=all pairs": ("you averaged over all (clean i, adversarial j) pairs; compare each clean embedding with "
                        "its *own* adversarial version: the diagonal, (u_clean * u_adv).sum(1)."),
    "quantity=distance": "you returned the cosine distance 1 - cos; return the cosine similarity itself.",
    "quantity=euclidean": "you returned a Euclidean distance; return the mean cosine similarity.",
}


def check_separation_metric(student_fn: Callable[[torch.Tensor, torch.Tensor], float]) -> bool:
    """Check `student_fn(z_clean (N, D), z_adv (N, D)) -> float`: the mean cosine similarity between each clean
    embedding and its own adversarial embedding (1: the attack does not move the embedding)."""
    g = torch.Generator().manual_seed(5)
    cases = []
    for n, d in ((12, 8), (9, 5)):
        zc = torch.randn(n, d, generator=g) * (0.5 + torch.rand(n, 1, generator=g))
        za = (zc + 0.9 * torch.randn(n, d, generator=g)) * (0.5 + torch.rand(n, 1, generator=g))
        cases.append((zc, za))
    student = []
    for zc, za in cases:
        out, err = _call(student_fn, zc.clone(), za.clone())
        if err:
            return _say(False, err)
        if isinstance(out, torch.Tensor) and out.numel() != 1:
            return _say(False, f"return one number (the mean over the N pairs), got a tensor of shape "
                               f"{tuple(out.shape)}.")
        try:
            student.append(torch.tensor(float(out), dtype=torch.float64))
        except (TypeError, ValueError):
            return _say(False, f"return one number (a float), got {type(out).__name__}.")
    expected = [separation_variant(zc, za).double() for zc, za in cases]
    if all(_close(s, e) for s, e in zip(student, expected)):
        return _say(True, f"mean matched cosine similarity {student[0].item():.4f} as expected "
                          "(1 = the attack leaves the embedding where it was).")
    variants = _variants(SEPARATION_OPTIONS, lambda s: [separation_variant(zc, za, **s).double() for zc, za in cases])
    why = _diagnose(student, variants, SEPARATION_MESSAGES)
    if why:
        return _say(False, why)
    return _say(False, f"expected {expected[0].item():.4f}, got {student[0].item():.4f}: normalise both, multiply "
                       "row by row, sum over the feature dimension, average over the N pairs.")


# ====================================================================== 07: reading the UMAP plot
UMAP_READING_OPTIONS = {
    "A": ("The distance between two class clusters in the UMAP plot measures how different the classes are in the "
          "embedding space, so we can read robustness off the gaps between clusters."),
    "B": ("When the adversarial points of the standard model land inside other classes' clusters, the attack has "
          "moved their embeddings to where the classifier sees another class; the separation metrics computed in "
          "the embedding space (not in the 2-D map) tell us how far."),
    "C": ("If the clean and adversarial points of a model overlap in the UMAP plot, the model must be robust; no "
          "metric is needed."),
    "D": "UMAP is fitted separately on clean and adversarial embeddings, so their positions cannot be compared.",
}
_UMAP_READING_FEEDBACK = {
    "A": ("UMAP keeps neighbourhoods, not global distances: gaps between clusters in the map are not reliable "
          "measurements. Read neighbourhoods off the plot and numbers off the metrics."),
    "B": ("the map shows *where* adversarial embeddings go (into other classes' neighbourhoods); the numbers "
          "come from the metrics computed in the full embedding space, because a 2-D map distorts distances."),
    "C": ("overlap in a 2-D map is suggestive, not proof: UMAP can squeeze apart points together, and robustness is "
          "about predictions, which the robust accuracy measures. Check the metrics and the accuracy."),
    "D": ("here UMAP is fitted once on the clean and adversarial embeddings *together* precisely so that their "
          "positions share one map and can be compared."),
}


def check_umap_reading(answer) -> bool:
    """Check the letter chosen for the UMAP interpretation question of notebook 07 (options in
    UMAP_READING_OPTIONS). answer: a letter, or a function returning one."""
    letter, err = _letter(answer, UMAP_READING_OPTIONS)
    if err:
        return _say(False, err)
    return _say(letter == "B", _UMAP_READING_FEEDBACK[letter])
