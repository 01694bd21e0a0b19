"""The effects the course teaches, asserted at smoke size: C-LEAD online's contrastive term is exactly
lambda * grad InfoNCE(clean, adversarial) at the configured temperature, and each clead_online option
changes the step the way it claims (SupCon positives, clean CE, the contrastive attack); restarts are never
weaker and sometimes stronger (targeted, custom loss); fp16 with a GradScaler scales, unscales and skips
steps with non-finite gradients (on the CPU: float16 autocast, which this torch supports on the CPU).

One optimiser step with lr 1, no momentum and no weight decay moves each weight by exactly minus its
gradient, so each test compares the step's update with a gradient computed here, independently of the
training module, on the same adversarial images (captured from the step)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from clead_lite import training as tr
from clead_lite.attacks import pgd
from clead_lite.course.runs import load_train_state, train_state
from clead_lite.losses import info_nce, supcon
from clead_lite.models import SmallCNN
from clead_lite.training import TrainConfig

ONE_STEP = dict(method="clead_online", lr=1.0, momentum=0.0, weight_decay=0.0, schedule="constant", eps=0.1,
                attack_steps=2, batch_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch(mnist5k_split):
    return mnist5k_split.x_train[:32], mnist5k_split.y_train[:32]


@pytest.fixture(scope="module")
def init() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(width=8, feature_dim=32, proj_dim=16)


def one_step(init, x, y, **changes):
    """(update = params before - after, the x_adv the step trained on, the loss_fn its attack used, terms)."""
    model = copy.deepcopy(init)
    step = tr.TrainStep(model, TrainConfig(**{**ONE_STEP, **changes}).resolved(), torch.device("cpu"), total_steps=1)
    seen = {}
    attack = step.attack

    def spy(xb, yb, loss_fn=None):
        seen["x_adv"], seen["loss_fn"] = attack(xb, yb, loss_fn), loss_fn
        return seen["x_adv"]

    step.attack = spy
    before = [p.detach().clone() for p in model.parameters()]
    step.train_mode()
    loss, _, terms = step.step(x, y)
    update = [b - p.detach() for b, p in zip(before, model.parameters())]
    return update, seen.get("x_adv"), seen.get("loss_fn"), terms, loss


def reference_grad(init, x, x_adv, y, lam, tau, clean_ce=False, supervised=False):
    """The gradient of CE(adv) [+ CE(clean), halved] + lam * InfoNCE / SupCon(clean, adv) at temperature tau."""
    m = copy.deepcopy(init).train()
    b = x.shape[0]
    logits, z = m.forward_all(torch.cat([x, x_adv]))
    ce = F.cross_entropy(logits[b:], y)
    if clean_ce:
        ce = 0.5 * (ce + F.cross_entropy(logits[:b], y))
    con = (supcon(z, torch.cat([y, y]), temperature=tau) if supervised
           else info_nce(z[:b], z[b:], temperature=tau))
    return list(torch.autograd.grad(ce + lam * con, list(m.parameters())))


def close(a, b, atol=2e-5) -> bool:
    return all(torch.allclose(p, q, atol=atol, rtol=1e-4) for p, q in zip(a, b))


def distance(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a, b))


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.5), dict(contrastive_weight=2.0),
                                     dict(supervised_contrastive=True), dict(clean_ce=True),
                                     dict(clean_ce=True, contrastive_weight=0.0)],
                         ids=["default", "temperature", "lambda", "supcon", "clean_ce", "clean_ce_lambda0"])
def test_the_step_is_the_gradient_of_the_loss_it_claims(init, batch, options):
    x, y = batch
    cfg = TrainConfig(**{**ONE_STEP, **options})
    update, x_adv, loss_fn, terms, _ = one_step(init, x, y, **options)
    assert loss_fn is None                                   # the CE attack
    expected = reference_grad(init, x, x_adv, y, cfg.contrastive_weight, cfg.temperature, cfg.clean_ce,
                              cfg.supervised_contrastive)
    assert close(update, expected), distance(update, expected)
    # ... and not the gradient of the loss without the option (each comparison can fail)
    plain = reference_grad(init, x, x_adv, y, 0.5, 0.1)
    if options:
        assert distance(update, plain) > 50 * distance(update, expected) + 1e-4, options
    assert ("contrastive" in terms) == (cfg.contrastive_weight > 0)


def test_contrastive_term_changes_the_step(init, batch):
    x, y = batch
    u0 = one_step(init, x, y, contrastive_weight=0.0)[0]
    u1 = one_step(init, x, y, contrastive_weight=0.5)[0]
    u2 = one_step(init, x, y, contrastive_weight=1.0)[0]
    assert distance(u0, u1) > 1e-3
    # the update is affine in lambda: the contrastive gradient is added, times lambda
    assert close([b - a for a, b in zip(u0, u1)], [(c - a) / 2 for a, c in zip(u0, u2)], atol=1e-4)


def test_contrastive_attack_crafts_the_view_against_info_nce(init, batch):
    x, y = batch
    _, x_ce, fn_ce, _, _ = one_step(init, x, y)
    _, x_con, fn_con, _, _ = one_step(init, x, y, attack_loss="contrastive")
    assert fn_ce is None and fn_con is not None and not torch.equal(x_ce, x_con)
    m = copy.deepcopy(init).eval()
    with torch.no_grad():
        z = m.project(x)
        con = lambda xa: info_nce(z, m.project(xa), temperature=0.1, reduction="none").mean().item()
        ce = lambda xa: F.cross_entropy(m(xa), y).item()
    assert con(x_con) > con(x_ce) and ce(x_ce) > ce(x_con)   # each attack raises its own objective most
    assert (x_con - x).abs().max() <= 0.1 + 1e-6


# ---------------------------------------------------------------------------------------------- restarts
@pytest.fixture(scope="module")
def noise():
    g = torch.Generator().manual_seed(2)
    return torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SmallCNN(width=8, feature_dim=32, proj_dim=16).eval()


def test_targeted_restarts_never_weaker_and_sometimes_stronger(net, noise):
    x, y = noise
    target = (y + 1) % 10
    run = lambda r: pgd(net, x, target, 0.05, 0.02, 3, targeted=True, restarts=r,
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (l1, h1), (l3, h3) = [(F.cross_entropy(net(a), target, reduction="none"), net(a).argmax(1) == target)
                              for a in (run(1), run(3))]
    assert (h3 >= h1).all()
    same = h3 == h1
    assert (l3[same] <= l1[same] + 1e-6).all()               # targeted: the target's loss never higher
    assert (l3 < l1 - 1e-6).any() or (h3 > h1).any()         # the extra restarts found something


def test_custom_loss_restarts_never_weaker_and_sometimes_stronger(net, noise):
    x, y = noise
    with torch.no_grad():
        z = net.project(x)
    away = lambda m, xa, _y: (m.project(xa) - z).pow(2).sum(1)
    run = lambda r: pgd(net, x, y, 0.05, 0.02, 2, loss_fn=away, restarts=r, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a1, a3 = run(1), run(3)
        f1, f3 = net(a1).argmax(1) != y, net(a3).argmax(1) != y
        l1, l3 = away(net, a1, y), away(net, a3, y)
    same = f3 == f1
    assert (f3 >= f1).all() and (l3[same] >= l1[same] - 1e-6).all()
    assert (l3[same] > l1[same] + 1e-6).any()


# ---------------------------------------------------------------------------------------------- fp16
def fp16_step(init, monkeypatch, **changes):
    monkeypatch.setattr(tr, "amp_dtype", lambda device, amp: torch.float16)   # where TrainStep reads it
    model = copy.deepcopy(init)
    step = tr.TrainStep(model, TrainConfig(**{**ONE_STEP, "amp": True, **changes}).resolved(), torch.device("cpu"),
                        total_steps=4)
    return model, step


def test_fp16_gradscaler_scales_unscales_and_skips_non_finite_steps(init, batch, monkeypatch):
    """On the CPU `amp_dtype` never picks float16 (CUDA without bf16 does); forced here, the step runs under
    float16 autocast with an enabled GradScaler: the update matches the fp32 one (so the loss was scaled AND
    the gradients unscaled), and a step with an inf loss changes no weight and halves the scale."""
    x, y = batch
    ref = one_step(init, x, y, method="standard")[0]
    model, step = fp16_step(init, monkeypatch, method="standard")
    assert step.amp_dtype == torch.float16 and step.scaler.is_enabled()
    before = [p.detach().clone() for p in model.parameters()]
    loss, _, _ = step.step(x, y)
    update = [b - p.detach() for b, p in zip(before, model.parameters())]
    cos = F.cosine_similarity(torch.cat([u.flatten() for u in update]), torch.cat([r.flatten() for r in ref]), dim=0)
    ratio = torch.cat([u.flatten() for u in update]).norm() / torch.cat([r.flatten() for r in ref]).norm()
    assert cos > 0.99 and 0.9 < ratio < 1.1, (float(cos), float(ratio))
    scale = step.scaler.get_scale()
    assert scale == 65536.0
    # a non-finite loss: the scaler skips the optimiser step and lowers the scale
    original = step.loss
    step.loss = lambda xb, yb: (lambda l, lg, t: (l * float("inf"), lg, t))(*original(xb, yb))
    before = [p.detach().clone() for p in model.parameters()]
    step.step(x, y)
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert step.scaler.get_scale() == scale / 2
    assert train_state(step)["scaler"]["scale"] == scale / 2    # saved with a checkpoint, for resume
    fresh = fp16_step(init, monkeypatch, method="standard")[1]
    load_train_state(fresh, train_state(step))
    assert fresh.scaler.get_scale() == scale / 2


def test_fp16_clead_online_step_is_finite(init, batch, monkeypatch):
    x, y = batch
    model, step = fp16_step(init, monkeypatch)
    loss, _, terms = step.step(x, y)
    assert math.isfinite(float(loss)) and math.isfinite(float(terms["contrastive"]))
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- eps warm-up
def test_eps_warmup_grows_the_training_perturbation(init, batch):
    """eps_warmup=0.5 over 10 steps: step k attacks with eps * (k + 1) / 5, the full eps from step 5 on."""
    x, y = batch
    step = tr.TrainStep(copy.deepcopy(init), TrainConfig(**{**ONE_STEP, "eps": 0.2, "eps_warmup": 0.5}).resolved(),
                        torch.device("cpu"), total_steps=10)
    sizes = []
    for k in (0, 2, 6):
        step.step_index = k
        sizes.append((step.attack(x, y) - x).abs().max().item())
    assert sizes[0] <= 0.2 / 5 + 1e-6 and sizes[1] <= 0.2 * 3 / 5 + 1e-6 and sizes[1] > 0.2 / 5 + 1e-3
    assert sizes[2] == pytest.approx(0.2, abs=1e-6)
