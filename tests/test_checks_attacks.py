"""The exercise checks of notebooks 00-03 accept a correct solution and reject each typical mistake with
its specific message (the buggy variants below are what students write)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clead_lite import attacks
from clead_lite.checks import (check_early_stopping, check_fgsm, check_linear_perturbation,
                               check_normalisation_inside_model, check_pgd_at_step, check_pgd_step,
                               check_projection)


def run(check, fn, capsys, *args):
    ok = check(fn, *args)
    return ok, capsys.readouterr().out


def expect_fail(check, fn, capsys, *phrases, args=()):
    ok, out = run(check, fn, capsys, *args)
    assert ok is False, out
    assert "❌" in out and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in feedback:\n{out}"
    return out


# ------------------------------------------------------------------------------------------------ FGSM
def _grad(model, x, y):
    x = x.clone().detach().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]


def fgsm_ok(model, x, y, eps):
    return (x + eps * _grad(model, x, y).sign()).clamp(0, 1).detach()


def fgsm_with_backward(model, x, y, eps):  # also right; leaves .grad on the parameters (a note, not an error)
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_no_clip(model, x, y, eps):
    return (x + eps * _grad(model, x, y).sign()).detach()


def fgsm_value(model, x, y, eps):
    return (x + eps * _grad(model, x, y)).clamp(0, 1).detach()


def fgsm_descent(model, x, y, eps):
    return (x - eps * _grad(model, x, y).sign()).clamp(0, 1).detach()


def fgsm_big(model, x, y, eps):
    return (x + 2 * eps * _grad(model, x, y).sign()).clamp(0, 1).detach()


def fgsm_fixed_eps(model, x, y, eps):
    return (x + 0.1 * _grad(model, x, y).sign()).clamp(0, 1).detach()


def fgsm_train_mode(model, x, y, eps):
    model.train()
    return fgsm_ok(model, x, y, eps)


def fgsm_inplace(model, x, y, eps):
    x += eps * _grad(model, x, y).sign()
    return x.clamp_(0, 1)


def fgsm_no_model(model, x, y, eps):
    return (x + eps).clamp(0, 1)


def fgsm_identity(model, x, y, eps):
    model(x)
    return x.clone()


def fgsm_stub(model, x, y, eps):
    raise NotImplementedError("Exercise 1: write FGSM")


def fgsm_crash(model, x, y, eps):
    return x.view(-1) @ torch.ones(3)


def fgsm_wrong_shape(model, x, y, eps):
    return fgsm_ok(model, x, y, eps)[0]


def test_fgsm_accepts_reference_and_library(capsys):
    ok, out = run(check_fgsm, fgsm_ok, capsys)
    assert ok and "✅" in out and "note" not in out
    ok, out = run(check_fgsm, attacks.fgsm, capsys)
    assert ok, out
    ok, out = run(check_fgsm, fgsm_with_backward, capsys)
    assert ok and "left gradients" in out


@pytest.mark.parametrize("fn, phrases", [
    (fgsm_no_clip, ["forgot to clip to [0, 1]"]),
    (fgsm_value, ["gradient's VALUE, not its SIGN"]),
    (fgsm_descent, ["against the gradient", "DEScent"]),
    (fgsm_big, ["leaves the eps ball by 0.1", "eps = 0.1"]),
    (fgsm_fixed_eps, ["moved by 0.1 instead of 0.25"]),
    (fgsm_train_mode, ["changed the model's mode"]),
    (fgsm_inplace, ["changed the input x in place"]),
    (fgsm_no_model, ["never called the model"]),
    (fgsm_identity, ["nothing moved"]),
    (fgsm_stub, ["not implemented yet", "Exercise 1: write FGSM"]),
    (fgsm_crash, ["raised RuntimeError"]),
    (fgsm_wrong_shape, ["must have the shape of the input"]),
])
def test_fgsm_rejects_mistakes(fn, phrases, capsys):
    expect_fail(check_fgsm, fn, capsys, *phrases)


def test_fgsm_rejects_train_mode_gradient(capsys):
    def sneaky(model, x, y, eps):
        model.train()
        out = fgsm_ok(model, x, y, eps)
        model.eval()
        return out
    expect_fail(check_fgsm, sneaky, capsys, "train mode while computing the gradient")


# ------------------------------------------------------------------------------------------------ linearity
@pytest.mark.parametrize("fn, phrases, ok", [
    (lambda w, eps: eps * w.sign(), [], True),
    (lambda w, eps: -eps * w.sign(), ["DEcreases"], False),
    (lambda w, eps: eps * w / w.norm(), ["L2 ball"], False),
    (lambda w, eps: eps * w / w.abs().max(), ["best possible is eps * |w|_1", "scaling w itself"], False),
    (lambda w, eps: 2 * eps * w.sign(), ["leaves the L-inf ball"], False),
    (lambda w, eps: w.sign(), ["leaves the L-inf ball"], False),
])
def test_linear_perturbation(fn, phrases, ok, capsys):
    if ok:
        good, out = run(check_linear_perturbation, fn, capsys)
        assert good and "eps * |w|_1" in out
    else:
        expect_fail(check_linear_perturbation, fn, capsys, *phrases)


# ------------------------------------------------------------------------------------------------ normalisation
class NormOk(nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class NormRaw(NormOk):
    def forward(self, x):
        return self.net(x)


class NormTimes(NormOk):
    def forward(self, x):
        return self.net((x - self.mean) * self.std)


class NormOrder(NormOk):
    def forward(self, x):
        return self.net(x / self.std - self.mean)


class NormTwice(NormOk):
    def forward(self, x):
        x = (x - self.mean) / self.std
        return self.net((x - self.mean) / self.std)


class NormFlat(nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


class NormParam(NormOk):
    def __init__(self, net, mean, std):
        nn.Module.__init__(self)
        self.net = net
        self.mean = nn.Parameter(torch.tensor(mean).view(1, -1, 1, 1))
        self.std = nn.Parameter(torch.tensor(std).view(1, -1, 1, 1))


class NormPlain(NormOk):
    def __init__(self, net, mean, std):
        nn.Module.__init__(self)
        self.net = net
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)


class NormStub(NormOk):
    def forward(self, x):
        raise NotImplementedError("Exercise 0: normalise")


def test_normalisation_stub_gets_not_implemented_only(capsys):
    out = expect_fail(check_normalisation_inside_model, NormStub, capsys, "not implemented yet", "Exercise 0")
    assert "(1, C, 1, 1)" not in out


def test_normalisation_accepts_reference(capsys):
    ok, out = run(check_normalisation_inside_model, NormOk, capsys)
    assert ok and "pixel units" in out


@pytest.mark.parametrize("cls, phrases", [
    (NormRaw, ["raw pixels"]),
    (NormTimes, ["multiplied by std"]),
    (NormOrder, ["divided before subtracting"]),
    (NormTwice, ["normalised twice"]),
    (NormFlat, ["(1, C, 1, 1)"]),
    (NormParam, ["trainable parameters", "register_buffer"]),
    (NormPlain, ["plain tensor attributes", "register_buffer"]),
])
def test_normalisation_rejects_mistakes(cls, phrases, capsys):
    expect_fail(check_normalisation_inside_model, cls, capsys, *phrases)


# ------------------------------------------------------------------------------------------------ PGD step
def step_ok(x_adv, grad, x, eps, alpha):
    x_adv = x_adv + alpha * grad.sign()
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def step_clip_first(x_adv, grad, x, eps, alpha):  # the other order is also right
    x_adv = (x_adv + alpha * grad.sign()).clamp(0, 1)
    return torch.min(torch.max(x_adv, x - eps), x + eps)


def step_no_projection(x_adv, grad, x, eps, alpha):
    return (x_adv + alpha * grad.sign()).clamp(0, 1)


def step_project_around_x_adv(x_adv, grad, x, eps, alpha):
    new = x_adv + alpha * grad.sign()
    return torch.min(torch.max(new, x_adv - eps), x_adv + eps).clamp(0, 1)


def step_no_clip(x_adv, grad, x, eps, alpha):
    x_adv = x_adv + alpha * grad.sign()
    return torch.min(torch.max(x_adv, x - eps), x + eps)


def step_descent(x_adv, grad, x, eps, alpha):
    return step_ok(x_adv, -grad, x, eps, alpha)


def step_value(x_adv, grad, x, eps, alpha):
    x_adv = x_adv + alpha * grad
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def step_eps_size(x_adv, grad, x, eps, alpha):
    return step_ok(x_adv, grad, x, eps, eps)


def step_inplace(x_adv, grad, x, eps, alpha):
    x_adv.add_(alpha * grad.sign())
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def test_pgd_step_accepts(capsys):
    for fn in (step_ok, step_clip_first):
        ok, out = run(check_pgd_step, fn, capsys)
        assert ok, out


@pytest.mark.parametrize("fn, phrases", [
    (step_no_projection, ["leaves the eps ball", "ORIGINAL image x"]),
    (step_project_around_x_adv, ["leaves the eps ball"]),
    (step_no_clip, ["forgot to clip to [0, 1]"]),
    (step_descent, ["against the gradient"]),
    (step_value, ["VALUE, not its SIGN"]),
    (step_eps_size, ["instead of 0.03"]),
    (step_inplace, ["in place"]),
])
def test_pgd_step_rejects_mistakes(fn, phrases, capsys):
    expect_fail(check_pgd_step, fn, capsys, *phrases)


# ------------------------------------------------------------------------------------------------ projections
def l2_ok(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def l2_batch_norm(delta, eps):
    return delta * min(1.0, eps / float(delta.norm()))


def l2_always_scale(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * eps / norms.clamp_min(1e-12)


def l2_div_zero(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * torch.clamp(eps / norms, max=1.0) * (norms / norms)


def l2_as_linf(delta, eps):
    return delta.clamp(-eps, eps)


def l2_wrong_dims(delta, eps):
    norms = delta.norm(dim=1, keepdim=True)
    return delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def l2_no_projection(delta, eps):
    return delta


def test_projection_accepts(capsys):
    ok, out = run(check_projection, l2_ok, capsys, "l2")
    assert ok and "leaves the others alone" in out
    ok, out = run(check_projection, lambda d, eps: d.clamp(-eps, eps), capsys, "linf")
    assert ok and "clamps every pixel" in out


@pytest.mark.parametrize("fn, phrases", [
    (l2_batch_norm, ["one norm for the whole batch"]),
    (l2_always_scale, ["already inside the ball"]),
    (l2_div_zero, ["NaN", "delta = 0"]),
    (l2_as_linf, ["L-inf projection"]),
    (l2_wrong_dims, ["leaves the ball", "ALL its pixels and channels"]),
    (l2_no_projection, ["leaves the ball"]),
])
def test_l2_projection_rejects_mistakes(fn, phrases, capsys):
    expect_fail(check_projection, fn, capsys, *phrases, args=("l2",))


@pytest.mark.parametrize("fn, phrases", [
    (lambda d, eps: d.clamp(0, eps), ["[0, eps]"]),
    (lambda d, eps: d * eps / d.abs().max().clamp_min(1e-12), ["does not rescale"]),
    (lambda d, eps: d, ["leaves the ball"]),
])
def test_linf_projection_rejects_mistakes(fn, phrases, capsys):
    expect_fail(check_projection, fn, capsys, *phrases, args=("linf",))


def test_projection_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        check_projection(l2_ok, "l1")


# ------------------------------------------------------------------------------------------------ PGD-AT step
def at_ok(model, optimizer, x, y, eps, alpha, steps):
    x_adv = attacks.pgd(model, x, y, eps, alpha, steps)
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def at_other_start(model, optimizer, x, y, eps, alpha, steps):  # right, but its own random start
    g = torch.Generator().manual_seed(99)
    x_adv = attacks.pgd(model, x, y, eps, alpha, steps, generator=g)
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss


def at_clean(model, optimizer, x, y, eps, alpha, steps):
    attacks.pgd(model, x, y, eps, alpha, steps)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def at_no_zero_grad(model, optimizer, x, y, eps, alpha, steps):
    x_adv = attacks.pgd(model, x, y, eps, alpha, steps)
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def at_no_step(model, optimizer, x, y, eps, alpha, steps):
    x_adv = attacks.pgd(model, x, y, eps, alpha, steps)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    return loss.item()


def at_eval_mode(model, optimizer, x, y, eps, alpha, steps):
    model.eval()
    x_adv = attacks.pgd(model, x, y, eps, alpha, steps)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def at_wrong_loss(model, optimizer, x, y, eps, alpha, steps):
    at_ok(model, optimizer, x, y, eps, alpha, steps)
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item() * 0.5


def test_pgd_at_step_accepts(capsys):
    ok, out = run(check_pgd_at_step, at_ok, capsys)
    assert ok and "random start differs" not in out, out
    ok, out = run(check_pgd_at_step, at_other_start, capsys)
    assert ok and "random start differs" in out, out


@pytest.mark.parametrize("fn, phrases", [
    (at_clean, ["trained on the clean images"]),
    (at_no_zero_grad, ["forgot optimizer.zero_grad()"]),
    (at_no_step, ["did not change", "optimizer.step()"]),
    (at_eval_mode, ["eval mode"]),
    (at_wrong_loss, ["you returned"]),
    (lambda *a: (_ for _ in ()).throw(NotImplementedError("Exercise 6")), ["not implemented yet"]),
])
def test_pgd_at_step_rejects_mistakes(fn, phrases, capsys):
    expect_fail(check_pgd_at_step, fn, capsys, *phrases)


# ------------------------------------------------------------------------------------------------ early stopping
def test_early_stopping(capsys):
    ok, out = run(check_early_stopping, lambda h: int(h.loc[h["val_pgd_acc"].idxmax(), "epoch"]), capsys)
    assert ok and "epoch 4" in out
    cases = [
        (lambda h: int(h["epoch"].iloc[-1]), "last epoch"),
        (lambda h: int(h.loc[h["acc"].idxmax(), "epoch"]), "TRAINING batches"),
        (lambda h: int(h.loc[h["val_clean_acc"].idxmax(), "epoch"]), "CLEAN accuracy"),
        (lambda h: int(h["val_pgd_acc"].idxmax()), "row index"),
        (lambda h: int(h["epoch"][h["val_pgd_acc"] == h["val_pgd_acc"].max()].iloc[-1]), "FIRST epoch"),
        (lambda h: "four", "as an int"),
    ]
    for fn, phrase in cases:
        expect_fail(check_early_stopping, fn, capsys, phrase)
