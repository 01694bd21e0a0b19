"""Checks for notebook 04's exercises: InfoNCE and SupCon from scratch.

Each check runs the student's loss on small fixed embeddings, compares it (value and gradients) with
`clead_lite.losses`, and when they differ, compares it with the typical mistakes (one or two at a time) to
say *which* mistake it is: "you forgot to normalise the embeddings", "temperature applied twice", ... The
mistake variants are written here, with the correct formula as one setting of their switches (the tests check
that this setting equals `clead_lite.losses`).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..losses import info_nce, supcon
from ._common import _allclose, _as_scalar_loss, _diagnose, _inputs_unchanged, _say, _try, _variants, exercise

__all__ = ["check_info_nce", "check_supcon"]

_close = _allclose
_call = _try


def scaled_temperature(tau: float, how: str) -> float:
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
                     softmax_dim: int = 1, target: str = "diagonal", query: str = "clean") -> torch.Tensor:
    """One InfoNCE term (anchor queries, view positives) with switches for the typical mistakes; the
    defaults are the correct loss, `losses.info_nce(anchor, view, temperature=tau)`. reduction 'none' gives
    the (B,) per-anchor losses; query 'adversarial' swaps the roles of anchor and view; softmax_dim 0 normalises
    down the columns; target 'first column' scores column 0 for every row (targets of zeros)."""
    if query == "adversarial":
        anchor, view = view, anchor
    a, v = (F.normalize(anchor, dim=1), F.normalize(view, dim=1)) if normalise else (anchor, view)
    t = scaled_temperature(tau, temperature)
    cross = a @ v.T / t                                   # (B, B): the diagonal holds the positives
    blocks = [_mask(cross, positive)]
    if anchor_negatives:
        blocks.append(_mask(a @ a.T / t, self_similarity))  # (B, B): the diagonal is the anchor itself
    logits = torch.cat(blocks, dim=1)
    numerator = cross.diagonal() if target == "diagonal" else logits[:, 0]
    if softmax_dim == 1:
        per_anchor = torch.logsumexp(logits, dim=1) - numerator
    else:                                                 # log_softmax(dim=0): each column normalised over rows
        per_anchor = torch.logsumexp(logits, dim=0)[:len(a)] - numerator
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
    "softmax_dim": (1, 0),
    "target": ("diagonal", "first column"),
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
    "softmax_dim=0": ("you took the (log-)softmax over dim=0, down the columns: each ROW i is anchor i's question "
                      "'which candidate is my positive?', so normalise over dim=1 (F.cross_entropy does this)."),
    "target=first column": ("your targets are all 0 (column 0 is the positive of every row): row i's positive sits "
                            "in column i, so the targets are torch.arange(B)."),
}
COSINE_INSTEAD = ("you returned (a function of) the cosine similarity of the positive pairs only: that is not "
                  "InfoNCE. InfoNCE is a softmax cross-entropy whose denominator also pushes every negative away; "
                  "the cosine alone has no negatives, and all embeddings collapsing to one point would minimise it.")


def _cosine_candidates(anchor: torch.Tensor, view: torch.Tensor, tau: float) -> list[torch.Tensor]:
    """What students return when they write 'the similarity of the positives' instead of InfoNCE."""
    cos = F.cosine_similarity(anchor, view, dim=1)
    return [-cos.mean(), 1 - cos.mean(), -cos.mean() / tau, cos.mean(), -cos.sum(), (1 - cos).sum()]


def info_nce_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
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


def _is_cosine(student: list[torch.Tensor], cases) -> bool:
    per_case = [_cosine_candidates(a, v, tau) for a, v, tau in cases]
    return any(all(_close(s, c[k]) for s, c in zip(student, per_case)) for k in range(len(per_case[0])))


def info_nce_student(anchor: torch.Tensor, view: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The reference for the exercise's signature: `losses.info_nce(anchor, view, temperature=temperature)`."""
    return info_nce(anchor, view, temperature=temperature)


@exercise("clead_lite.exercises.nb04_contrastive:info_nce_student")
def check_info_nce(student_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check `student_fn(anchor (B, D), view (B, D), temperature) -> scalar`, one InfoNCE term: anchor i is the
    query, view i its positive, the 2B - 2 other anchors and views the negatives (mean over anchors)."""
    cases = info_nce_cases()
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
    if _is_cosine(student, cases):
        return _say(False, COSINE_INSTEAD)
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
                   sign: str = "+", positives: str = "same label") -> torch.Tensor | None:
    """SupCon with switches for the typical mistakes; the defaults are `losses.supcon` (Khosla L_out).
    Returns None for settings that do not define a loss. (A log-softmax over dim=0 is no mistake here: the
    logits are symmetric and same-class anchors have as many positives, so the mean over anchors is equal.)"""
    u = F.normalize(z, dim=1) if normalise else z
    n = len(u)
    eye = torch.eye(n, dtype=torch.bool)
    logits = _mask(u @ u.T / scaled_temperature(tau, temperature), self_similarity)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = labels[:, None] == labels[None, :] if positives == "same label" else torch.ones(n, n, dtype=torch.bool)
    if not self_positive:
        pos = pos & ~eye
    elif self_similarity == "excluded":
        return None                                       # log p(i | i) = -inf: not a loss anyone reports
    n_pos = pos.sum(1)
    keep = n_pos > 0
    if form == "in":
        prob = log_prob.exp().masked_fill(~pos, 0.0).sum(1)
        per_anchor = -torch.log(prob[keep] / n_pos[keep])
    elif average == "all pairs":
        total = log_prob.masked_fill(~pos, 0.0).sum()
        return _reduce_sign(-total / n_pos.sum(), reduction, sign, int(keep.sum()))
    else:
        per_anchor = -log_prob.masked_fill(~pos, 0.0).sum(1)[keep] / n_pos[keep]
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
    "positives": ("same label", "all others"),
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
    "positives=all others": ("you treated every other sample as a positive (the labels are not used): the positives "
                             "of anchor i are the samples with the same label, labels[:, None] == labels[None, :]."),
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


@exercise("clead_lite.losses:supcon")
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
