"""Tests for clead_lite.losses: closed-form values on tiny inputs, naive loop references, invariances,
gradients, temperature effects and input errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from clead_lite.losses import info_nce, supcon, trades_kl

E = math.exp
LOG = math.log


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------ naive references (loops, float64)
def _cos(a, b):
    a, b = a.double(), b.double()
    na, nb = a.norm().item(), b.norm().item()
    return 0.0 if na == 0 or nb == 0 else (a @ b).item() / (na * nb)


def naive_ntxent(z1, z2, tau):
    """SimCLR NT-Xent: each of the 2B samples is a query, its partner the positive, 2B - 2 negatives."""
    z = torch.cat([z1, z2])
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        den = sum(E(_cos(z[i], z[k]) / tau) for k in range(n) if k != i)
        total += -LOG(E(_cos(z[i], z[j]) / tau) / den)
    return total / n


def naive_info_nce(anchor, views, tau):
    """The contract: term k, anchor i queries; positive views[k][i]; negatives other anchors and view-k rows."""
    b = len(anchor)
    terms = []
    for v in views:
        total = 0.0
        for i in range(b):
            den = sum(E(_cos(anchor[i], anchor[j]) / tau) for j in range(b) if j != i)
            den += sum(E(_cos(anchor[i], v[j]) / tau) for j in range(b))
            total += -LOG(E(_cos(anchor[i], v[i]) / tau) / den)
        terms.append(total / b)
    return sum(terms) / len(terms)


def naive_supcon(z, labels, tau):
    n = len(z)
    losses = []
    for i in range(n):
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not pos:
            continue
        den = sum(E(_cos(z[i], z[a]) / tau) for a in range(n) if a != i)
        losses.append(-sum(LOG(E(_cos(z[i], z[p]) / tau) / den) for p in pos) / len(pos))
    return sum(losses) / len(losses)


# ------------------------------------------------------------------ closed-form values by hand
def test_info_nce_orthogonal_aligned_by_hand():
    # a_i = v_i, a_0 ⟂ a_1: positive similarity 1, both negatives 0.
    a = t([[1, 0], [0, 1]])
    for tau in (1.0, 0.5):
        expected = LOG(1 + 2 * E(-1 / tau))
        assert info_nce(a, a.clone(), temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_two_by_two_by_hand():
    a = t([[1, 0], [0, 1]])
    v = t([[3, 4], [2, 0]])            # unit versions (0.6, 0.8) and (1, 0): normalisation happens inside
    tau = 0.5
    l0 = LOG(E(0) + E(1.2) + E(2.0)) - 1.2   # s(a0,v0)=.6, negatives s(a0,a1)=0, s(a0,v1)=1
    l1 = LOG(E(0) + E(1.6) + E(0)) - 0.0     # s(a1,v1)=0, negatives s(a1,a0)=0, s(a1,v0)=.8
    got = info_nce(a, v, temperature=tau).item()
    assert got == pytest.approx((l0 + l1) / 2, rel=1e-6)

    # symmetric: the view rows are queries too.
    m0 = LOG(E(1.2) + E(1.2) + E(1.6)) - 1.2  # v0: positive a0 (.6), negatives v1 (.6), a1 (.8)
    m1 = LOG(E(0) + E(1.2) + E(2.0)) - 0.0    # v1: positive a1 (0), negatives v0 (.6), a0 (1)
    got_sym = info_nce(a, v, temperature=tau, symmetric=True).item()
    assert got_sym == pytest.approx((l0 + l1 + m0 + m1) / 4, rel=1e-6)


def test_clead_three_view_loss_by_hand():
    a = t([[1, 0], [0, 1]])
    v1 = t([[3, 4], [2, 0]])
    v2 = t([[0, 1], [1, 0]])           # each anchor's positive is orthogonal, its hard negative is aligned
    tau = 0.5
    term1 = ((LOG(1 + E(1.2) + E(2.0)) - 1.2) + LOG(2 + E(1.6))) / 2
    term2 = LOG(2 + E(2.0))            # both anchors: log(e^0 + e^0 + e^2) - 0
    expected = (term1 + term2) / 2
    assert info_nce(a, v1, v2, temperature=tau).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(a, v1, temperature=tau).item() == pytest.approx(term1, rel=1e-6)


def test_supcon_by_hand():
    z = t([[1, 0], [0.6, 0.8], [0, 1]])
    y = torch.tensor([0, 0, 1])
    l0 = LOG(1 + E(-0.6))                     # positive z1 (.6), other z2 (0)
    l1 = LOG(E(0.6) + E(0.8)) - 0.6           # positive z0 (.6), other z2 (.8)
    # z2 has no positive: left out of the mean.
    assert supcon(z, y, temperature=1.0).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_trades_kl_by_hand():
    clean = t([[0, LOG(3)], [1, 2]])          # row 0: p = (1/4, 3/4)
    adv = t([[0, 0], [1, 2]])                 # row 0: q = (1/2, 1/2); row 1 identical -> KL 0
    kl0 = 0.25 * LOG(0.25 / 0.5) + 0.75 * LOG(0.75 / 0.5)
    assert trades_kl(clean, adv).item() == pytest.approx(kl0 / 2, rel=1e-6)
    assert trades_kl(clean, clean).item() == pytest.approx(0.0, abs=1e-7)
    assert trades_kl(adv, clean).item() != pytest.approx(trades_kl(clean, adv).item())  # not symmetric


# ------------------------------------------------------------------ naive loop references
@pytest.mark.parametrize("b,d,tau", [(2, 3, 0.1), (5, 4, 0.5), (8, 16, 0.07)])
def test_symmetric_single_view_is_simclr_nt_xent(b, d, tau):
    g = torch.Generator().manual_seed(b)
    z1, z2 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    got = info_nce(z1, z2, temperature=tau, symmetric=True).item()
    assert got == pytest.approx(naive_ntxent(z1, z2, tau), rel=1e-5)


@pytest.mark.parametrize("n_views", [1, 2, 3])
def test_info_nce_matches_naive_loop(n_views):
    g = torch.Generator().manual_seed(n_views)
    a = torch.randn(6, 5, generator=g)
    views = [a + 0.5 * torch.randn(6, 5, generator=g) for _ in range(n_views)]
    got = info_nce(a, *views, temperature=0.2).item()
    assert got == pytest.approx(naive_info_nce(a, views, 0.2), rel=1e-5)


def test_info_nce_is_mean_of_single_view_terms():
    g = torch.Generator().manual_seed(3)
    a, v1, v2 = (torch.randn(7, 4, generator=g) for _ in range(3))
    both = info_nce(a, v1, v2, temperature=0.3)
    assert both.item() == pytest.approx(((info_nce(a, v1, temperature=0.3) + info_nce(a, v2, temperature=0.3)) / 2)
                                        .item(), rel=1e-6)


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 1, 2, 0, 3], [1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6, 6]])
def test_supcon_matches_naive_loop(labels):
    g = torch.Generator().manual_seed(len(set(labels)))
    z = torch.randn(8, 6, generator=g)
    y = torch.tensor(labels)
    assert supcon(z, y, temperature=0.2).item() == pytest.approx(naive_supcon(z, labels, 0.2), rel=1e-5)


def test_supcon_with_pair_labels_equals_nt_xent():
    # One positive per anchor (its other view) and everything else a negative: SupCon L_out = NT-Xent.
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    y = torch.arange(6).repeat(2)
    assert supcon(torch.cat([z1, z2]), y, 0.1).item() == pytest.approx(
        info_nce(z1, z2, temperature=0.1, symmetric=True).item(), rel=1e-5)


# ------------------------------------------------------------------ reduction="none": the per-query losses
def contrastive_attack_loss(z_clean, z_adv, temperature):
    """The body of train_step.contrastive_attack_loss (before issue 19), what the contrastive attack climbed."""
    b = z_clean.shape[0]
    a = F.normalize(z_clean.float(), dim=1)
    v = F.normalize(z_adv.float(), dim=1)
    logits = torch.cat([a @ a.T, a @ v.T], dim=1) / temperature                     # (B, 2B)
    logits = logits.masked_fill(torch.eye(b, 2 * b, dtype=torch.bool, device=a.device), float("-inf"))
    return F.cross_entropy(logits, torch.arange(b, device=a.device) + b, reduction="none")


def _values_and_grads(fn, tensors, weights):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    return out, torch.autograd.grad((out * weights).sum(), leaves)


@pytest.mark.parametrize("b,d,tau", [(2, 3, 0.1), (7, 5, 0.5), (12, 16, 0.1), (64, 128, 0.07), (256, 64, 0.2)])
def test_reduction_none_is_the_contrastive_attack_loss_bit_for_bit(b, d, tau):
    g = torch.Generator().manual_seed(b)
    z_clean, z_adv = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    weights = torch.rand(b, generator=g)          # any upstream gradient, not only the sum's ones
    ref, ref_grads = _values_and_grads(lambda a, v: contrastive_attack_loss(a, v, tau), [z_clean, z_adv], weights)
    got, got_grads = _values_and_grads(lambda a, v: info_nce(a, v, temperature=tau, reduction="none"),
                                       [z_clean, z_adv], weights)
    assert got.shape == (b,) and torch.equal(got, ref)
    assert all(torch.equal(x, y) for x, y in zip(got_grads, ref_grads))
    assert got.mean().item() == pytest.approx(info_nce(z_clean, z_adv, temperature=tau).item(), rel=1e-6)


@pytest.mark.parametrize("n_views, symmetric", [(1, True), (2, False), (3, True)])
def test_reduction_none_averages_each_samples_queries(n_views, symmetric):
    # (B,): per sample i the mean of its K anchor queries (and with symmetric its K view queries); the mean of
    # the (B,) is the "mean" loss
    a, *views = _random(12, b=6, d=5, n=1 + n_views)
    per_sample = info_nce(a, *views, temperature=0.3, symmetric=symmetric, reduction="none")
    assert per_sample.shape == (6,)
    assert per_sample.mean().item() == pytest.approx(
        info_nce(a, *views, temperature=0.3, symmetric=symmetric).item(), rel=1e-6)
    terms = [info_nce(a, v, temperature=0.3, reduction="none") for v in views]
    if symmetric:
        terms += [info_nce(v, a, temperature=0.3, reduction="none") for v in views]   # v_i queries: roles swap
    assert torch.allclose(per_sample, torch.stack(terms).mean(0), rtol=1e-5)


def test_reduction_must_be_mean_or_none():
    a, v, _ = _random(0)
    with pytest.raises(ValueError, match=r"unknown reduction 'sum'; allowed: 'mean', 'none'"):
        info_nce(a, v, reduction="sum")


# ------------------------------------------------------------------ invariances
def _random(seed, b=6, d=5, n=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g) for _ in range(n)]


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_invariant_to_batch_permutation_and_scale(symmetric):
    a, v1, v2 = _random(1)
    ref = info_nce(a, v1, v2, temperature=0.2, symmetric=symmetric).item()
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(7))
    assert info_nce(a[perm], v1[perm], v2[perm], temperature=0.2, symmetric=symmetric).item() == pytest.approx(ref,
                                                                                                              rel=1e-5)
    assert info_nce(3.7 * a, 0.01 * v1, 250.0 * v2, temperature=0.2, symmetric=symmetric).item() == pytest.approx(
        ref, rel=1e-5)
    # ... but pairing matters: permuting only the view changes the loss.
    assert info_nce(a, v1[perm], v2, temperature=0.2, symmetric=symmetric).item() != pytest.approx(ref, rel=1e-3)


def test_supcon_invariant_to_permutation_and_scale():
    (z,) = _random(2, b=10, n=1)
    y = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 3, 2])
    ref = supcon(z, y, 0.3).item()
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    assert supcon(z[perm], y[perm], 0.3).item() == pytest.approx(ref, rel=1e-5)
    assert supcon(42.0 * z, y, 0.3).item() == pytest.approx(ref, rel=1e-5)


# ------------------------------------------------------------------ gradients and degenerate inputs
def test_identical_embeddings_give_log_2b_minus_1_and_finite_gradients():
    b = 4
    z = torch.ones(b, 3, requires_grad=True)
    v = torch.ones(b, 3, requires_grad=True)
    loss = info_nce(z, v, temperature=0.1, symmetric=True)   # every similarity is 1: uniform over 2B-1
    assert loss.item() == pytest.approx(LOG(2 * b - 1), rel=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all() and torch.isfinite(v.grad).all()

    w = torch.ones(b, 3, requires_grad=True)
    loss = supcon(w, torch.tensor([0, 0, 1, 1]), 0.1)
    assert loss.item() == pytest.approx(LOG(b - 1), rel=1e-6)
    loss.backward()
    assert torch.isfinite(w.grad).all()


def test_zero_vector_is_handled_as_similarity_zero():
    # Decision: a zero embedding is not an error; it has cosine similarity 0 with everything.
    a = t([[0, 0], [0, 1]]).requires_grad_()
    v = t([[1, 0], [0, 1]])
    loss = info_nce(a, v, temperature=1.0)
    l0 = LOG(3.0)                              # a0 = 0: positive and both negatives have similarity 0
    l1 = LOG(E(0) + E(0) + E(1)) - 1           # a1 = (0,1): positive 1, negatives a0 (0), v0 (0)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(a.grad).all()
    z = t([[0, 0], [1, 0], [0, 1]]).requires_grad_()
    s = supcon(z, torch.tensor([0, 0, 1]), 0.5)
    s.backward()
    assert torch.isfinite(s) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("loss_name", ["info_nce", "info_nce_sym", "clead3", "supcon", "trades"])
def test_gradients_are_finite_and_reach_every_input(loss_name):
    a, v1, v2 = (x.requires_grad_() for x in _random(5))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = {"info_nce": lambda: info_nce(a, v1, temperature=0.05),
            "info_nce_sym": lambda: info_nce(a, v1, temperature=0.05, symmetric=True),
            "clead3": lambda: info_nce(a, v1, v2, temperature=0.05),
            "supcon": lambda: supcon(torch.cat([a, v1]), torch.cat([y, y]), temperature=0.05),
            "trades": lambda: trades_kl(a, v1)}[loss_name]()
    loss.backward()
    used = [a, v1, v2] if loss_name == "clead3" else [a, v1]
    for x in used:
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradient_matches_finite_differences():
    a, v = (x.double() for x in _random(9, b=3, d=3, n=2))
    a.requires_grad_()
    # The loss computes in float32; compare with a loose tolerance via gradcheck-like central differences.
    loss = info_nce(a, v, temperature=0.5)
    (grad,) = torch.autograd.grad(loss, a)
    h = 1e-3
    for i in range(3):
        for j in range(3):
            ap, am = a.detach().clone(), a.detach().clone()
            ap[i, j] += h
            am[i, j] -= h
            fd = (naive_info_nce(ap, [v], 0.5) - naive_info_nce(am, [v], 0.5)) / (2 * h)
            assert grad[i, j].item() == pytest.approx(fd, abs=1e-4)


@pytest.mark.parametrize("which", ["info_nce", "clead3", "supcon"])
def test_a_few_gradient_steps_decrease_the_loss(which):
    a, v1, v2 = (x.requires_grad_() for x in _random(11, b=8, d=4))
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    fn = {"info_nce": lambda: info_nce(a, v1, temperature=0.2, symmetric=True),
          "clead3": lambda: info_nce(a, v1, v2, temperature=0.2),
          "supcon": lambda: supcon(torch.cat([a, v1, v2]), y.repeat(3), temperature=0.2)}[which]
    opt = torch.optim.SGD([a, v1, v2], lr=0.5)
    first = fn().item()
    for _ in range(20):
        opt.zero_grad()
        loss = fn()
        loss.backward()
        opt.step()
    assert fn().item() < 0.8 * first


# ------------------------------------------------------------------ temperature
def test_perfect_alignment_loss_goes_to_zero_as_temperature_falls():
    a = torch.eye(4)                  # orthonormal anchors, views identical to them
    losses = [info_nce(a, a.clone(), temperature=tau).item() for tau in (1.0, 0.5, 0.1, 0.02)]
    assert all(x > y for x, y in zip(losses, losses[1:]))
    assert losses[-1] < 1e-6
    for tau, loss in zip((1.0, 0.5, 0.1, 0.02), losses):
        assert loss == pytest.approx(LOG(1 + 6 * E(-1 / tau)), rel=1e-5, abs=1e-7)  # float32 logsumexp


def test_random_embeddings_loss_tends_to_log_2b_minus_1_at_high_temperature():
    b = 16
    a, v = _random(4, b=b, d=32, n=2)
    for symmetric in (False, True):
        hot = info_nce(a, v, temperature=1e4, symmetric=symmetric).item()
        assert hot == pytest.approx(LOG(2 * b - 1), abs=1e-3)
        warm = info_nce(a, v, temperature=1.0, symmetric=symmetric).item()
        assert abs(warm - LOG(2 * b - 1)) > 10 * abs(hot - LOG(2 * b - 1))
    assert supcon(a, torch.arange(b) % 4, temperature=1e4).item() == pytest.approx(LOG(b - 1), abs=1e-3)


# ------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_under_autocast_compute_in_float32(dtype):
    a, v1, v2 = (x.to(dtype) for x in _random(6, b=8, d=16))
    y = torch.tensor([0, 1, 2, 3] * 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [info_nce(a, v1, temperature=0.05), info_nce(a, v1, v2, temperature=0.05),
               supcon(a, y, temperature=0.05), trades_kl(a, v1)]
    ref = [info_nce(a.float(), v1.float(), temperature=0.05),
           info_nce(a.float(), v1.float(), v2.float(), temperature=0.05),
           supcon(a.float(), y, temperature=0.05), trades_kl(a.float(), v1.float())]
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        assert g.item() == pytest.approx(r.item(), rel=1e-5)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("tau", [0, -0.1, 0.0])
def test_temperature_must_be_positive(tau):
    a, v, _ = _random(0)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got"):
        info_nce(a, v, temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
        supcon(a, torch.zeros(6, dtype=torch.int64), temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(a, v, v, temperature=tau)


def test_temperature_must_be_a_number():
    a, v, _ = _random(0)
    with pytest.raises(TypeError, match="temperature"):
        info_nce(a, v, temperature="0.1")


def test_mismatched_view_shape_names_the_view_and_both_shapes():
    a, v, _ = _random(0)
    with pytest.raises(ValueError, match=r"view 1 .*shape \(5, 5\).*anchor has shape \(6, 5\)"):
        info_nce(a, v, v[:5], temperature=0.1)
    with pytest.raises(ValueError, match=r"view 0 .*\(6, 4\).*\(6, 5\)"):
        info_nce(a, v[:, :4])


def test_missing_view_is_an_error():
    a, _, _ = _random(0)
    with pytest.raises(ValueError, match="at least one view"):
        info_nce(a)


@pytest.mark.parametrize("bad", [torch.randn(6), torch.randn(6, 2, 3)])
def test_rank_must_be_two(bad):
    with pytest.raises(ValueError, match=r"anchor must have shape \(B, D\) \(rank 2\)"):
        info_nce(bad, bad)
    with pytest.raises(ValueError, match=r"z must have shape \(B, D\)"):
        supcon(bad, torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits_clean must have shape"):
        trades_kl(bad, bad)


def test_batch_of_one_is_an_error():
    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match="at least two samples.*batch size 1"):
        info_nce(z, z)
    with pytest.raises(ValueError, match="at least two samples"):
        supcon(z, torch.zeros(1, dtype=torch.int64))
    assert trades_kl(z, z).item() == pytest.approx(0.0, abs=1e-7)   # KL is defined for one sample
    with pytest.raises(ValueError, match="empty batch"):
        trades_kl(torch.randn(0, 4), torch.randn(0, 4))


def test_non_tensor_and_integer_inputs_are_errors():
    with pytest.raises(TypeError, match="anchor must be a torch.Tensor"):
        info_nce([[1.0, 0.0], [0.0, 1.0]], torch.eye(2))
    with pytest.raises(TypeError, match="floating"):
        info_nce(torch.eye(2, dtype=torch.int64), torch.eye(2, dtype=torch.int64))


def test_supcon_label_errors():
    z = torch.randn(4, 3)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor with dtype torch.int64.*got torch.float32"):
        supcon(z, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(TypeError, match="labels must be a torch.Tensor.*got list"):
        supcon(z, [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(4,\).*got \(3,\)"):
        supcon(z, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"got \(4, 1\)"):
        supcon(z, torch.tensor([[0], [0], [1], [1]]))
    with pytest.raises(ValueError, match="all 4 labels are distinct"):
        supcon(z, torch.arange(4))


def test_trades_shape_mismatch():
    with pytest.raises(ValueError, match=r"logits_adv has shape \(2, 3\).*logits_clean has shape \(2, 4\)"):
        trades_kl(torch.randn(2, 4), torch.randn(2, 3))
