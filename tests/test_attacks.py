"""Tests for clead_lite.attacks: equality with torchattacks 3.5.1 (an independent implementation) and with TRADES'
inner maximisation (pgd from a given start), measured properties (eps ball, [0, 1], loss goes up, PGD >= FGSM,
restarts never weaker, targeted, loss_fn hook), bookkeeping (model modes, no parameter grads, no_grad / autocast
callers, half-precision inputs, no value read off the CPU) and one test per bad input."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks

from clead_lite.attacks import ATTACKS, Attack, cw_l2, fgsm, make_attack, pgd, random_noise
from clead_lite.course.datasets import load_dataset
from clead_lite.models import SmallCNN, eval_mode

# A power-of-two batch: our attacks step on the gradient of the SUM of per-example losses (so a step does
# not depend on the batch size), torchattacks on the MEAN. Dividing by 64 is exact in floating point, so the
# two gradients agree bit for bit up to that factor and the comparisons test the algorithm, not rounding.
B = 64
EPS, ALPHA, STEPS = 0.3, 0.05, 10
EPS_L2, ALPHA_L2 = 2.0, 0.3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(width=8, feature_dim=32, proj_dim=16).eval()


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset("mnist5k", "test", n=B, seed=1)


@pytest.fixture(scope="module")
def noise_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(B, 1, 28, 28, generator=g), torch.randint(0, 10, (B,), generator=g)


@pytest.fixture(scope="module", params=["mnist", "noise"])
def batch(request, mnist, noise_batch):
    return mnist if request.param == "mnist" else noise_batch


def per_example_ce(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


class Shifted(nn.Module):
    """model(x) + shift: the same predictions, CE and CW objective, other logit values."""

    def __init__(self, inner: nn.Module, shift: float):
        super().__init__()
        self.inner, self.shift = inner, shift
        self.num_classes, self.in_channels, self.image_size = 10, 1, 28

    def forward(self, x):
        return self.inner(x) + self.shift


# ---------------------------------------------------------------------------------------------------------
# Equality with torchattacks

def test_fgsm_equals_torchattacks(model, batch):
    x, y = batch
    assert torch.equal(fgsm(model, x, y, EPS), torchattacks.FGSM(model, eps=EPS)(x, y))


def test_pgd_linf_equals_torchattacks(model, batch):
    x, y = batch
    ref = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)(x, y)
    assert max_diff(pgd(model, x, y, EPS, ALPHA, STEPS, random_start=False), ref) <= 1e-5


def test_pgd_l2_equals_torchattacks(model, batch):
    x, y = batch
    ref = torchattacks.PGDL2(model, eps=EPS_L2, alpha=ALPHA_L2, steps=STEPS, random_start=False)(x, y)
    ours = pgd(model, x, y, EPS_L2, ALPHA_L2, STEPS, norm="l2", random_start=False)
    assert max_diff(ours, ref) <= 1e-5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_equals_torchattacks_with_same_seed(model, mnist, norm):
    # Without a generator we draw from the global RNG in the same order as torchattacks.
    x, y = mnist
    eps, alpha = (EPS, ALPHA) if norm == "linf" else (EPS_L2, ALPHA_L2)
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    torch.manual_seed(7)
    ref = cls(model, eps=eps, alpha=alpha, steps=5)(x, y)
    torch.manual_seed(7)
    assert max_diff(pgd(model, x, y, eps, alpha, 5, norm=norm), ref) <= 1e-5


def test_targeted_pgd_equals_torchattacks(model, mnist):
    x, y = mnist
    target = (y + 1) % 10
    atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)
    atk.set_mode_targeted_by_label(quiet=True)
    ours = pgd(model, x, target, EPS, ALPHA, STEPS, random_start=False, targeted=True)
    assert max_diff(ours, atk(x, target)) <= 1e-5


CW_CLOSE = [dict(c=1.0, kappa=0.0, steps=50, lr=0.01),   # the C-LEAD / torchattacks defaults
            dict(c=1.0, kappa=0.0, steps=50, lr=0.5)]    # the cost rises: both abort early (after 6 steps)


@pytest.mark.parametrize("settings", CW_CLOSE, ids=["defaults", "early-abort"])
def test_cw_close_to_torchattacks(model, mnist, settings):
    # Tolerance 1e-5 (max abs pixel difference). The algorithms are the same (tanh space, Adam, the
    # smallest-L2 successful example, the early abort); only atanh is computed differently (torch.atanh vs
    # torchattacks' 0.5 * log((1 + z) / (1 - z))), which moves the start by float32 rounding (~1e-7). Adam's
    # first step is about lr * sign(grad), so with larger c * lr such a difference can flip the sign of a
    # near-zero gradient component in a few examples; the next test removes it and asks for equality.
    # The logits are shifted by +100: torchattacks' f masks the true class by multiplying with the one-hot,
    # which equals max_{i != y} Z_i only when all logits are positive; ours masks with -inf.
    x, y = mnist
    x, y = x[:32], y[:32]
    shifted = Shifted(model, 100.0)
    ref = torchattacks.CW(shifted, **settings)(x, y)
    ours = cw_l2(shifted, x, y, **settings)
    assert max_diff(ours, ref) <= 1e-5
    assert (ours != x).flatten(1).any(1).float().mean() > 0.5  # the comparison is not vacuous


@pytest.mark.parametrize("settings", [dict(c=5.0, kappa=0.0, steps=30, lr=0.1),
                                      dict(c=2.0, kappa=1.0, steps=20, lr=0.05)], ids=["c5", "kappa1"])
def test_cw_identical_to_torchattacks_with_its_atanh(model, mnist, settings, monkeypatch):
    x, y = mnist
    x, y = x[:32], y[:32]
    shifted = Shifted(model, 100.0)
    ref = torchattacks.CW(shifted, **settings)(x, y)
    monkeypatch.setattr(torch, "atanh", lambda z: 0.5 * torch.log((1 + z) / (1 - z)))
    assert torch.equal(cw_l2(shifted, x, y, **settings), ref)


def test_cw_is_invariant_to_a_logit_shift(model, mnist):
    # f = max(Z_y - max_{i != y} Z_i, -kappa) does not change when every logit moves by the same amount.
    x, y = mnist
    x, y = x[:16], y[:16]
    up = cw_l2(Shifted(model, 50.0), x, y, steps=20, lr=0.05)
    down = cw_l2(Shifted(model, -50.0), x, y, steps=20, lr=0.05)
    assert max_diff(up, down) <= 1e-3


# ---------------------------------------------------------------------------------------------------------
# Properties

BALL_CASES = {
    "fgsm": (lambda m, x, y: fgsm(m, x, y, EPS), "linf", EPS),
    "pgd-linf": (lambda m, x, y: pgd(m, x, y, EPS, ALPHA, STEPS), "linf", EPS),
    "pgd-linf-restarts": (lambda m, x, y: pgd(m, x, y, EPS, ALPHA, 3, restarts=2), "linf", EPS),
    "pgd-l2": (lambda m, x, y: pgd(m, x, y, EPS_L2, ALPHA_L2, STEPS, norm="l2"), "l2", EPS_L2),
    "noise-linf": (lambda m, x, y: random_noise(m, x, y, EPS), "linf", EPS),
    "noise-l2": (lambda m, x, y: random_noise(m, x, y, EPS_L2, norm="l2"), "l2", EPS_L2),
}


@pytest.mark.parametrize("case", list(BALL_CASES))
def test_inside_eps_ball_and_unit_box(model, batch, case):
    attack, norm, eps = BALL_CASES[case]
    x, y = batch
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps * (1 + 1e-5)
    assert delta.abs().max() > 0  # the attack did move


@pytest.mark.parametrize("attack", [
    lambda m, x, y: fgsm(m, x, y, 0.0),
    lambda m, x, y: pgd(m, x, y, 0.0, ALPHA, STEPS),
    lambda m, x, y: pgd(m, x, y, 0.0, ALPHA_L2, STEPS, norm="l2"),
    lambda m, x, y: random_noise(m, x, y, 0.0),
    lambda m, x, y: random_noise(m, x, y, 0.0, norm="l2"),
], ids=["fgsm", "pgd-linf", "pgd-l2", "noise-linf", "noise-l2"])
def test_eps_zero_returns_x(model, mnist, attack):
    x, y = mnist
    assert torch.equal(attack(model, x, y), x)


def test_attacks_raise_the_loss_and_pgd_beats_fgsm_and_noise(model, batch):
    x, y = batch
    eps = 0.1
    clean = per_example_ce(model, x, y).mean()
    x_noise = random_noise(model, x, y, eps, generator=torch.Generator().manual_seed(0))
    noise = per_example_ce(model, x_noise, y).mean()
    one_step = per_example_ce(model, fgsm(model, x, y, eps), y).mean()
    many = per_example_ce(model, pgd(model, x, y, eps, eps / 4, STEPS), y).mean()
    assert clean < one_step <= many
    assert noise - clean < 0.2 * (many - clean)  # random noise of the same size is much weaker


def test_l2_pgd_raises_the_loss(model, batch):
    x, y = batch
    x_adv = pgd(model, x, y, EPS_L2, ALPHA_L2, STEPS, norm="l2")
    assert per_example_ce(model, x_adv, y).mean() > per_example_ce(model, x, y).mean()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_restarts_never_weaker_than_a_single_run(model, noise_batch, norm):
    x, y = noise_batch
    eps, alpha = (0.05, 0.02) if norm == "linf" else (0.5, 0.2)
    single = pgd(model, x, y, eps, alpha, 3, norm=norm, generator=torch.Generator().manual_seed(3))
    multi = pgd(model, x, y, eps, alpha, 3, norm=norm, restarts=3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits_1, logits_3 = model(single), model(multi)
    fooled_1, fooled_3 = logits_1.argmax(1) != y, logits_3.argmax(1) != y
    loss_1 = F.cross_entropy(logits_1, y, reduction="none")
    loss_3 = F.cross_entropy(logits_3, y, reduction="none")
    assert (fooled_3 >= fooled_1).all()
    same = fooled_3 == fooled_1
    assert (loss_3[same] >= loss_1[same] - 1e-6).all()
    assert (loss_3 > loss_1 + 1e-6).any()  # the extra restarts found something


def test_generator_makes_runs_reproducible(model, mnist):
    x, y = mnist
    run = lambda seed: pgd(model, x, y, EPS, ALPHA, 2, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


@pytest.mark.parametrize("attack", [
    lambda m, x, t: fgsm(m, x, t, 0.1, targeted=True),
    lambda m, x, t: pgd(m, x, t, 0.1, 0.02, STEPS, targeted=True),
    lambda m, x, t: pgd(m, x, t, 1.5, 0.3, STEPS, norm="l2", targeted=True),
], ids=["fgsm", "pgd-linf", "pgd-l2"])
def test_targeted_raises_the_target_probability(model, mnist, attack):
    x, y = mnist
    target = (y + 3) % 10
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, target[:, None])
        after = model(attack(model, x, target)).softmax(1).gather(1, target[:, None])
    assert after.mean() > before.mean()
    assert (after > before).float().mean() > 0.9


def test_targeted_restarts_prefer_hitting_the_target(model, noise_batch):
    x, y = noise_batch
    target = (y + 1) % 10
    kwargs = dict(targeted=True, norm="linf")
    single = pgd(model, x, target, 0.05, 0.02, 3, generator=torch.Generator().manual_seed(1), **kwargs)
    multi = pgd(model, x, target, 0.05, 0.02, 3, restarts=3, generator=torch.Generator().manual_seed(1), **kwargs)
    with torch.no_grad():
        hit_1, hit_3 = model(single).argmax(1) == target, model(multi).argmax(1) == target
    assert (hit_3 >= hit_1).all()


def test_loss_fn_hook_is_used(model, mnist):
    # Attack the projection head: push the embedding of x_adv away from the clean embedding.
    x, y = mnist
    with torch.no_grad():
        z_clean = model.project(x)
    calls, modes = [], []

    def away_from_clean(m, x_adv, _y):
        calls.append(x_adv.shape[0])
        modes.append(m.training)
        return (m.project(x_adv) - z_clean).pow(2).sum(1)

    model.train()
    x_hook = pgd(model, x, y, EPS, ALPHA, STEPS, loss_fn=away_from_clean)
    assert model.training and modes and not any(modes)  # eval during the attack, train again afterwards
    model.eval()
    x_ce = pgd(model, x, y, EPS, ALPHA, STEPS)
    assert len(calls) == STEPS
    with torch.no_grad():
        moved_hook = (model.project(x_hook) - z_clean).norm(dim=1).mean()
        moved_ce = (model.project(x_ce) - z_clean).norm(dim=1).mean()
    assert moved_hook > 1.2 * moved_ce
    x_fgsm = fgsm(model, x, y, EPS, loss_fn=away_from_clean)
    assert len(calls) == STEPS + 1 and not torch.equal(x_fgsm, fgsm(model, x, y, EPS))


def test_loss_fn_with_restarts_keeps_the_highest_custom_loss(model, noise_batch):
    x, y = noise_batch
    with torch.no_grad():
        z_clean = model.project(x)

    def away(m, x_adv, _y):
        return (m.project(x_adv) - z_clean).pow(2).sum(1)

    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    single = pgd(model, x, y, 0.05, 0.02, 2, loss_fn=away, generator=gen())
    multi = pgd(model, x, y, 0.05, 0.02, 2, loss_fn=away, restarts=3, generator=gen())
    with torch.no_grad():
        f1, f3 = model(single).argmax(1) != y, model(multi).argmax(1) != y
        l1, l3 = away(model, single, y), away(model, multi, y)
    assert (f3 >= f1).all() and (l3[f3 == f1] >= l1[f3 == f1] - 1e-6).all()


def test_restarts_pick_the_worst_case_per_example(model, noise_batch):
    # Restart k draws the k-th random start from the generator, so four single runs on one generator
    # replay the four restarts. The objective here rewards a CORRECT prediction (-CE): the restart with the
    # highest objective is often one that does not fool the model, yet a restart that fools must win.
    x, y = noise_batch

    def minus_ce(m, x_adv, labels):
        return -F.cross_entropy(m(x_adv), labels, reduction="none")

    g = torch.Generator().manual_seed(8)
    runs = torch.stack([pgd(model, x, y, 0.2, 0.1, 2, loss_fn=minus_ce, generator=g) for _ in range(4)])
    multi = pgd(model, x, y, 0.2, 0.1, 2, loss_fn=minus_ce, restarts=4, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        fooled = torch.stack([model(r).argmax(1) != y for r in runs])           # (4, B)
        value = torch.stack([minus_ce(model, r, y) for r in runs])              # (4, B)
        fooled_multi, value_multi = model(multi).argmax(1) != y, minus_ce(model, multi, y)
    mixed = fooled.any(0) & ~fooled.all(0)
    assert mixed.sum() >= 5  # the case the rule is about occurs
    assert torch.equal(fooled_multi, fooled.any(0))
    best_value = torch.where(fooled | ~fooled.any(0), value, -torch.inf).amax(0)
    assert torch.allclose(value_multi, best_value)


def test_model_modes_restored_exactly(model, mnist):
    x, y = mnist
    model.train()
    model.conv.eval()  # a mixed state, e.g. a frozen encoder part
    before = {name: m.training for name, m in model.named_modules()}
    for attack in (lambda: fgsm(model, x, y, EPS), lambda: pgd(model, x, y, EPS, ALPHA, 2, restarts=2),
                   lambda: cw_l2(model, x[:8], y[:8], steps=2)):
        attack()
        assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()


def test_no_parameter_grads(model, mnist):
    x, y = mnist
    model.zero_grad(set_to_none=True)
    fgsm(model, x, y, EPS)
    pgd(model, x, y, EPS, ALPHA, 2, restarts=2)
    pgd(model, x, y, EPS_L2, ALPHA_L2, 2, norm="l2")
    cw_l2(model, x[:8], y[:8], steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_inputs_are_not_modified(model, mnist):
    x, y = mnist
    x_copy, y_copy = x.clone(), y.clone()
    pgd(model, x, y, EPS, ALPHA, 2, random_start=False)
    fgsm(model, x, y, EPS)
    cw_l2(model, x[:8], y[:8], steps=2)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)


def test_works_inside_no_grad(model, mnist):
    x, y = mnist
    outside = pgd(model, x, y, EPS, ALPHA, 3, random_start=False)
    with torch.no_grad():
        inside = pgd(model, x, y, EPS, ALPHA, 3, random_start=False)
        inside_fgsm = fgsm(model, x, y, EPS)
    assert torch.equal(inside, outside) and torch.equal(inside_fgsm, fgsm(model, x, y, EPS))


def test_works_under_autocast(model, mnist):
    x, y = mnist
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, y, EPS, ALPHA, STEPS)
        x_l2 = pgd(model, x, y, EPS_L2, ALPHA_L2, 3, norm="l2")
    assert x_adv.dtype == torch.float32 and x_l2.dtype == torch.float32
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_l2 - x).flatten(1).norm(dim=1).max() <= EPS_L2 * (1 + 1e-5)
    assert per_example_ce(model, x_adv, y).mean() > per_example_ce(model, x, y).mean()


HALF_CASES = {
    "pgd-linf": lambda m, x, y: pgd(m, x, y, 8 / 255, 2 / 255, 3, generator=torch.Generator().manual_seed(0)),
    "pgd-restarts": lambda m, x, y: pgd(m, x, y, 8 / 255, 8 / 255, 1, restarts=2,
                                        generator=torch.Generator().manual_seed(0)),
    "pgd-l2": lambda m, x, y: pgd(m, x, y, 0.5, 0.2, 3, norm="l2", generator=torch.Generator().manual_seed(0)),
    "fgsm": lambda m, x, y: fgsm(m, x, y, 8 / 255),
    "noise-linf": lambda m, x, y: random_noise(m, x, y, 8 / 255, generator=torch.Generator().manual_seed(0)),
    "noise-l2": lambda m, x, y: random_noise(m, x, y, 0.5, norm="l2", generator=torch.Generator().manual_seed(0)),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_attacked_and_returned_in_float32(model, mnist, dtype):
    # The decision: fp16 / bf16 images are attacked in float32 and x_adv comes back in float32 (cast back to half,
    # it could leave the eps ball by half a unit in the last place). float64 stays float64.
    x, y = mnist
    xh = (x[:16] * 0.98 + 0.01).to(dtype)
    for name, attack in HALF_CASES.items():
        x_adv = attack(model, xh, y[:16])
        assert x_adv.dtype == torch.float32, name
        assert torch.equal(x_adv, attack(model, xh.float(), y[:16])), name   # exactly the float32 attack
        delta = (x_adv - xh.float()).flatten(1)
        eps = 0.5 if name.endswith("l2") else 8 / 255
        bound = delta.norm(dim=1).max() if name.endswith("l2") else delta.abs().max()
        assert bound <= eps * (1 + 1e-6) and 0 < delta.abs().max(), name
        assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert HALF_CASES["pgd-linf"](model, x[:4].double(), y[:4]).dtype == torch.float64


def trades_reference(model, x, eps, alpha, steps, noise):
    """The body of TrainStep.trades_attack (clead_lite/train_step.py before issue 19), the TRADES authors' inner
    maximisation: from x + 0.001 * noise, signed steps on the summed KL(p(x) || p(x')), each projected by
    min(max(., x - eps), x + eps) and clamped to [0, 1]; the model in eval mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            with torch.no_grad():
                p_clean = F.softmax(model(x).float(), dim=1)
            x_adv = x.detach() + 0.001 * noise
            for _ in range(steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv).float(), dim=1), p_clean, reduction="sum")
                grad, = torch.autograd.grad(kl, x_adv)
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp_(0.0, 1.0)
    finally:
        for m, training in modes:
            m.training = training
    return x_adv.detach().clamp_(0.0, 1.0)


class BatchNormNet(nn.Module):
    """conv -> BatchNorm -> ReLU -> linear: eval mode matters (running statistics vs the batch's)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 13 * 13, 10))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("eps, alpha, steps, autocast", [(0.3, 0.05, 5, False), (8 / 255, 2 / 255, 10, False),
                                                         (0.1, 0.1, 1, False), (0.3, 0.05, 3, True)])
def test_pgd_from_a_given_start_is_trades_inner_maximisation(eps, alpha, steps, autocast):
    torch.manual_seed(0)
    model = BatchNormNet()
    with torch.no_grad():                 # running statistics unlike a batch's, so the mode shows
        model(torch.rand(64, 1, 28, 28) * 3)
    model.train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 28, 28, generator=g)
    x[:4] = x[:4].round()                 # pixels at 0 and 1: the [0, 1] clamp binds
    y = torch.randint(0, 10, (32,), generator=g)
    noise = torch.randn(x.shape, generator=g)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        expected = trades_reference(model, x, eps, alpha, steps, noise)
        with torch.no_grad(), eval_mode(model):
            p_clean = F.softmax(model(x).float(), dim=1)
        kl = lambda m, xa, ya: F.kl_div(F.log_softmax(m(xa).float(), dim=1), p_clean, reduction="none").sum(1)
        start = x + 0.001 * noise
        start_copy = start.clone()
        got = pgd(model, x, y, eps, alpha, steps, random_start=False, start=start, loss_fn=kl)
    assert torch.equal(got, expected)
    assert torch.equal(start, start_copy) and model.training     # start untouched, the mode restored
    assert (got - x).abs().max() <= eps + 1e-6 and not torch.equal(got, x)


def test_start_replaces_the_random_start(model, mnist):
    x, y = mnist
    start = (x + 0.1).clamp(0, 1)
    # random_start is ignored when a start is given: no draw, the same result either way
    a = pgd(model, x, y, EPS, ALPHA, 2, start=start, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, pgd(model, x, y, EPS, ALPHA, 2, start=start, random_start=False))
    # a start equal to x is the run without random start
    assert torch.equal(pgd(model, x, y, EPS, ALPHA, 2, start=x), pgd(model, x, y, EPS, ALPHA, 2, random_start=False))


def test_public_attacks_read_no_value_off_the_cpu():
    # On the meta device a tensor has a shape and no values: reading one (float(x.min()), .item(), a boolean
    # mask) raises. The attacks run there end to end, so off the CPU their checks and steps never wait for
    # the device (no GPU->CPU sync per call); only CW's early abort reads its cost (once per 10 % of the steps).
    torch.manual_seed(0)
    meta = SmallCNN(width=4, feature_dim=16, proj_dim=8).to("meta").eval()
    x, y = torch.empty(8, 1, 28, 28, device="meta"), torch.empty(8, dtype=torch.int64, device="meta")
    with pytest.raises(RuntimeError):
        float(x.min())
    custom = lambda m, xa, ya: F.cross_entropy(m(xa), ya, reduction="none")  # noqa: E731
    for out in (pgd(meta, x, y, EPS, ALPHA, 2), pgd(meta, x, y, EPS, ALPHA, 2, restarts=2, loss_fn=custom),
                pgd(meta, x, y, EPS_L2, ALPHA_L2, 2, norm="l2", generator=torch.Generator().manual_seed(0)),
                pgd(meta, x, y, EPS, ALPHA, 2, targeted=True, start=x), fgsm(meta, x, y, EPS),
                random_noise(meta, x, y, EPS), make_attack("pgd", eps=EPS, alpha=ALPHA, steps=1)(meta, x, y)):
        assert out.shape == x.shape and out.device.type == "meta"


def test_cw_returns_x_or_a_misclassified_example(model, mnist):
    x, y = mnist
    x_adv = cw_l2(model, x, y, c=5.0, steps=30, lr=0.05)
    changed = (x_adv != x).flatten(1).any(1)
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
        wrong_clean = model(x).argmax(1) != y
    assert changed.any() and wrong[changed].all()
    assert (wrong | ~changed).all() and (changed | wrong_clean | ~wrong).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_make_attack_binds_settings(model, mnist):
    x, y = mnist
    attack = make_attack("pgd", eps=EPS, alpha=ALPHA, steps=3, random_start=False)
    assert isinstance(attack, Attack) and repr(attack).startswith("pgd(eps=0.3")
    assert torch.equal(attack(model, x, y), pgd(model, x, y, EPS, ALPHA, 3, random_start=False))
    assert torch.equal(make_attack("fgsm", eps=EPS)(model, x, y), fgsm(model, x, y, EPS))
    assert set(ATTACKS) == {"fgsm", "pgd", "cw_l2", "random_noise"}
    assert make_attack("cw_l2", steps=2)(model, x[:4], y[:4]).shape == (4, 1, 28, 28)
    assert make_attack("random_noise", eps=0.1, norm="l2")(model, x, y).shape == x.shape


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: each error names the argument and the bad value

def _x():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _y():
    return torch.tensor([0, 1, 2, 3])


BAD = {
    "eps too large": (lambda m: pgd(m, _x(), _y(), 8, 0.01, 2), ValueError, r"eps must be in \[0, 1\], got 8"),
    "eps negative": (lambda m: fgsm(m, _x(), _y(), -0.1), ValueError, r"eps must be in \[0, 1\], got -0.1"),
    "eps not a number": (lambda m: fgsm(m, _x(), _y(), "0.3"), TypeError, r"eps must be a number.*'0.3'"),
    "eps nan": (lambda m: pgd(m, _x(), _y(), float("nan"), 0.1, 2), TypeError, r"eps must be a number.*nan"),
    "l2 eps negative": (lambda m: pgd(m, _x(), _y(), -1.0, 0.1, 2, norm="l2"), ValueError,
                        r"eps must be >= 0, got -1.0"),
    "noise eps too large": (lambda m: random_noise(m, _x(), _y(), 2.0), ValueError, r"eps must be in .*got 2.0"),
    "alpha zero": (lambda m: pgd(m, _x(), _y(), 0.3, 0, 2), ValueError, r"alpha must be > 0, got 0"),
    "alpha negative": (lambda m: pgd(m, _x(), _y(), 0.3, -0.01, 2), ValueError, r"alpha must be > 0, got -0.01"),
    "steps zero": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 0), ValueError, r"steps must be >= 1, got 0"),
    "steps float": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2.5), TypeError, r"steps must be an integer.*2.5"),
    "restarts zero": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, restarts=0), ValueError,
                      r"restarts must be >= 1, got 0"),
    "restarts without random start": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, restarts=3, random_start=False),
                                      ValueError, r"restarts=3 needs random_start=True"),
    "norm unknown": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, norm="l1"), ValueError,
                     r"unknown norm 'l1'; allowed: 'linf', 'l2'"),
    "noise norm unknown": (lambda m: random_noise(m, _x(), _y(), 0.3, norm="Linf"), ValueError,
                           r"unknown norm 'Linf'"),
    "random_start not bool": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, random_start=1), TypeError,
                              r"random_start must be True or False, got 1"),
    "targeted not bool": (lambda m: fgsm(m, _x(), _y(), 0.3, targeted="yes"), TypeError,
                          r"targeted must be True or False, got 'yes'"),
    "loss_fn not callable": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, loss_fn="ce"), TypeError,
                             r"loss_fn must be None or a callable.*got str"),
    "loss_fn wrong shape": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, loss_fn=lambda mm, xa, yy: mm(xa).sum()),
                            ValueError, r"loss_fn must return a per-example loss of shape \(4,\), got \(\)"),
    "generator wrong type": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, generator=0), TypeError,
                             r"generator must be None or a torch.Generator, got int"),
    "c zero": (lambda m: cw_l2(m, _x(), _y(), c=0), ValueError, r"c must be > 0, got 0"),
    "kappa negative": (lambda m: cw_l2(m, _x(), _y(), kappa=-1.0), ValueError, r"kappa must be >= 0, got -1.0"),
    "lr zero": (lambda m: cw_l2(m, _x(), _y(), lr=0.0), ValueError, r"lr must be > 0, got 0.0"),
    "cw steps zero": (lambda m: cw_l2(m, _x(), _y(), steps=0), ValueError, r"steps must be >= 1, got 0"),
    "model not a module": (lambda m: fgsm(lambda t: t, _x(), _y(), 0.3), TypeError,
                           r"model must be a torch.nn.Module, got function"),
    "x not a tensor": (lambda m: fgsm(m, _x().numpy(), _y(), 0.3), TypeError,
                       r"x must be a torch.Tensor, got ndarray"),
    "x wrong rank": (lambda m: fgsm(m, _x()[0], _y(), 0.3), ValueError,
                     r"x must have shape \(B, C, H, W\), got \(1, 28, 28\)"),
    "x above 1": (lambda m: fgsm(m, _x() * 255, _y(), 0.3), ValueError, r"x must lie in \[0, 1\], got values in"),
    "x normalised": (lambda m: pgd(m, _x() - 0.5, _y(), 0.3, 0.01, 2), ValueError,
                     r"x must lie in \[0, 1\], got values in \[-0\.\d+"),
    "x integer": (lambda m: fgsm(m, (_x() * 255).to(torch.uint8), _y(), 0.3), TypeError,
                  r"x must be a float tensor.*torch.uint8"),
    "x wrong channels": (lambda m: fgsm(m, _x().expand(4, 3, 28, 28), _y(), 0.3), ValueError,
                         r"x has 3 channels, the model expects 1"),
    "x wrong size": (lambda m: fgsm(m, torch.rand(4, 1, 32, 32), _y(), 0.3), ValueError,
                     r"x has 32x32 images, the model expects 28x28"),
    "x empty": (lambda m: pgd(m, _x()[:0], _y()[:0], 0.3, 0.01, 2), ValueError,
                r"x is an empty batch \(shape \(0, 1, 28, 28\)\)"),
    "y wrong dtype": (lambda m: fgsm(m, _x(), _y().int(), 0.3), TypeError,
                      r"y must have dtype torch.int64.*got torch.int32"),
    "y wrong shape": (lambda m: fgsm(m, _x(), _y()[:, None], 0.3), ValueError,
                      r"y must have shape \(B,\), got \(4, 1\)"),
    "y out of range": (lambda m: pgd(m, _x(), torch.tensor([0, 1, 2, 10]), 0.3, 0.01, 2), ValueError,
                       r"y must be in \[0, 9\], got values in \[0, 10\]"),
    "y negative": (lambda m: cw_l2(m, _x(), torch.tensor([0, -1, 2, 3])), ValueError,
                   r"y must be in \[0, 9\], got values in \[-1, 3\]"),
    "batch mismatch": (lambda m: pgd(m, _x(), _y()[:3], 0.3, 0.01, 2), ValueError,
                       r"x and y disagree on the batch size: x has 4, y has 3"),
    "start wrong shape": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, start=_x()[:2]), ValueError,
                          r"start must be a tensor of x's shape \(4, 1, 28, 28\), with restarts=1; "
                          r"got \(2, 1, 28, 28\)"),
    "start with restarts": (lambda m: pgd(m, _x(), _y(), 0.3, 0.01, 2, restarts=2, start=_x()), ValueError,
                            r"start must be .* with restarts=1; got \(4, 1, 28, 28\), restarts=2"),
    "y not a tensor": (lambda m: random_noise(m, _x(), [0, 1, 2, 3], 0.3), TypeError,
                       r"y must be a torch.Tensor.*got list"),
    "inference mode": (lambda m: _in_inference_mode(lambda: fgsm(m, _x(), _y(), 0.3)), RuntimeError,
                       r"outside torch.inference_mode"),
    "make_attack unknown name": (lambda m: make_attack("deepfool", eps=0.3), ValueError,
                                 r"unknown attack 'deepfool'; allowed: 'fgsm', 'pgd', 'cw_l2', 'random_noise'"),
    "make_attack unknown setting": (lambda m: make_attack("pgd", epsilon=0.3, alpha=0.1, steps=2), TypeError,
                                    r"pgd has no setting 'epsilon'; allowed: eps, alpha"),
    "make_attack missing setting": (lambda m: make_attack("pgd", eps=0.3), TypeError,
                                    r"pgd needs the setting\(s\) alpha, steps"),
    "make_attack bad value": (lambda m: make_attack("pgd", eps=0.3, alpha=0.1, steps=-2), ValueError,
                              r"steps must be >= 1, got -2"),
}


def _in_inference_mode(fn):
    with torch.inference_mode():
        return fn()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_a_clear_error(model, case):
    call, error, message = BAD[case]
    with pytest.raises(error, match=message):
        call(model)
