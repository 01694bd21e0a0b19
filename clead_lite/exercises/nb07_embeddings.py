"""Checks for notebook 07's exercises: a separation metric and reading the UMAP map."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

import pandas as pd

from ._common import _allclose, _diagnose, _letter, _say, _try, _variants, exercise

__all__ = ["check_separation_metric", "check_umap_reading", "UMAP_READING_OPTIONS", "check_answer_questions", "show_answers"]

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


# ---------------------------------------------------------------- Exercise 3: the four questions
def answer_questions(table: pd.DataFrame) -> dict:
    """The reference answers of Exercise 3, read off the metrics table (rows (attack, model))."""
    pgd, noise = table.loc["pgd"], table.loc["noise"]
    return {1: bool((pgd["pair_cosine"] < noise["pair_cosine"]).all()),
            2: list(pgd.index[pgd["knn_accuracy"] >= 0.5]),
            3: bool(pgd.loc["C-LEAD online", "pair_cosine"] > pgd.loc["PGD-AT", "pair_cosine"]),
            4: bool(pgd.loc["C-LEAD faithful", "own_neighbour_fraction"] >= 0.5)}


@exercise("clead_lite.exercises.nb07_embeddings:answer_questions")
def check_answer_questions(answer_fn: Callable[[pd.DataFrame], dict]) -> bool:
    """Exercise 3 of notebook 07: run answer_fn on two made-up metrics tables whose answers differ and name the
    first wrong answer with a hint (answers typed in rather than read off the table are caught by table 2)."""
    names = ["standard", "PGD-AT", "C-LEAD online", "C-LEAD faithful"]
    def made_up(cos_pgd, cos_noise, knn, own, robust):   # one value per model, in the order of `names`
        rows = {("pgd", m): {"robust_accuracy": robust[i], "pair_cosine": cos_pgd[i], "knn_accuracy": knn[i],
                             "own_neighbour_fraction": own[i]} for i, m in enumerate(names)}
        rows.update({("noise", m): {"robust_accuracy": 0.9, "pair_cosine": cos_noise[i], "knn_accuracy": 0.95,
                                    "own_neighbour_fraction": 0.97} for i, m in enumerate(names)})
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["attack", "model"])
    cases = [(made_up([0.6, 0.96, 0.97, 0.8], [0.97, 0.99, 0.99, 0.96], [0.0, 0.75, 0.8, 0.2], [0.0, 0.9, 0.95, 0.3],
                      [0.0, 0.66, 0.70, 0.01]),
              {1: True, 2: ["PGD-AT", "C-LEAD online"], 3: True, 4: False}),
             (made_up([0.6, 0.95, 0.9, 0.97], [0.97, 0.98, 0.99, 0.95], [0.55, 0.4, 0.5, 0.4], [0.1, 0.8, 0.9, 0.7],
                      [0.1, 0.7, 0.6, 0.2]),
              {1: False, 2: ["standard", "C-LEAD online"], 3: False, 4: True})]
    hints = {1: "compare pair_cosine under PGD with pair_cosine under noise, model by model, and require every model",
             2: "keep the models whose knn_accuracy under PGD is at least 0.5 (not robust_accuracy)",
             3: "compare the two models' pair_cosine in the PGD rows, table.loc['pgd']",
             4: "read C-LEAD faithful's own_neighbour_fraction in the PGD rows and compare it with 0.5"}
    for case, (table, expected) in enumerate(cases, 1):
        got, err = _try(answer_fn, table.copy())
        if err:
            print("❌ " + err)
            return False
        if not isinstance(got, dict) or set(got) != {1, 2, 3, 4}:
            print(f"❌ return a dict with the keys 1, 2, 3 and 4, got {got!r}")
            return False
        for q in (1, 2, 3, 4):
            want, have = expected[q], got[q]
            same = sorted(map(str, have)) == sorted(want) if q == 2 else have is want or have == want
            if not same:
                print(f"❌ question {q}: on made-up table {case} the answer is {want!r}, yours {have!r}. Hint: {hints[q]}.")
                if case == 2 and answer_fn(cases[0][0].copy()) == cases[0][1]:
                    print("   (your answers were right on table 1: are they typed in rather than read off `table`?)")
                return False
    print("✅ Correct! all four answers follow the table. Your answers on the real table:")
    return True


def show_answers(answers: dict, table: pd.DataFrame, data, eps: float) -> None:
    """The answers on the real metrics table, each with the numbers it rests on (question 3 with its paired
    interval over the same images). data: the explorer's precomputed embeddings; eps: the attack's budget."""
    models = list(dict.fromkeys(name for name, _, _ in data.entries))   # the notebook's order of the models
    pgd, noise = table.loc["pgd"], table.loc["noise"]
    cos = ", ".join(f"{m} {pgd.loc[m, 'pair_cosine']:.2f} vs {noise.loc[m, 'pair_cosine']:.2f}" for m in models)
    print(f"1. {'yes' if answers[1] else 'no'}: pair_cosine under PGD vs noise: {cos}.")
    knn = ", ".join(f"{m} {pgd.loc[m, 'knn_accuracy']:.1%}" for m in models)
    print(f"2. {', '.join(answers[2]) or 'none'}: kNN accuracy of the adversarial embeddings: {knn}.")
    per_image = {m: F.cosine_similarity(data.entry(m, "pgd", eps)["z_clean"], data.entry(m, "pgd", eps)["z_adv"])
                 for m in ("C-LEAD online", "PGD-AT")}
    diff = per_image["C-LEAD online"] - per_image["PGD-AT"]           # paired: the same images (notebook 06)
    half = 1.96 * float(diff.std()) / len(diff) ** 0.5
    online, at = pgd.loc["C-LEAD online"], pgd.loc["PGD-AT"]
    ratio_agrees = (online["pair_distance_ratio"] < at["pair_distance_ratio"]) == answers[3]   # shorter steps?
    print(f"3. {'yes' if answers[3] else 'no'}: pair_cosine {online['pair_cosine']:.3f} (C-LEAD online) vs "
          f"{at['pair_cosine']:.3f} (PGD-AT), paired difference {float(diff.mean()):+.3f} ± {half:.3f} (95 % interval, "
          f"{len(diff)} images);\n   pair_distance_ratio {online['pair_distance_ratio']:.3f} vs "
          f"{at['pair_distance_ratio']:.3f} ({'agrees' if ratio_agrees else 'disagrees'}); "
          f"robust accuracy {online['robust_accuracy']:.1%} vs {at['robust_accuracy']:.1%}.")
    print(f"4. {'yes' if answers[4] else 'no'}: the nearest clean point of an adversarial embedding is its own image "
          f"for {pgd.loc['C-LEAD faithful', 'own_neighbour_fraction']:.1%} of them (PGD-AT "
          f"{pgd.loc['PGD-AT', 'own_neighbour_fraction']:.1%}).")
