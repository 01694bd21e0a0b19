"""Notebook 04's checks (InfoNCE, SupCon): correct solutions written the way students write them (loops, masks,
cross-entropy) pass; each typical wrong answer is rejected with a message that names that mistake."""
import pytest
import torch
import torch.nn.functional as F

from clead_lite.exercises import check_info_nce, check_supcon
from clead_lite.exercises import nb04_contrastive as C
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


# ------------------------------------------------------------------------------------ InfoNCE
def nce(normalise=True, self_mask="-inf", keep_positive=True, anchor_negs=True, tau_pow=1, reduce="mean",
        inplace=False, detach_view=False, as_float=False, dim=1, targets="arange", onehot_trap=False, tau=None):
    def fn(anchor, view, temperature=0.1):
        t = (tau if tau is not None else temperature) ** tau_pow
        if inplace:
            anchor /= anchor.norm(dim=1, keepdim=True)
        a = F.normalize(anchor, dim=1) if normalise else anchor
        v = F.normalize(view, dim=1) if normalise else view
        if detach_view:
            v = v.detach()
        b = len(a)
        eye = torch.eye(b, dtype=torch.bool)
        cross = a @ v.T / t
        if not keep_positive:
            cross = cross.masked_fill(eye, float("-inf"))
        blocks = [cross]
        if anchor_negs:
            same = a @ a.T / t
            if self_mask == "-inf":
                same = same.masked_fill(eye, float("-inf"))
            elif self_mask == "0":
                same = same * (1 - torch.eye(b))
            blocks.append(same)
        logits = torch.cat(blocks, dim=1)
        target = torch.arange(b) if targets == "arange" else torch.zeros(b, dtype=torch.long)
        if onehot_trap:        # -(log_prob * one_hot).sum(1): -inf * 0 = nan on the masked diagonal
            log_prob = F.log_softmax(logits, dim=1)
            loss = -(log_prob * F.one_hot(target, logits.shape[1])).sum(1)
        elif dim == 1:
            loss = F.cross_entropy(logits, target, reduction="none")
        else:
            loss = -F.log_softmax(logits, dim=0)[torch.arange(b), target]
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


def nce_manual_norm(anchor, view, temperature=0.1):
    """Normalising by hand, logsumexp instead of cross_entropy."""
    a = anchor / anchor.norm(dim=1, keepdim=True)
    v = view / view.norm(dim=1, keepdim=True)
    same = (a @ a.T).masked_fill(torch.eye(len(a), dtype=torch.bool), float("-inf"))
    logits = torch.cat([a @ v.T, same], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - (a * v).sum(1) / temperature).mean()


def nce_no_positive_in_denominator(anchor, view, temperature=0.1):
    a, v = F.normalize(anchor, dim=1), F.normalize(view, dim=1)
    eye = torch.eye(len(a), dtype=torch.bool)
    negatives = torch.cat([(a @ v.T).masked_fill(eye, float("-inf")), (a @ a.T).masked_fill(eye, float("-inf"))], 1)
    return (torch.logsumexp(negatives / temperature, dim=1) - (a * v).sum(1) / temperature).mean()


def cosine_only(kind):
    def fn(anchor, view, temperature=0.1):
        cos = F.cosine_similarity(anchor, view, dim=1)
        return {"-cos": -cos.mean(), "1-cos": (1 - cos).mean(), "-cos/tau": -cos.mean() / temperature}[kind]
    return fn


def stub(*args):
    raise NotImplementedError("Exercise 1: write InfoNCE")


NCE_WRONG = [
    ("not normalised", nce(normalise=False), ["forgot to normalise"]),
    ("self-similarity kept", nce(self_mask="keep"), ["included the self-similarity"]),
    ("self-similarity set to 0", nce(self_mask="0"), ["exp(0) = 1"]),
    ("positive masked with -inf", nce(keep_positive=False), ["loss is inf", "mask the positive"]),
    ("positive not in the denominator", nce_no_positive_in_denominator,
     ["positive must be included in the denominator"]),
    ("no anchor negatives", nce(anchor_negs=False), ["other anchors"]),
    ("temperature twice", nce(tau_pow=2), ["temperature applied twice"]),
    ("no temperature", nce(tau_pow=0), ["forgot the temperature"]),
    ("multiplied by tau", nce(tau_pow=-1), ["multiplied by the temperature"]),
    ("hard-coded tau", nce(tau=0.1), ["ignored the `temperature` argument"]),
    ("summed", nce(reduce="sum"), ["summed over the batch"]),
    ("log_softmax(dim=0)", nce(dim=0), ["dim=0", "ROW i"]),
    ("targets all zero", nce(targets="zeros"), ["targets are all 0"]),
    ("-inf * 0 = nan", nce(onehot_trap=True), ["-inf * 0 = nan", "masked_fill"]),
    ("negative cosine", cosine_only("-cos"), ["cosine similarity of the positive pairs only"]),
    ("1 - cosine", cosine_only("1-cos"), ["cosine similarity of the positive pairs only"]),
    ("cosine over tau", cosine_only("-cos/tau"), ["cosine similarity of the positive pairs only"]),
    ("wrong sign", lambda a, v, t: -nce()(a, v, t), ["wrong sign"]),
    ("two mistakes", nce(normalise=False, tau_pow=2), ["forgot to normalise", "twice"]),
    ("in place", nce(inplace=True), ["in place"]),
    ("detached view", nce(detach_view=True), ["detach"]),
    ("a float", nce(as_float=True), ["not a torch.Tensor"]),
    ("not a scalar", lambda a, v, t: torch.stack([nce()(a, v, t)] * 2), ["one number"]),
    ("unknown", lambda a, v, t: nce()(a, v, t) * 1.37, ["should be"]),
    ("stub", stub, ["not implemented yet (Exercise 1: write InfoNCE)"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in NCE_WRONG], ids=[w[0] for w in NCE_WRONG])
def test_info_nce_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_info_nce, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [nce(), nce_loop, nce_manual_norm, lambda a, v, t: info_nce(a, v, temperature=t),
                                C.info_nce_student],
                         ids=["cross-entropy", "loop", "manual norm + logsumexp", "library", "checks' reference"])
def test_info_nce_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_info_nce, fn, capsys)
    assert ok and out.startswith("✅ Correct!"), out


def test_info_nce_variant_defaults_equal_the_library():
    for anchor, view, tau in C.info_nce_cases():
        assert torch.allclose(C.info_nce_variant(anchor, view, tau), info_nce(anchor, view, temperature=tau),
                              atol=1e-6)


def test_info_nce_single_mistake_variants_are_distinguishable():
    """Every single mistake changes the value on the check's cases; otherwise its message could never show."""
    cases = C.info_nce_cases()
    ref = [info_nce(a, v, temperature=t) for a, v, t in cases]
    for names, values in C._variants(C.INFO_NCE_OPTIONS, lambda s: [C.info_nce_variant(a, v, t, **s)
                                                                     for a, v, t in cases], max_mistakes=1):
        assert not all(C._close(x, r) for x, r in zip(values, ref)), names


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


def sc(normalise=True, self_den=True, self_pos=False, l_in=False, all_pairs=False, tau_pow=1, drop_singletons=True,
       multiply_mask=False, dim=1, use_labels=True, reduce="mean"):
    def fn(z, labels, temperature=0.1):
        u = F.normalize(z, dim=1) if normalise else z
        n = len(u)
        eye = torch.eye(n, dtype=torch.bool)
        sim = u @ u.T / temperature ** tau_pow
        if self_den:
            sim = sim.masked_fill(eye, float("-inf"))
        log_prob = sim - torch.logsumexp(sim, dim=dim, keepdim=True)
        pos = labels[:, None] == labels[None, :] if use_labels else torch.ones(n, n, dtype=torch.bool)
        if not self_pos:
            pos = pos & ~eye
        n_pos = pos.sum(1)
        keep = n_pos > 0 if drop_singletons else torch.ones(n, dtype=torch.bool)
        if l_in:
            return -torch.log((log_prob.exp() * pos).sum(1)[keep] / n_pos[keep]).mean()
        pos_log = log_prob * pos if multiply_mask else torch.where(pos, log_prob, torch.zeros_like(log_prob))
        if all_pairs:
            return -pos_log.sum() / n_pos.sum()
        per = -pos_log.sum(1)[keep] / n_pos[keep]
        return per.mean() if reduce == "mean" else per.sum()
    return fn


def zeros_for_singletons(z, labels, temperature=0.1):
    full = sc()(z, labels, temperature)
    n_single = sum(int((labels == c).sum() == 1) for c in labels.unique())
    return full * (len(labels) - n_single) / len(labels)


SUPCON_WRONG = [
    ("not normalised", sc(normalise=False), ["forgot to normalise"]),
    ("anchor in the denominator", sc(self_den=False), ["kept the anchor itself in the denominator"]),
    ("anchor its own positive", sc(self_den=False, self_pos=True), ["its own positive"]),
    ("L_in", sc(l_in=True), ["L_in"]),
    ("all pairs at once", sc(all_pairs=True), ["all positive pairs"]),
    ("temperature twice", sc(tau_pow=2), ["temperature applied twice"]),
    ("-inf * 0 = nan", sc(multiply_mask=True), ["-inf * 0 = nan"]),
    ("labels not used", sc(use_labels=False), ["every other sample as a positive"]),
    ("summed over anchors", sc(reduce="sum"), ["summed over the batch"]),
    ("singletons give nan", sc(drop_singletons=False), ["nan", "appears only once"]),
    ("singletons counted as 0", zeros_for_singletons, ["left out"]),
]


@pytest.mark.parametrize("fn, phrases", [w[1:] for w in SUPCON_WRONG], ids=[w[0] for w in SUPCON_WRONG])
def test_supcon_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_supcon, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [sc(), supcon_loop, lambda z, y, t: supcon(z, y, temperature=t), sc(dim=0)],
                         ids=["masked", "loop", "library", "log-softmax over dim 0 (symmetric logits: same mean)"])
def test_supcon_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_supcon, fn, capsys)
    assert ok and "including anchors without positives" in out, out


def test_supcon_variant_defaults_equal_the_library():
    for z, y, tau in C._supcon_cases():
        assert torch.allclose(C.supcon_variant(z, y, tau), supcon(z, y, temperature=tau), atol=1e-6)


def test_checks_are_repeatable():
    """Checks must not leave state behind: a second call gives the same verdict."""
    assert check_info_nce(nce()) and check_info_nce(nce())
