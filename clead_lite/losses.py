"""Contrastive and robustness losses: InfoNCE / SimCLR NT-Xent, the C-LEAD 3-view loss, SupCon, TRADES KL.

All losses take embeddings as plain tensors, normalise them to unit length inside, and compute in float32
(also under bf16 / fp16 autocast). Vectorised: one (batched) matmul, masks by -inf, cross-entropy /
logsumexp. Notation in the docstrings: u_i = z_i / ||z_i||, s(a, b) = u_a . u_b (cosine similarity),
tau = the temperature.

A zero embedding has no direction: like `torch.nn.functional.normalize`, it is mapped to the zero vector,
so its cosine similarity with everything is 0. The loss and its gradients stay finite (the gradient of
that row is large, ~1 / 1e-12, as for any normalisation at the origin), so a training loop does not stop
on it; no error is raised because checking would force a device sync at every step.

Floor 0: imports only `validate`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .validate import check_positive

__all__ = ["info_nce", "clead_loss", "supcon", "trades_kl"]


# ---------------------------------------------------------------------------------------------- checks
def _check_embeddings(z: torch.Tensor, name: str, min_batch: int = 2) -> torch.Tensor:
    """z: (B, D) floating tensor with B >= min_batch."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, D), got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (B, D) (rank 2), got shape {tuple(z.shape)} (rank {z.dim()}); "
                         "flatten the embeddings first, e.g. z.flatten(1)")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (embeddings), got dtype {z.dtype}")
    if z.shape[0] < min_batch:
        if min_batch >= 2:
            raise ValueError(f"contrastive losses need at least two samples (the other samples are the "
                             f"negatives); {name} has batch size {z.shape[0]} (shape {tuple(z.shape)})")
        raise ValueError(f"{name} is an empty batch (shape {tuple(z.shape)}); pass at least one sample")
    if z.shape[1] == 0:
        raise ValueError(f"{name} has embedding dimension 0 (shape {tuple(z.shape)})")
    return z


def _check_temperature(temperature: float) -> float:
    return check_positive(temperature, "temperature")


def _no_autocast(t: torch.Tensor):
    """A context that switches autocast off on t's device, so the loss is computed in float32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _unit(z: torch.Tensor) -> torch.Tensor:
    """Rows of z in float32, scaled to unit length (zero rows stay zero)."""
    return F.normalize(z.float(), dim=-1)


# ---------------------------------------------------------------------------------------------- losses
def info_nce(anchor: torch.Tensor, *views: torch.Tensor, temperature: float = 0.1,
             symmetric: bool = False) -> torch.Tensor:
    r"""InfoNCE with the anchor as query, one term per view; a scalar float32 tensor.

    anchor: (B, D) and each view: (B, D), row i of every tensor is the same sample (e.g. clean image i and
    its adversarial versions). Embeddings are L2-normalised inside; similarities are cosine / tau.

    Term k, anchor i as the query, positive v^k_i, negatives the 2B - 2 others of anchor and view k:

        l^k_i = -log( exp(s(a_i, v^k_i)/tau)
                      / ( sum_{j != i} exp(s(a_i, a_j)/tau) + sum_j exp(s(a_i, v^k_j)/tau) ) )

        loss = 1/(K B) sum_k sum_i l^k_i          (K = number of views)

    With two views this is the published C-LEAD 3-view loss (clean = anchor, two adversarial views).
    symmetric=True also makes every view sample a query (positive a_i, negatives {v^k_j, j != i} U
    {a_j, j != i}) and averages the 2B queries of each term: with one view that is exactly SimCLR's
    NT-Xent (Chen et al. 2020). For unrelated embeddings the loss is about log(2B - 1); for perfectly
    aligned pairs it goes to 0 as tau -> 0.
    """
    tau = _check_temperature(temperature)
    if not views:
        raise ValueError("info_nce needs at least one view besides the anchor: info_nce(anchor, view, ...)")
    _check_embeddings(anchor, "anchor")
    for k, v in enumerate(views):
        _check_embeddings(v, f"view {k} (views[{k}])")
        if v.shape != anchor.shape:
            raise ValueError(f"view {k} (views[{k}]) has shape {tuple(v.shape)}, but anchor has shape "
                             f"{tuple(anchor.shape)}; every view must match the anchor row for row")
    b = anchor.shape[0]
    with _no_autocast(anchor):
        a = _unit(anchor)
        pairs = torch.stack([torch.cat([a, _unit(v)]) for v in views])        # (K, 2B, D): [anchor; view k]
        queries = pairs if symmetric else pairs[:, :b]                         # (K, Q, D), Q = 2B or B
        logits = queries @ pairs.transpose(1, 2) / tau                         # (K, Q, 2B)
        q = queries.shape[1]
        self_mask = torch.eye(q, 2 * b, dtype=torch.bool, device=a.device)     # query vs itself
        logits = logits.masked_fill(self_mask, float("-inf"))
        targets = (torch.arange(q, device=a.device) + b) % (2 * b)            # the partner in the other half
        return F.cross_entropy(logits.reshape(-1, 2 * b), targets.repeat(len(views)))


def clead_loss(z_clean: torch.Tensor, z_adv: torch.Tensor, z_adv2: torch.Tensor | None = None,
               temperature: float = 0.1) -> torch.Tensor:
    r"""The C-LEAD contrastive loss: InfoNCE with the clean embedding as the only query.

    z_clean, z_adv, z_adv2: (B, D). With z_adv2 it is the published 3-view loss (mean of the two terms
    clean -> adv and clean -> adv2, see `info_nce`); without it, the single term clean -> adv.
    """
    views = (z_adv,) if z_adv2 is None else (z_adv, z_adv2)
    return info_nce(z_clean, *views, temperature=temperature, symmetric=False)


def supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    r"""Supervised contrastive loss L_out (Khosla et al. 2020); a scalar float32 tensor.

    z: (N, D) embeddings (L2-normalised inside), labels: (N,) int64. For several views of each sample,
    concatenate them: supcon(torch.cat([z_clean, z_adv]), torch.cat([y, y])).

        P(i) = {p != i : labels_p = labels_i},   A(i) = {a != i}
        l_i  = -1/|P(i)| sum_{p in P(i)} log( exp(s(z_i, z_p)/tau) / sum_{a in A(i)} exp(s(z_i, z_a)/tau) )
        loss = mean of l_i over the anchors i with |P(i)| > 0

    Anchors whose label occurs only once have no positive and are left out of the mean; if no anchor has
    a positive the loss is undefined and a ValueError is raised.
    """
    tau = _check_temperature(temperature)
    _check_embeddings(z, "z")
    n = z.shape[0]
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor of int64 class indices, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must have dtype torch.int64 (class indices), got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},) to match z {tuple(z.shape)}, "
                         f"got {tuple(labels.shape)}")
    labels = labels.to(z.device)
    with _no_autocast(z):
        u = _unit(z)
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = (u @ u.T / tau).masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)      # log p(a | i), a != i
        positives = (labels[:, None] == labels[None, :]) & ~self_mask
        n_pos = positives.sum(1)
        has_pos = n_pos > 0
        if not bool(has_pos.any()):
            raise ValueError(f"supcon needs at least two samples with the same label (a positive pair), but all "
                             f"{n} labels are distinct; use a larger batch or add views of the same samples")
        pos_sum = log_prob.masked_fill(~positives, 0.0).sum(1)                 # -inf on the diagonal masked out
        per_anchor = -pos_sum[has_pos] / n_pos[has_pos]
        return per_anchor.mean()


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    r"""TRADES robustness term (Zhang et al. 2019): KL(p_clean || p_adv), averaged over the batch.

    logits_clean, logits_adv: (B, C). p = softmax(logits);
        loss = 1/B sum_i sum_c p_clean[i, c] (log p_clean[i, c] - log p_adv[i, c])   (>= 0, 0 iff equal)
    Gradients flow into both arguments (as in TRADES' training loss); detach one if you need otherwise.
    """
    _check_embeddings(logits_clean, "logits_clean", min_batch=1)
    _check_embeddings(logits_adv, "logits_adv", min_batch=1)
    if logits_adv.shape != logits_clean.shape:
        raise ValueError(f"logits_adv has shape {tuple(logits_adv.shape)}, but logits_clean has shape "
                         f"{tuple(logits_clean.shape)}; they must match")
    with _no_autocast(logits_clean):
        log_p_clean = F.log_softmax(logits_clean.float(), dim=1)
        log_p_adv = F.log_softmax(logits_adv.float(), dim=1)
        return F.kl_div(log_p_adv, log_p_clean, reduction="batchmean", log_target=True)
