"""Notebook 03's checks (one PGD-AT step, early stopping): the correct answer and its variants pass; each typical
wrong answer is rejected with a message that names that mistake."""
import pytest
import torch
import torch.nn.functional as F

from clead_lite import attacks
from clead_lite.exercises import check_early_stopping, check_pgd_at_step


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def rejected(check, fn, phrases, capsys):
    ok, out = verdict(check, fn, capsys)
    assert ok is False and "❌" in out and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    return out


def at(craft="pgd", zero="before", step=True, mode="train", reduction="mean", backward=1, ret="item",
       train_on="adv"):
    """A PGD-AT step with switches for the typical mistakes; the defaults are right."""
    def fn(model, optimizer, x, y, eps, alpha, steps):
        if mode == "eval":
            model.eval()
        if craft == "pgd":
            x_adv = attacks.pgd(model, x, y, eps, alpha, steps)
        elif craft == "fgsm":
            x_adv = attacks.fgsm(model, x, y, eps)
        elif craft == "swapped":
            x_adv = attacks.pgd(model, x, y, alpha, eps, steps)
        elif craft == "one step":
            x_adv = attacks.pgd(model, x, y, eps, alpha, 1)
        elif craft == "half eps":
            x_adv = attacks.pgd(model, x, y, eps / 2, alpha, steps)
        elif craft == "other start":
            x_adv = attacks.pgd(model, x, y, eps, alpha, steps, generator=torch.Generator().manual_seed(99))
        elif craft == "no start":
            x_adv = attacks.pgd(model, x, y, eps, alpha, steps, random_start=False)
        if mode == "train":
            model.train()
        if zero == "before":
            optimizer.zero_grad()
        elif zero == "model":
            model.zero_grad()
        if train_on == "adv":
            loss = F.cross_entropy(model(x_adv), y, reduction=reduction)
        elif train_on == "clean":
            loss = F.cross_entropy(model(x), y)
        elif train_on == "half":
            loss = 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(x_adv), y)
        elif train_on == "cat":
            loss = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]))
        for _ in range(backward):
            loss.backward(retain_graph=True)
        if zero == "after":
            optimizer.zero_grad()
        if step:
            optimizer.step()
        if ret == "tensor":
            return loss
        if ret == "clean":
            with torch.no_grad():
                return F.cross_entropy(model(x), y).item()
        return loss.item()
    return fn


def own_pgd(model, optimizer, x, y, eps, alpha, steps, mode="train"):
    getattr(model, mode)()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def stub(*args):
    raise NotImplementedError("Exercise 1: PGD-AT")


AT_WRONG = [
    ("clean images", at(train_on="clean"), ["trained on the clean images"]),
    ("FGSM examples", at(craft="fgsm"), ["FGSM examples"]),
    ("half clean, half adversarial", at(train_on="half"), ["mixes clean and adversarial", "half clean"]),
    ("clean and adversarial in one batch", at(train_on="cat"), ["mixes clean and adversarial"]),
    ("eps and alpha swapped", at(craft="swapped"), ["swapped eps and alpha"]),
    ("smaller budget", at(craft="half eps"), ["stay within 0.1", "eps = 0.2"]),
    ("one attack step", at(craft="one step"), ["1 gradient step(s), not steps = 3"]),
    ("no zero_grad", at(zero="never"), ["forgot optimizer.zero_grad()"]),
    ("zero_grad after backward", at(zero="after"), ["zero_grad() AFTER loss.backward()"]),
    ("no step", at(step=False), ["never called optimizer.step()"]),
    ("no backward", at(backward=0), ["never called loss.backward()"]),
    ("backward twice", at(backward=2), ["backward() 2 times"]),
    ("summed loss", at(reduction="sum"), ["reduction='sum'"]),
    ("eval mode", at(mode="eval"), ["eval mode"]),
    ("attack in train mode", own_pgd, ["with the model in train mode"]),
    ("wrong loss returned", at(ret="clean"), ["you returned"]),
    ("stub", stub, ["not implemented yet", "Exercise 1: PGD-AT"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in AT_WRONG], ids=[w[0] for w in AT_WRONG])
def test_pgd_at_step_rejects_each_mistake_by_name(fn, phrases, capsys):
    out = rejected(check_pgd_at_step, fn, phrases, capsys)
    assert "trains on PGD examples" not in out


AT_RIGHT = [
    ("reference", at(), False), ("model.zero_grad()", at(zero="model"), False),
    ("returns the loss tensor", at(ret="tensor"), False), ("own random start", at(craft="other start"), True),
    ("no random start", at(craft="no start"), True),
    ("own PGD loop in eval mode", lambda *a: own_pgd(*a, mode="eval"), False),  # same draws as attacks.pgd ("train mode kept by the attack", at(mode="keep"), False),
]


@pytest.mark.parametrize("fn, other_start", [r[1:] for r in AT_RIGHT], ids=[r[0] for r in AT_RIGHT])
def test_pgd_at_step_accepts_correct_variants(fn, other_start, capsys):
    ok, out = verdict(check_pgd_at_step, fn, capsys)
    assert ok and "trains on PGD examples" in out, out
    assert ("another random start" in out) == other_start, out


# ------------------------------------------------------------------------------------------------ early stopping
EARLY_WRONG = [
    ("last epoch", lambda h: int(h["epoch"].iloc[-1]), ["last epoch"]),
    ("lowest training loss", lambda h: int(h.loc[h["loss"].idxmin(), "epoch"]), ["lowest training loss"]),
    ("training accuracy", lambda h: int(h.loc[h["acc"].idxmax(), "epoch"]), ["TRAINING batches"]),
    ("clean accuracy", lambda h: int(h.loc[h["val_clean_acc"].idxmax(), "epoch"]), ["CLEAN accuracy"]),
    ("row index", lambda h: int(h["val_pgd_acc"].idxmax()), ["row index"]),
    ("last of the ties", lambda h: int(h["epoch"][h["val_pgd_acc"] == h["val_pgd_acc"].max()].iloc[-1]),
     ["FIRST epoch"]),
    ("idxmin", lambda h: int(h.loc[h["val_pgd_acc"].idxmin(), "epoch"]), ["LOWEST held-out robust accuracy"]),
    ("the accuracy itself", lambda h: float(h["val_pgd_acc"].max()), ["returned an accuracy (0.44)"]),
    ("a string", lambda h: "four", ["as an int"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in EARLY_WRONG], ids=[w[0] for w in EARLY_WRONG])
def test_early_stopping_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_early_stopping, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [
    lambda h: int(h.loc[h["val_pgd_acc"].idxmax(), "epoch"]),
    lambda h: int(h.sort_values("val_pgd_acc", ascending=False, kind="stable")["epoch"].iloc[0]),
    lambda h: int(h["epoch"].iloc[int(h["val_pgd_acc"].to_numpy().argmax())]),
    lambda h: h["epoch"][h["val_pgd_acc"].idxmax()],
], ids=["loc idxmax", "stable sort", "numpy argmax", "numpy int"])
def test_early_stopping_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_early_stopping, fn, capsys)
    assert ok and "epoch 4" in out, out
