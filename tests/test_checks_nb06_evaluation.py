"""Notebook 06's checks (transfer accuracy, spot the flaw): the correct answer and its variants pass; each typical
wrong answer is rejected with a message that names that mistake."""
import pytest
import torch

from clead_lite.exercises import SPOT_THE_FLAW_OPTIONS, check_spot_the_flaw, check_transfer_eval
from clead_lite.exercises import nb06_evaluation as C


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def transfer(mistake=None):
    def fn(source, target, x, y, attack):
        if mistake == "no_grad":
            with torch.no_grad():
                x_adv = attack(source, x, y)
        else:
            crafted_on = target if mistake in ("white-box", "reversed") else source
            x_adv = attack(crafted_on, x, y)
        judge = source if mistake in ("source evaluated", "reversed") else target
        inputs = x if mistake == "clean" else x_adv
        with torch.no_grad():
            logits = judge(inputs)
            labels = target(x).argmax(1) if mistake == "predictions as labels" else y
            pred = logits.argmax(0) if mistake == "argmax dim 0" else logits.argmax(1)
            correct = (pred == labels).sum().item()
        if mistake == "count":
            return correct
        acc = correct / len(y)
        return {"error rate": 1 - acc, "percent": 100 * acc}.get(mistake, acc)
    return fn


TRANSFER_WRONG = [(m, transfer(m), [C.TRANSFER_MESSAGES[m]]) for m in C.TRANSFER_MESSAGES] + [
    ("attack under no_grad", transfer("no_grad"), ["torch.no_grad()", "needs gradients"]),
    ("argmax over dim 0", transfer("argmax dim 0"), ["wrong dimension", "dim=1"]),
    ("a tensor of accuracies", lambda s, t, x, y, a: torch.ones(3), ["one number"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in TRANSFER_WRONG], ids=[w[0] for w in TRANSFER_WRONG])
def test_transfer_rejects_each_mistake_by_name(fn, phrases, capsys):
    ok, out = verdict(check_transfer_eval, fn, capsys)
    assert ok is False and out.startswith("❌"), out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"


def transfer_mean(source, target, x, y, attack):
    x_adv = attack(source, x, y)
    with torch.no_grad():
        return (target(x_adv).argmax(dim=1) == y).float().mean()       # a 0-d tensor is a number too


def transfer_batched(source, target, x, y, attack):
    x_adv = attack(source, x, y)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 64):
            correct += int((target(x_adv[i:i + 64]).max(1).indices == y[i:i + 64]).sum())
    return correct / len(y)


@pytest.mark.parametrize("fn", [transfer(), transfer_mean, transfer_batched, C.transfer_accuracy],
                         ids=["sum / len", "mean tensor", "batched", "checks' reference"])
def test_transfer_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_transfer_eval, fn, capsys)
    assert ok and "weaker than white-box" in out, out


def test_transfer_scenario_separates_every_mistake():
    cands = C.transfer_candidates(*C._transfer_scenario())
    values = sorted(cands.values())
    assert min(b - a for a, b in zip(values, values[1:])) > 0.005, cands
    assert cands["white-box"] < cands["correct"] < cands["clean"]


# ----------------------------------------------------------------------------- multiple choice
def test_spot_the_flaw_every_wrong_letter_gets_its_own_explanation(capsys):
    messages = set()
    for letter in SPOT_THE_FLAW_OPTIONS:
        ok, out = verdict(check_spot_the_flaw, letter.lower(), capsys)
        assert ok == (letter == C.SPOT_THE_FLAW_ANSWER), (letter, out)
        assert len(out) > 80 and out.startswith("✅" if ok else "❌"), out
        messages.add(out)
    assert len(messages) == len(SPOT_THE_FLAW_OPTIONS)
    for wrong, phrase in [("E", "one letter"), (lambda: "A", "same predictions"), (lambda: None, "one letter")]:
        ok, out = verdict(check_spot_the_flaw, wrong, capsys)
        assert not ok and phrase in out, out

    def stub():
        raise NotImplementedError("Exercise 2: pick a letter")
    ok, out = verdict(check_spot_the_flaw, stub, capsys)
    assert not ok and "not implemented yet (Exercise 2: pick a letter)" in out


def test_spot_the_flaw_answer_is_not_given_away_by_position_or_length():
    from clead_lite.exercises.nb07_embeddings import UMAP_READING_ANSWER
    lengths = {k: len(v) for k, v in SPOT_THE_FLAW_OPTIONS.items()}
    assert C.SPOT_THE_FLAW_ANSWER != UMAP_READING_ANSWER, "the two questions' answers sit in different places"
    assert max(lengths.values()) <= 1.15 * min(lengths.values()), lengths
    assert lengths[C.SPOT_THE_FLAW_ANSWER] < max(lengths.values()) or len(set(lengths.values())) == 1
