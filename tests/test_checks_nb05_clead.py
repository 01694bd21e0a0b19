"""Notebook 05's checks (the C-LEAD online loss, the contrastive attack loss): the correct answer and its variants
pass; each typical wrong answer is rejected with a message that names that mistake."""
import pytest
import torch
import torch.nn.functional as F

from clead_lite.exercises import check_clead_step, check_contrastive_attack_loss
from clead_lite.exercises import nb05_clead as C
from clead_lite.losses import info_nce, supcon


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def rejected(check, fn, phrases, capsys):
    ok, out = verdict(check, fn, capsys)
    assert ok is False and out.startswith("❌") and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"
    return out


def nce_loop(anchor, view, temperature=0.1):
    a, v = F.normalize(anchor, dim=1), F.normalize(view, dim=1)
    terms = []
    for i in range(len(a)):
        pos = torch.exp(a[i] @ v[i] / temperature)
        neg = sum(torch.exp(a[i] @ a[j] / temperature) for j in range(len(a)) if j != i)
        neg = neg + sum(torch.exp(a[i] @ v[j] / temperature) for j in range(len(a)) if j != i)
        terms.append(-torch.log(pos / (pos + neg)))
    return torch.stack(terms).mean()


# ------------------------------------------------------------------------------ C-LEAD online step
def clead(ce_clean=False, lam_on_ce=False, features=False, swap=False, detach_clean=False, no_con=False,
          minus=False, kind="info_nce", tau=None, backward=False, eval_mode=False, symmetric=False):
    def fn(model, x, x_adv, y, lam, temperature):
        if eval_mode:
            model.eval()
        t = temperature if tau is None else tau
        logits_adv, z_adv = model.forward_all(x_adv)
        logits_clean, z_clean = model.forward_all(x)
        if features:
            z_clean, z_adv = model.features(x), model.features(x_adv)
        if detach_clean:
            z_clean = z_clean.detach()
        ce = F.cross_entropy(logits_clean if ce_clean else logits_adv, y)
        if kind == "supcon":
            con = supcon(torch.cat([z_clean, z_adv]), torch.cat([y, y]), temperature=t)
        elif kind == "cosine":
            con = -F.cosine_similarity(z_clean, z_adv).mean()
        elif kind == "1-cosine":
            con = (1 - F.cosine_similarity(z_clean, z_adv)).mean()
        else:
            con = info_nce(z_adv, z_clean, temperature=t) if swap else \
                info_nce(z_clean, z_adv, temperature=t, symmetric=symmetric)
        if no_con:
            loss = ce
        elif lam_on_ce:
            loss = lam * ce + con
        else:
            loss = ce - lam * con if minus else ce + lam * con
        if backward:
            loss.backward(retain_graph=True)
        return loss
    return fn


def clead_manual(model, x, x_adv, y, lam, temperature):
    """Correct, written without forward_all and with a hand-made InfoNCE."""
    return F.cross_entropy(model(x_adv), y) + lam * nce_loop(model.project(x), model.project(x_adv), temperature)


def clead_stub(*args):
    raise NotImplementedError("Exercise 1: C-LEAD loss")


CLEAD_WRONG = [
    ("CE on clean", clead(ce_clean=True), ["adversarial inputs x_adv"]),
    ("lambda on CE", clead(lam_on_ce=True), ["lambda weighs the contrastive term"]),
    ("features", clead(features=True), ["projection head"]),
    ("roles swapped", clead(swap=True), ["swapped the roles"]),
    ("symmetric NT-Xent", clead(symmetric=True), ["symmetric NT-Xent"]),
    ("clean branch detached", clead(detach_clean=True), ["gradient of"]),
    ("no contrastive term", clead(no_con=True), ["no contrastive term"]),
    ("minus sign", clead(minus=True), ["SUBTRACTED the contrastive term"]),
    ("SupCon with labels", clead(kind="supcon"), ["SupCon", "needs no labels"]),
    ("cosine instead of InfoNCE", clead(kind="cosine"), ["cosine similarity", "instead of InfoNCE"]),
    ("1 - cosine", clead(kind="1-cosine"), ["1 - cosine", "instead of InfoNCE"]),
    ("hard-coded temperature", clead(tau=0.1), ["temperature"]),
    ("backward inside", clead(backward=True), ["called backward()"]),
    ("eval mode", clead(eval_mode=True), ["eval mode"]),
    ("stub", clead_stub, ["not implemented yet (Exercise 1: C-LEAD loss)"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in CLEAD_WRONG], ids=[w[0] for w in CLEAD_WRONG])
def test_clead_step_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_clead_step, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [clead(), clead_manual, C.clead_online_loss],
                         ids=["forward_all", "manual InfoNCE", "checks' reference"])
def test_clead_step_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_clead_step, fn, capsys)
    assert ok and "lam = 0" in out, out


# ------------------------------------------------------------------------ contrastive attack loss
def attack(query_adv=False, negate=False, mean=False, normalise=True, detach=False, no_self_mask=False,
           tau_pow=1, onehot_trap=False):
    def fn(z_clean, z_adv, temperature=0.1):
        if detach:
            z_adv = z_adv.detach()
        if query_adv:
            z_clean, z_adv = z_adv, z_clean
        u = F.normalize(z_clean, dim=1) if normalise else z_clean
        v = F.normalize(z_adv, dim=1) if normalise else z_adv
        b = len(u)
        same = u @ u.T
        if not no_self_mask:
            same = same.masked_fill(torch.eye(b, dtype=torch.bool), float("-inf"))
        logits = torch.cat([u @ v.T, same], dim=1) / temperature ** tau_pow
        if onehot_trap:
            return -(F.log_softmax(logits, 1) * F.one_hot(torch.arange(b), 2 * b)).sum(1)
        loss = F.cross_entropy(logits, torch.arange(b), reduction="mean" if mean else "none")
        return -loss if negate else loss
    return fn


def attack_loop(z_clean, z_adv, temperature=0.1):
    u, v = F.normalize(z_clean, dim=1), F.normalize(z_adv, dim=1)
    out = []
    for i in range(len(u)):
        cands = [u[i] @ v[j] for j in range(len(u))] + [u[i] @ u[j] for j in range(len(u)) if j != i]
        s = torch.stack(cands) / temperature
        out.append(torch.logsumexp(s, 0) - s[i])
    return torch.stack(out)


ATTACK_WRONG = [
    ("adversarial query", attack(query_adv=True), ["the clean embedding is the query"]),
    ("negated", attack(negate=True), ["PGD *maximises*"]),
    ("mean", attack(mean=True), ["one loss per example"]),
    ("not normalised", attack(normalise=False), ["forgot to normalise"]),
    ("self-similarity kept", attack(no_self_mask=True), ["self-similarity"]),
    ("detached", attack(detach=True), ["no gradient with respect to z_adv"]),
    ("temperature twice", attack(tau_pow=2), ["temperature applied twice"]),
    ("-inf * 0 = nan", attack(onehot_trap=True), ["-inf * 0 = nan"]),
    ("cosine", lambda zc, za, t: -F.cosine_similarity(zc, za), ["cosine similarity of the positive pairs only"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in ATTACK_WRONG], ids=[w[0] for w in ATTACK_WRONG])
def test_contrastive_attack_loss_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_contrastive_attack_loss, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [attack(), attack_loop, C.contrastive_attack_loss],
                         ids=["cross-entropy none", "loop", "checks' reference"])
def test_contrastive_attack_loss_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_contrastive_attack_loss, fn, capsys)
    assert ok, out


def test_attack_loss_reference_equals_the_training_loop_and_info_nce():
    from clead_lite.losses import info_nce
    for z_clean, z_adv, tau in C.info_nce_cases():
        ref = C.info_nce_variant(z_clean, z_adv, tau, reduction="none")
        assert torch.allclose(ref, info_nce(z_clean, z_adv, temperature=tau, reduction="none"), atol=1e-5)
        assert torch.allclose(ref.mean(), info_nce(z_clean, z_adv, temperature=tau), atol=1e-6)


def test_contrastive_attack_loss_is_what_pgd_increases():
    """PGD maximising the reference (attacks.pgd with loss_fn) raises the contrastive loss far more than random
    sign noise of the same size, and lowers the clean/adversarial cosine similarity."""
    from clead_lite.attacks import pgd
    model = C._tiny_model(3)
    x, _, y = C._tiny_batch(4, b=6)
    eps = 0.1
    with torch.no_grad():
        z_clean = model.project(x)
    loss = lambda m, xa, ya: C.info_nce_variant(z_clean, m.project(xa), 0.5, reduction="none")  # noqa: E731
    x_adv = pgd(model, x, y, eps, alpha=0.025, steps=10, loss_fn=loss, generator=torch.Generator().manual_seed(0))
    noise = (x + eps * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    with torch.no_grad():
        before, after, random = (loss(model, xx, y).mean() for xx in (x, x_adv, noise))
        cos_adv = F.cosine_similarity(model.project(x_adv), z_clean).mean()
    assert after - before > 3 * (random - before).abs() and after > before + 0.1, (before, after, random)
    assert cos_adv < 0.95
