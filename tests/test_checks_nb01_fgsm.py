"""Notebook 01's checks (FGSM, the worst case of a linear score): the correct answer and its variants pass; each
typical wrong answer is rejected with a message that names that mistake."""
import pytest
import torch
import torch.nn.functional as F

from clead_lite import attacks
from clead_lite.exercises import check_fgsm, check_linear_perturbation


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def rejected(check, fn, phrases, capsys):
    ok, out = verdict(check, fn, capsys)
    assert ok is False and "❌" in out and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    return out


def _grad(model, x, y, loss=F.cross_entropy):
    x = x.clone().detach().requires_grad_(True)
    return torch.autograd.grad(loss(model(x), y), x)[0]


def fgsm_ok(model, x, y, eps):
    return (x + eps * _grad(model, x, y).sign()).clamp(0, 1).detach()


def fgsm_with_backward(model, x, y, eps):  # also right; leaves .grad on the parameters (a note, not an error)
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_sum(model, x, y, eps):            # the sum has the same gradient sign as the mean
    return (x + eps * _grad(model, x, y, lambda z, t: F.cross_entropy(z, t, reduction="sum")).sign()).clamp(0, 1)


def fgsm_abs(model, x, y, eps):            # grad / |grad| is the sign wherever grad != 0
    g = _grad(model, x, y)
    return torch.clamp(x + eps * g / g.abs().clamp_min(1e-30), min=0.0, max=1.0)


def fgsm_inplace_copy(model, x, y, eps):   # in place, but on a copy
    x_adv = x.clone()
    x_adv += eps * _grad(model, x, y).sign()
    return x_adv.clamp_(0, 1)


def fgsm_log_softmax(model, x, y, eps):
    return (x + eps * _grad(model, x, y, lambda z, t: F.nll_loss(F.log_softmax(z, 1), t)).sign()).clamp(0, 1)


def fgsm_no_requires_grad(model, x, y, eps):
    loss = F.cross_entropy(model(x), y)
    grad, = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1)


def fgsm_grad_none(model, x, y, eps):
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1)


def fgsm_not_detached(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1)


def fgsm_train_mode_restored(model, x, y, eps):
    model.train()
    out = fgsm_ok(model, x, y, eps)
    model.eval()
    return out


def fgsm_crash(model, x, y, eps):
    return x.view(-1) @ torch.ones(3)


def fgsm_stub(model, x, y, eps):
    raise NotImplementedError("Exercise 1: write FGSM")


def fgsm_train_mode(model, x, y, eps):
    model.train()
    return fgsm_ok(model, x, y, eps)


def fgsm_inplace(model, x, y, eps):
    x += eps * _grad(model, x, y).sign()
    return x.clamp_(0, 1)


def fgsm_predicted(model, x, y, eps):
    with torch.no_grad():
        pred = model(x).argmax(1)
    return fgsm_ok(model, x, pred, eps)


def step(scale=1.0, const=None, sign=1.0, use_sign=True, clip=True, loss=F.cross_entropy):
    def fn(model, x, y, eps):
        g = _grad(model, x, y, loss)
        d = g.sign() if use_sign else g
        out = x + sign * (const if const is not None else scale * eps) * d
        return out.clamp(0, 1) if clip else out
    return fn


FGSM_WRONG = [
    ("no clip", step(clip=False), ["forgot to clip to [0, 1]"]),
    ("value not sign", step(use_sign=False), ["gradient's VALUE, not its SIGN"]),
    ("descent", step(sign=-1.0), ["against the gradient", "DEScent"]),
    ("hard-coded 0.3", step(const=0.3), ["hard-coded", "0.3", "eps = 0.1 and for eps = 0.25"]),
    ("hard-coded 0.1", step(const=0.1), ["hard-coded", "eps = 0.1 and for eps = 0.25"]),
    ("2 eps", step(scale=2.0), ["2 x eps", "leaves the eps ball"]),
    ("eps / 2", step(scale=0.5), ["0.5 x eps"]),
    ("softmax before CE", step(loss=lambda z, t: F.cross_entropy(z.softmax(1), t)), ["softmax before F.cross_entropy"]),
    ("nll on logits", step(loss=F.nll_loss), ["F.nll_loss on the raw logits"]),
    ("predicted labels", fgsm_predicted, ["model's own predictions"]),
    ("no requires_grad", fgsm_no_requires_grad, ["requires_grad=True", "x.clone().detach().requires_grad_(True)"]),
    ("x.grad is None", fgsm_grad_none, ["x.grad is None", "requires_grad=True"]),
    ("not detached", fgsm_not_detached, ["still attached to the autograd graph", "detach"]),
    ("train mode", fgsm_train_mode, ["changed the model's mode"]),
    ("train mode gradient", fgsm_train_mode_restored, ["train mode while computing the gradient"]),
    ("x changed in place", fgsm_inplace, ["changed the input x in place"]),
    ("model never called", lambda m, x, y, eps: (x + eps).clamp(0, 1), ["never called the model"]),
    ("nothing moved", lambda m, x, y, eps: m(x) is None or x.clone(), ["nothing moved"]),
    ("wrong shape", lambda m, x, y, eps: fgsm_ok(m, x, y, eps)[0], ["must have the shape of the input"]),
    ("crash", fgsm_crash, ["raised RuntimeError"]),
    ("stub", fgsm_stub, ["not implemented yet", "Exercise 1: write FGSM"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in FGSM_WRONG], ids=[w[0] for w in FGSM_WRONG])
def test_fgsm_rejects_each_mistake_by_name(fn, phrases, capsys):
    out = rejected(check_fgsm, fn, phrases, capsys)
    if "requires_grad" in " ".join(phrases):
        assert "One of the differentiated" not in out.split("PyTorch said")[0], "plain words first, not internals"


def test_fgsm_messages_do_not_blame_the_sign_for_other_mistakes(capsys):
    for _, fn, _ in FGSM_WRONG:
        out = verdict(check_fgsm, fn, capsys)[1]
        if "VALUE, not its SIGN" in out:
            assert fn.__qualname__.startswith("step"), out


FGSM_RIGHT = [
    ("reference", fgsm_ok), ("library", attacks.fgsm), ("backward + x.grad", fgsm_with_backward),
    ("sum reduction", fgsm_sum), ("grad / |grad|", fgsm_abs), ("in place on a copy", fgsm_inplace_copy),
    ("nll of log_softmax", fgsm_log_softmax),
]


@pytest.mark.parametrize("fn", [r[1] for r in FGSM_RIGHT], ids=[r[0] for r in FGSM_RIGHT])
def test_fgsm_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_fgsm, fn, capsys)
    assert ok and "✅" in out, out
    assert ("left gradients" in out) == (fn is fgsm_with_backward)


# ------------------------------------------------------------------------------------------------ linearity
LINEAR_WRONG = [
    ("opposite sign", lambda w, eps: -eps * w.sign(), ["DEcreases"]),
    ("L2 answer", lambda w, eps: eps * w / w.norm(), ["L2 ball"]),
    ("scaled w", lambda w, eps: eps * w / w.abs().max(), ["best possible is eps * |w|_1", "scaling w itself"]),
    ("values of w", lambda w, eps: eps * w, ["VALUES of w"]),
    ("sign without eps", lambda w, eps: w.sign(), ["without the factor eps"]),
    ("2 eps", lambda w, eps: 2 * eps * w.sign(), ["leaves the L-inf ball"]),
    ("positive only", lambda w, eps: eps * (w > 0).float(), ["only moved the coordinates with w_i > 0"]),
    ("all up", lambda w, eps: torch.full_like(w, eps), ["every coordinate up by eps"]),
    ("largest only", lambda w, eps: eps * w.sign() * (w.abs() == w.abs().max()), ["L1 ball"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in LINEAR_WRONG], ids=[w[0] for w in LINEAR_WRONG])
def test_linear_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_linear_perturbation, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [lambda w, eps: eps * w.sign(), lambda w, eps: torch.sign(w) * eps,
                                lambda w, eps: torch.where(w > 0, eps, -eps) * (w != 0)],
                         ids=["eps * sign", "sign * eps", "where"])
def test_linear_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_linear_perturbation, fn, capsys)
    assert ok and "eps * |w|_1" in out, out
