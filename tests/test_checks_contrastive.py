"""Tests for clead_lite.checks.contrastive: every check accepts a correct solution and rejects each typical
mistake with its specific message. The student solutions below are written the way a student would write
them (loops, masks, cross-entropy), independently of the check's own variant code."""
import math

import pytest
import torch
import torch.nn.functional as F

from clead_lite.checks import contrastive as C
from clead_lite.losses import info_nce, supcon


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


# ------------------------------------------------------------------------------------ InfoNCE
def nce_student(normalise=True, self_mask="-inf", keep_positive=True, anchor_negs=True, tau_pow=1,
                reduce="mean", inplace=False, detach_view=False, as_float=False):
    def fn(anchor, view, temperature=0.1):
        if inplace:
            anchor /= anchor.norm(dim=1, keepdim=True)
        a = F.normalize(anchor, dim=1) if normalise else anchor
        v = F.normalize(view, dim=1) if normalise else view
        if detach_view:
            v = v.detach()
        t = temperature ** tau_pow
        b = len(a)
        cross = a @ v.T / t
        if not keep_positive:
            cross = cross.masked_fill(torch.eye(b, dtype=torch.bool), float("-inf"))
        logits = [cross]
        if anchor_negs:
            same = a @ a.T / t
            if self_mask == "-inf":
                same = same.masked_fill(torch.eye(b, dtype=torch.bool), float("-inf"))
            elif self_mask == "0":
                same = same * (1 - torch.eye(b))
            logits.append(same)
        logits = torch.cat(logits, dim=1)
        pos = (a * v).sum(1) / t
        loss = torch.logsumexp(logits, dim=1) - pos
        out = loss.mean() if reduce == "mean" else loss.sum()
        return out.item() if as_float else out
    return fn


def nce_loop(anchor, view, temperature=0.1):
    """A loop-based correct solution (different code path from the vectorised one)."""
    a, v = F.normalize(anchor, dim=1), F.normalize(view, dim=1)
    terms = []
    for i in range(len(a)):
        pos = torch.exp(a[i] @ v[i] / temperature)
        neg = sum(torch.exp(a[i] @ a[j] / temperature) for j in range(len(a)) if j != i)
        neg = neg + sum(torch.exp(a[i] @ v[j] / temperature) for j in range(len(a)) if j != i)
        terms.append(-torch.log(pos / (pos + neg)))
    return torch.stack(terms).mean()


def test_info_nce_variant_defaults_equal_the_library():
    for anchor, view, tau in C._info_nce_cases():
        assert torch.allclose(C.info_nce_variant(anchor, view, tau), info_nce(anchor, view, temperature=tau),
                              atol=1e-6)


def test_info_nce_single_mistake_variants_are_distinguishable():
    """Every single mistake changes the value on the check's cases; otherwise its message could never show."""
    cases = C._info_nce_cases()
    ref = [info_nce(a, v, temperature=t) for a, v, t in cases]
    for names, values in C._variants(C.INFO_NCE_OPTIONS, lambda s: [C.info_nce_variant(a, v, t, **s)
                                                                     for a, v, t in cases], max_mistakes=1):
        assert not all(C._close(x, r) for x, r in zip(values, ref)), names


@pytest.mark.parametrize("fn", [nce_student(), nce_loop, lambda a, v, t: info_nce(a, v, temperature=t)])
def test_check_info_nce_accepts_correct_solutions(fn, capsys):
    ok, out = verdict(C.check_info_nce, fn, capsys)
    assert ok, out
    assert out.startswith("✅ Correct!")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(normalise=False), "forgot to normalise"),
    (dict(self_mask="keep"), "included the self-similarity"),
    (dict(self_mask="0"), "exp(0) = 1"),
    (dict(keep_positive=False), "positive must be included in the denominator"),
    (dict(anchor_negs=False), "other anchors"),
    (dict(tau_pow=2), "temperature applied twice"),
    (dict(tau_pow=0), "forgot the temperature"),
    (dict(tau_pow=-1), "multiplied by the temperature"),
    (dict(reduce="sum"), "summed over the batch"),
    (dict(normalise=False, tau_pow=2), "forgot to normalise"),
    (dict(inplace=True), "in place"),
    (dict(detach_view=True), "detach"),
    (dict(as_float=True), "not a torch.Tensor"),
])
def test_check_info_nce_names_each_mistake(kwargs, needle, capsys):
    ok, out = verdict(C.check_info_nce, nce_student(**kwargs), capsys)
    assert not ok
    assert needle in out, out


def test_check_info_nce_two_mistakes_are_both_named(capsys):
    ok, out = verdict(C.check_info_nce, nce_student(normalise=False, tau_pow=2), capsys)
    assert not ok and "normalise" in out and "twice" in out, out


def test_check_info_nce_hard_coded_temperature_sign_stub_and_unknown(capsys):
    ok, out = verdict(C.check_info_nce, lambda a, v, t: nce_student()(a, v, 0.1), capsys)
    assert not ok and "ignored the `temperature` argument" in out
    ok, out = verdict(C.check_info_nce, lambda a, v, t: -nce_student()(a, v, t), capsys)
    assert not ok and "wrong sign" in out

    def stub(a, v, t):
        raise NotImplementedError("Exercise 1: write InfoNCE")
    ok, out = verdict(C.check_info_nce, stub, capsys)
    assert not ok and "not implemented yet (Exercise 1: write InfoNCE)" in out and out.startswith("❌")
    ok, out = verdict(C.check_info_nce, lambda a, v, t: nce_student()(a, v, t) * 1.37, capsys)
    assert not ok and "should be" in out          # no known mistake: the generic message with the numbers
    ok, out = verdict(C.check_info_nce, lambda a, v, t: torch.stack([nce_student()(a, v, t)] * 2), capsys)
    assert not ok and "one number" in out


# ------------------------------------------------------------------------------------ SupCon
def supcon_loop(z, labels, temperature=0.1):
    """A loop-based correct L_out."""
    u = F.normalize(z, dim=1)
    n = len(u)
    losses = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        den = torch.logsumexp(torch.stack([u[i] @ u[a] / temperature for a in range(n) if a != i]), 0)
        losses.append(-torch.stack([u[i] @ u[p] / temperature - den for p in pos]).mean())
    return torch.stack(losses).mean()


def supcon_student(normalise=True, self_den=True, self_pos=False, l_in=False, all_pairs=False, tau_pow=1,
                   drop_singletons=True):
    def fn(z, labels, temperature=0.1):
        u = F.normalize(z, dim=1) if normalise else z
        n = len(u)
        eye = torch.eye(n, dtype=torch.bool)
        sim = u @ u.T / temperature ** tau_pow
        if self_den:
            sim = sim.masked_fill(eye, float("-inf"))
        log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
        pos = labels[:, None] == labels[None, :]
        if not self_pos:
            pos = pos & ~eye
        n_pos = pos.sum(1)
        keep = n_pos > 0 if drop_singletons else torch.ones(n, dtype=torch.bool)
        if l_in:
            return -torch.log((log_prob.exp() * pos).sum(1)[keep] / n_pos[keep]).mean()
        pos_log = torch.where(pos, log_prob, torch.zeros_like(log_prob))
        if all_pairs:
            return -pos_log.sum() / n_pos.sum()
        return (-pos_log.sum(1)[keep] / n_pos[keep]).mean()
    return fn


def test_supcon_variant_defaults_equal_the_library():
    for z, y, tau in C._supcon_cases():
        assert torch.allclose(C.supcon_variant(z, y, tau), supcon(z, y, temperature=tau), atol=1e-6)


@pytest.mark.parametrize("fn", [supcon_student(), supcon_loop, lambda z, y, t: supcon(z, y, temperature=t)])
def test_check_supcon_accepts_correct_solutions(fn, capsys):
    ok, out = verdict(C.check_supcon, fn, capsys)
    assert ok, out


@pytest.mark.parametrize("kwargs, needle", [
    (dict(normalise=False), "forgot to normalise"),
    (dict(self_den=False), "kept the anchor itself in the denominator"),
    (dict(self_den=False, self_pos=True), "its own positive"),
    (dict(l_in=True), "L_in"),
    (dict(all_pairs=True), "all positive pairs"),
    (dict(tau_pow=2), "temperature applied twice"),
    (dict(drop_singletons=False), "nan"),
])
def test_check_supcon_names_each_mistake(kwargs, needle, capsys):
    ok, out = verdict(C.check_supcon, supcon_student(**kwargs), capsys)
    assert not ok
    assert needle in out, out


def test_check_supcon_singletons_counted_as_zero_are_rejected(capsys):
    def zeros_for_singletons(z, labels, temperature=0.1):
        full = supcon_student()(z, labels, temperature)
        n_single = sum(int((labels == c).sum() == 1) for c in labels.unique())
        return full * (len(labels) - n_single) / len(labels)
    ok, out = verdict(C.check_supcon, zeros_for_singletons, capsys)
    assert not ok and "left out" in out, out


# ------------------------------------------------------------------------------ C-LEAD online step
def clead_student(ce_clean=False, lam_on_ce=False, features=False, swap=False, detach_clean=False, no_con=False):
    def fn(model, x, x_adv, y, lam, temperature):
        logits_adv, z_adv = model.forward_all(x_adv)
        logits_clean, z_clean = model.forward_all(x)
        if features:
            z_clean, z_adv = model.features(x), model.features(x_adv)
        if detach_clean:
            z_clean = z_clean.detach()
        ce = F.cross_entropy(logits_clean if ce_clean else logits_adv, y)
        con = info_nce(z_adv, z_clean, temperature=temperature) if swap else \
            info_nce(z_clean, z_adv, temperature=temperature)
        if no_con:
            return ce
        return lam * ce + con if lam_on_ce else ce + lam * con
    return fn


def clead_manual(model, x, x_adv, y, lam, temperature):
    """Correct, written without forward_all and with a hand-made InfoNCE."""
    ce = F.cross_entropy(model(x_adv), y)
    return ce + lam * nce_loop(model.project(x), model.project(x_adv), temperature)


@pytest.mark.parametrize("fn", [clead_student(), clead_manual])
def test_check_clead_step_accepts_correct_solutions(fn, capsys):
    ok, out = verdict(C.check_clead_step, fn, capsys)
    assert ok, out
    assert "lam = 0" in out


@pytest.mark.parametrize("kwargs, needle", [
    (dict(ce_clean=True), "adversarial inputs x_adv"),
    (dict(lam_on_ce=True), "lambda weighs the contrastive term"),
    (dict(features=True), "projection head"),
    (dict(swap=True), "swapped the roles"),
    (dict(detach_clean=True), "gradient of"),
    (dict(no_con=True), "no contrastive term"),
])
def test_check_clead_step_names_each_mistake(kwargs, needle, capsys):
    ok, out = verdict(C.check_clead_step, clead_student(**kwargs), capsys)
    assert not ok
    assert needle in out, out


def test_check_clead_step_rejects_ignored_temperature(capsys):
    fn = lambda m, x, xa, y, lam, t: clead_student()(m, x, xa, y, lam, 0.1)  # noqa: E731
    ok, out = verdict(C.check_clead_step, fn, capsys)
    assert not ok and "temperature" in out, out


# ------------------------------------------------------------------------ contrastive attack loss
def attack_student(query_adv=False, negate=False, mean=False, normalise=True, detach=False, no_self_mask=False):
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
        logits = torch.cat([u @ v.T, same], dim=1) / temperature
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


def test_attack_loss_reference_equals_the_training_loop_and_info_nce():
    from clead_lite.training import contrastive_attack_loss
    for z_clean, z_adv, tau in C._info_nce_cases():
        ref = C.info_nce_variant(z_clean, z_adv, tau, reduction="none")
        assert torch.allclose(ref, contrastive_attack_loss(z_clean, z_adv, tau), atol=1e-5)
        assert torch.allclose(ref.mean(), info_nce(z_clean, z_adv, temperature=tau), atol=1e-6)


@pytest.mark.parametrize("fn", [attack_student(), attack_loop])
def test_check_contrastive_attack_loss_accepts_correct(fn, capsys):
    ok, out = verdict(C.check_contrastive_attack_loss, fn, capsys)
    assert ok, out


@pytest.mark.parametrize("kwargs, needle", [
    (dict(query_adv=True), "the clean embedding is the query"),
    (dict(negate=True), "PGD *maximises*"),
    (dict(mean=True), "one loss per example"),
    (dict(normalise=False), "forgot to normalise"),
    (dict(no_self_mask=True), "self-similarity"),
    (dict(detach=True), "no gradient with respect to z_adv"),
])
def test_check_contrastive_attack_loss_names_each_mistake(kwargs, needle, capsys):
    ok, out = verdict(C.check_contrastive_attack_loss, attack_student(**kwargs), capsys)
    assert not ok
    assert needle in out, out


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


# ----------------------------------------------------------------------------- transfer accuracy
def transfer_student(mistake=None):
    def fn(source, target, x, y, attack):
        crafted_on = target if mistake in ("white-box", "reversed") else source
        x_adv = attack(crafted_on, x, y)
        judge = source if mistake in ("source evaluated", "reversed") else target
        inputs = x if mistake == "clean" else x_adv
        with torch.no_grad():
            correct = (judge(inputs).argmax(1) == y).sum().item()
        if mistake == "count":
            return correct
        acc = correct / len(y)
        return {"error rate": 1 - acc, "percent": 100 * acc}.get(mistake, acc)
    return fn


def test_transfer_scenario_separates_every_mistake():
    cands = C.transfer_candidates(*C._transfer_scenario())
    values = sorted(cands.values())
    assert min(b - a for a, b in zip(values, values[1:])) > 0.02, cands
    assert cands["white-box"] < cands["correct"] < cands["clean"]


def test_check_transfer_eval_accepts_correct(capsys):
    ok, out = verdict(C.check_transfer_eval, transfer_student(), capsys)
    assert ok and "weaker than white-box" in out, out


@pytest.mark.parametrize("mistake", list(C.TRANSFER_MESSAGES))
def test_check_transfer_eval_names_each_mistake(mistake, capsys):
    ok, out = verdict(C.check_transfer_eval, transfer_student(mistake), capsys)
    assert not ok
    assert C.TRANSFER_MESSAGES[mistake] in out, out


def test_check_transfer_eval_rejects_non_numbers(capsys):
    ok, out = verdict(C.check_transfer_eval, lambda s, t, x, y, a: torch.ones(3), capsys)
    assert not ok and "one number" in out


# --------------------------------------------------------------------------- separation metric
def sep_student(normalise=True, all_pairs=False, distance=False):
    def fn(z_clean, z_adv):
        a = F.normalize(z_clean, dim=1) if normalise else z_clean
        b = F.normalize(z_adv, dim=1) if normalise else z_adv
        cos = (a @ b.T).mean() if all_pairs else (a * b).sum(1).mean()
        return float(1 - cos if distance else cos)
    return fn


def test_check_separation_metric_accepts_correct(capsys):
    ok, out = verdict(C.check_separation_metric, sep_student(), capsys)
    assert ok, out
    ok, out = verdict(C.check_separation_metric, lambda a, b: F.cosine_similarity(a, b).mean(), capsys)
    assert ok, out


@pytest.mark.parametrize("kwargs, needle", [
    (dict(normalise=False), "raw dot products"),
    (dict(all_pairs=True), "its *own* adversarial version"),
    (dict(distance=True), "cosine distance"),
])
def test_check_separation_metric_names_each_mistake(kwargs, needle, capsys):
    ok, out = verdict(C.check_separation_metric, sep_student(**kwargs), capsys)
    assert not ok and needle in out, out


def test_check_separation_metric_rejects_per_example_output(capsys):
    ok, out = verdict(C.check_separation_metric, lambda a, b: F.cosine_similarity(a, b), capsys)
    assert not ok and "one number" in out


# ----------------------------------------------------------------------------- multiple choice
@pytest.mark.parametrize("check, options, right", [
    (C.check_spot_the_flaw, C.SPOT_THE_FLAW_OPTIONS, "B"),
    (C.check_umap_reading, C.UMAP_READING_OPTIONS, "B"),
])
def test_multiple_choice_checks(check, options, right, capsys):
    for letter in options:
        ok = check(letter.lower() if letter == right else letter)
        out = capsys.readouterr().out
        assert ok == (letter == right)
        assert len(out) > 60                          # a real explanation, not just "wrong"
    assert not check("E")
    assert "one letter" in capsys.readouterr().out
    assert check(lambda: right) and not check(lambda: "A" if right != "A" else "C")
    capsys.readouterr()

    def stub():
        raise NotImplementedError("Exercise 2: pick a letter")
    assert not check(stub)
    assert "not implemented yet (Exercise 2: pick a letter)" in capsys.readouterr().out


def test_checks_leave_no_gradients_on_student_inputs_and_are_quick_to_call():
    """Checks must not leave state behind: a second call gives the same verdict."""
    assert C.check_info_nce(nce_student()) and C.check_info_nce(nce_student())
    assert not math.isnan(C._info_nce_cases()[0][2])
