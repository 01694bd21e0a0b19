"""Notebook 07's checks (the separation metric, reading the map): the correct answer and its variants pass; each
typical wrong answer is rejected with a message that names that mistake."""
import pytest
import torch
import torch.nn.functional as F

from clead_lite.exercises import UMAP_READING_OPTIONS, check_separation_metric, check_umap_reading
from clead_lite.exercises import nb07_embeddings as C


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def sep(normalise=1, all_pairs=False, distance=False, reduce="mean", cos_dim=None):
    def fn(z_clean, z_adv):
        if cos_dim is not None:
            return F.cosine_similarity(z_clean, z_adv, dim=cos_dim).mean().item()
        a = F.normalize(z_clean, dim=normalise) if normalise is not None else z_clean
        b = F.normalize(z_adv, dim=normalise) if normalise is not None else z_adv
        cos = (a @ b.T).flatten() if all_pairs else (a * b).sum(1)
        cos = 1 - cos if distance else cos
        return float(cos.mean() if reduce == "mean" else cos.sum())
    return fn


def stub(z_clean, z_adv):
    raise NotImplementedError("Exercise 1: mean pair cosine")


SEP_WRONG = [
    ("raw dot products", sep(normalise=None), ["raw dot products"]),
    ("normalised over dim 0", sep(normalise=0), ["normalised over dim=0"]),
    ("all pairs", sep(all_pairs=True), ["its *own* adversarial version"]),
    ("cosine distance", sep(distance=True), ["cosine distance"]),
    ("euclidean", lambda a, b: (F.normalize(a, dim=1) - F.normalize(b, dim=1)).norm(dim=1).mean(),
     ["Euclidean distance"]),
    ("summed", sep(reduce="sum"), ["summed over the pairs"]),
    ("cosine along dim 0", sep(cos_dim=0), ["along dim=0"]),
    ("per-example output", lambda a, b: F.cosine_similarity(a, b), ["one number"]),
    ("stub", stub, ["not implemented yet (Exercise 1: mean pair cosine)"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in SEP_WRONG], ids=[w[0] for w in SEP_WRONG])
def test_separation_rejects_each_mistake_by_name(fn, phrases, capsys):
    ok, out = verdict(check_separation_metric, fn, capsys)
    assert ok is False and out.startswith("❌"), out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"


@pytest.mark.parametrize("fn", [sep(), lambda a, b: F.cosine_similarity(a, b).mean(),
                                lambda a, b: torch.stack([a[i] @ b[i] / (a[i].norm() * b[i].norm())
                                                          for i in range(len(a))]).mean().item(),
                                C.mean_pair_cosine], ids=["normalise + rowwise", "F.cosine_similarity", "loop",
                                                          "checks' reference"])
def test_separation_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_separation_metric, fn, capsys)
    assert ok, out


def test_umap_reading_every_wrong_letter_gets_its_own_explanation(capsys):
    messages = set()
    for letter in UMAP_READING_OPTIONS:
        ok, out = verdict(check_umap_reading, f" {letter} ", capsys)
        assert ok == (letter == C.UMAP_READING_ANSWER), (letter, out)
        assert len(out) > 80 and out.startswith("✅" if ok else "❌"), out
        messages.add(out)
    assert len(messages) == len(UMAP_READING_OPTIONS)
    assert "squeeze apart points together" not in C._UMAP_READING_FEEDBACK["C"]
    ok, out = verdict(check_umap_reading, "Z", capsys)
    assert not ok and "one letter" in out


def test_umap_reading_answer_is_not_given_away_by_length():
    lengths = {k: len(v) for k, v in UMAP_READING_OPTIONS.items()}
    assert max(lengths.values()) <= 1.15 * min(lengths.values()), lengths
    assert lengths[C.UMAP_READING_ANSWER] < max(lengths.values())
