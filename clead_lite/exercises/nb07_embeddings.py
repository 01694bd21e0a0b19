"""Checks for notebook 07's exercises: a separation metric and reading the UMAP map."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._common import _allclose, _diagnose, _letter, _say, _try, _variants, exercise

__all__ = ["check_separation_metric", "check_umap_reading", "UMAP_READING_OPTIONS"]

_close = _allclose
_call = _try


def separation_variant(z_clean: torch.Tensor, z_adv: torch.Tensor, normalise: str = "rows",
                       pairs: str = "matched", quantity: str = "cosine", reduction: str = "mean") -> torch.Tensor:
    """The mean clean/adversarial cosine similarity of matched pairs, with switches for typical mistakes."""
    if normalise == "rows":
        a, b = F.normalize(z_clean, dim=1), F.normalize(z_adv, dim=1)
    elif normalise == "columns":
        a, b = F.normalize(z_clean, dim=0), F.normalize(z_adv, dim=0)
    else:
        a, b = z_clean, z_adv
    if pairs == "per feature":                       # F.cosine_similarity(z_clean, z_adv, dim=0)
        sims = (F.normalize(z_clean, dim=0) * F.normalize(z_adv, dim=0)).sum(0)
    else:
        sims = (a * b).sum(1) if pairs == "matched" else (a @ b.T).flatten()
    if quantity == "distance":
        sims = 1 - sims
    elif quantity == "euclidean":
        diff = a - b if pairs != "all pairs" else (a[:, None] - b[None]).flatten(0, 1)
        sims = diff.norm(dim=1)
    return sims.mean() if reduction == "mean" else sims.sum()


SEPARATION_OPTIONS = {
    "normalise": ("rows", "none", "columns"),
    "pairs": ("matched", "all pairs", "per feature"),
    "quantity": ("cosine", "distance", "euclidean"),
    "reduction": ("mean", "sum"),
}
SEPARATION_MESSAGES = {
    "normalise=none": "you averaged raw dot products: normalise both embeddings first (cosine similarity).",
    "normalise=columns": ("you normalised over dim=0 (each feature across the batch); each embedding is a ROW: "
                          "F.normalize(z, dim=1)."),
    "pairs=all pairs": ("you averaged over all (clean i, adversarial j) pairs; compare each clean embedding with "
                        "its *own* adversarial version: the diagonal, (u_clean * u_adv).sum(1)."),
    "pairs=per feature": ("you computed the cosine along dim=0 (one value per feature, across the batch); the "
                          "cosine of a pair is along the features: F.cosine_similarity(z_clean, z_adv, dim=1)."),
    "quantity=distance": "you returned the cosine distance 1 - cos; return the cosine similarity itself.",
    "quantity=euclidean": "you returned a Euclidean distance; return the mean cosine similarity.",
    "reduction=sum": "you summed over the pairs; return the mean over the N pairs.",
}


def mean_pair_cosine(z_clean: torch.Tensor, z_adv: torch.Tensor) -> float:
    """The reference: mean over i of cos(z_clean[i], z_adv[i]); z_clean, z_adv: (N, D)."""
    return float(separation_variant(z_clean, z_adv))


@exercise("clead_lite.exercises.nb07_embeddings:mean_pair_cosine")
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
# The right answer is A; the options have similar lengths so that neither position nor length gives it away.
UMAP_READING_OPTIONS = {
    "A": ("The standard model's adversarial points land in other classes' clusters; metrics in the full embedding "
          "space, not the 2-D map, say how far."),
    "B": ("The gaps between the class clusters in the 2-D map measure how different the classes are, so we can read "
          "the robustness of a model off those gaps."),
    "C": ("If the clean and adversarial points of a model overlap in the 2-D map, the model must be robust, and no "
          "further metric or accuracy is needed."),
    "D": ("UMAP is fitted separately on the clean and on the adversarial embeddings, so the positions of these two "
          "sets of points cannot be compared."),
}
UMAP_READING_ANSWER = "A"
_UMAP_READING_FEEDBACK = {
    "A": ("the map shows *where* adversarial embeddings go (into other classes' neighbourhoods); the numbers "
          "come from the metrics computed in the full embedding space, because a 2-D map distorts distances."),
    "B": ("UMAP keeps neighbourhoods, not global distances: gaps between clusters in the map are not reliable "
          "measurements. Read neighbourhoods off the plot and numbers off the metrics."),
    "C": ("overlap in a 2-D map is suggestive, not proof: UMAP can draw points that are far apart in the embedding "
          "space next to each other, and robustness is about predictions, which the robust accuracy measures. "
          "Check the metrics and the accuracy."),
    "D": ("here UMAP is fitted once on the clean and adversarial embeddings *together* precisely so that their "
          "positions share one map and can be compared."),
}


def read_the_map() -> str:
    """The reference answer."""
    return UMAP_READING_ANSWER


@exercise("clead_lite.exercises.nb07_embeddings:read_the_map")
def check_umap_reading(answer) -> bool:
    """Check the letter chosen for the UMAP interpretation question of notebook 07 (options in
    UMAP_READING_OPTIONS). answer: a letter, or a function returning one."""
    letter, err = _letter(answer, UMAP_READING_OPTIONS)
    if err:
        return _say(False, err)
    return _say(letter == UMAP_READING_ANSWER, _UMAP_READING_FEEDBACK[letter])
