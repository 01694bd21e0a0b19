"""Notebook 02's checks (one PGD step, the projection onto the eps ball): the correct answer and its variants
pass; each typical wrong answer is rejected with a message that names that mistake."""
import pytest
import torch

from clead_lite.exercises import check_pgd_step, check_projection


def verdict(check, fn, capsys, *args):
    ok = check(fn, *args)
    return ok, capsys.readouterr().out


def rejected(check, fn, phrases, capsys, *args):
    ok, out = verdict(check, fn, capsys, *args)
    assert ok is False and "❌" in out and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    return out


def proj(t, x, eps):
    return torch.min(torch.max(t, x - eps), x + eps)


def step_ok(x_adv, grad, x, eps, alpha):
    return proj(x_adv + alpha * grad.sign(), x, eps).clamp(0, 1)


STEP_RIGHT = [
    ("reference", step_ok),
    ("clip first", lambda xa, g, x, eps, a: proj((xa + a * g.sign()).clamp(0, 1), x, eps)),
    ("tensor clamp", lambda xa, g, x, eps, a: torch.clamp(xa + a * g.sign(), min=x - eps, max=x + eps).clamp(0, 1)),
    ("delta form", lambda xa, g, x, eps, a: (x + (xa + a * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)),
    ("in place on a clone", lambda xa, g, x, eps, a: proj(xa.clone().add_(g.sign(), alpha=a), x, eps).clamp_(0, 1)),
    ("library-style bounds", lambda xa, g, x, eps, a: (xa + a * torch.sign(g)).clamp((x - eps).clamp(min=0),
                                                                                    (x + eps).clamp(max=1))),
]


@pytest.mark.parametrize("fn", [r[1] for r in STEP_RIGHT], ids=[r[0] for r in STEP_RIGHT])
def test_pgd_step_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_pgd_step, fn, capsys)
    assert ok, out


def inplace(xa, g, x, eps, a):
    xa.add_(a * g.sign())
    return proj(xa, x, eps).clamp(0, 1)


STEP_WRONG = [
    ("from x", lambda xa, g, x, eps, a: step_ok(x, g, x, eps, a), ["from the clean image x instead of the current"]),
    ("delta in [0, eps]", lambda xa, g, x, eps, a: (x + (xa + a * g.sign() - x).clamp(0, eps)).clamp(0, 1),
     ["clamped the perturbation to [0, eps]"]),
    ("image in [-eps, eps]", lambda xa, g, x, eps, a: (xa + a * g.sign()).clamp(-eps, eps).clamp(0, 1),
     ["clamped the image itself"]),
    ("image in [-eps, eps], no clip", lambda xa, g, x, eps, a: (xa + a * g.sign()).clamp(-eps, eps),
     ["clamped the image itself"]),
    ("no projection", lambda xa, g, x, eps, a: (xa + a * g.sign()).clamp(0, 1),
     ["did not project", "ORIGINAL image x"]),
    ("ball around x_adv", lambda xa, g, x, eps, a: step_ok(xa, g, xa, eps, a),
     ["did not project", "ball around the current x_adv"]),
    ("upper bound only", lambda xa, g, x, eps, a: torch.min(xa + a * g.sign(), x + eps).clamp(0, 1),
     ["only applied the upper bound"]),
    ("lower bound only", lambda xa, g, x, eps, a: torch.max(xa + a * g.sign(), x - eps).clamp(0, 1),
     ["only applied the lower bound"]),
    ("no clip", lambda xa, g, x, eps, a: proj(xa + a * g.sign(), x, eps), ["forgot to clip to [0, 1]"]),
    ("descent", lambda xa, g, x, eps, a: step_ok(xa, -g, x, eps, a), ["against the gradient"]),
    ("value not sign", lambda xa, g, x, eps, a: proj(xa + a * g, x, eps).clamp(0, 1), ["VALUE, not its SIGN"]),
    ("value, large", lambda xa, g, x, eps, a: proj(xa + a * 100 * g, x, eps).clamp(0, 1), ["VALUE, not its SIGN"]),
    ("eps as step", lambda xa, g, x, eps, a: step_ok(xa, g, x, eps, eps), ["stepped by eps = 0.1 instead of alpha"]),
    ("hard-coded step", lambda xa, g, x, eps, a: step_ok(xa, g, x, eps, 0.03), ["hard-coded the step size"]),
    ("grad / |grad|", lambda xa, g, x, eps, a: proj(xa + a * g / g.abs(), x, eps).clamp(0, 1), ["NaN", "grad.sign()"]),
    ("in place", inplace, ["in place"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in STEP_WRONG], ids=[w[0] for w in STEP_WRONG])
def test_pgd_step_rejects_each_mistake_by_name(fn, phrases, capsys):
    out = rejected(check_pgd_step, fn, phrases, capsys)
    if "VALUE" not in phrases[0]:
        assert "VALUE, not its SIGN" not in out


# ------------------------------------------------------------------------------------------------ projections
def l2_ok(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)


def l2_where(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return torch.where(norms > eps, delta * eps / norms.clamp_min(1e-12), delta)


L2_RIGHT = [("reference", l2_ok), ("where", l2_where),
            ("renorm", lambda d, eps: d.renorm(p=2, dim=0, maxnorm=eps)),
            ("min of 1 and ratio", lambda d, eps: d * torch.minimum(
                torch.ones(1), eps / (d.flatten(1).norm(dim=1) + 1e-12)).view(-1, 1, 1, 1))]


@pytest.mark.parametrize("fn", [r[1] for r in L2_RIGHT], ids=[r[0] for r in L2_RIGHT])
def test_l2_projection_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_projection, fn, capsys, "l2")
    assert ok and "leaves the others alone" in out, out


def l2_scaled(power=1, always=False, dims=None):
    def fn(delta, eps):
        norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) if dims is None else delta.norm(dim=dims, keepdim=True)
        factor = eps / norms.pow(power).clamp_min(1e-12)
        return delta * (factor if always else factor.clamp(max=1.0))
    return fn


def l2_div_zero(delta, eps):
    norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return delta * torch.clamp(eps / norms, max=1.0) * (norms / norms)


L2_WRONG = [
    ("one norm for the batch", lambda d, eps: d * min(1.0, eps / float(d.norm())), ["one norm for the whole batch"]),
    ("always rescale", l2_scaled(always=True), ["already inside the ball"]),
    ("division by zero", l2_div_zero, ["NaN", "delta = 0"]),
    ("squared norm", l2_scaled(power=2), ["squared norm"]),
    ("L-inf clamp", lambda d, eps: d.clamp(-eps, eps), ["L-inf projection"]),
    ("norm over channels only", l2_scaled(dims=1), ["leaves the ball", "ALL its pixels and channels"]),
    ("no projection", lambda d, eps: d, ["leaves the ball"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in L2_WRONG], ids=[w[0] for w in L2_WRONG])
def test_l2_projection_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_projection, fn, phrases, capsys, "l2")


LINF_WRONG = [
    ("[0, eps]", lambda d, eps: d.clamp(0, eps), ["[0, eps]"]),
    ("rescaled", lambda d, eps: d * eps / d.abs().max().clamp_min(1e-12), ["does not rescale"]),
    ("no projection", lambda d, eps: d, ["leaves the ball"]),
    ("sign lost", lambda d, eps: d.abs().clamp(max=eps), ["lost the sign"]),
    ("pushed to the surface", lambda d, eps: eps * d.sign(), ["pushed every pixel to +-eps"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in LINF_WRONG], ids=[w[0] for w in LINF_WRONG])
def test_linf_projection_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_projection, fn, phrases, capsys, "linf")


@pytest.mark.parametrize("fn", [lambda d, eps: d.clamp(-eps, eps), lambda d, eps: torch.max(torch.min(
    d, torch.tensor(eps)), torch.tensor(-eps))], ids=["clamp", "min/max"])
def test_linf_projection_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_projection, fn, capsys, "linf")
    assert ok and "clamps every pixel" in out, out


def test_projection_rejects_unknown_norm():
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        check_projection(l2_ok, "l1")
