"""Contrastive and robustness losses: InfoNCE / SimCLR NT-Xent (with two views the C-LEAD loss), SupCon, TRADES' KL.

Embeddings are (B, D) float tensors, normalised to unit length inside; every loss computes in float32, also under
autocast. Notation: u_i = z_i / |z_i|, s(a, b) = u_a . u_b (cosine similarity), tau = the temperature. A zero
embedding stays zero (`F.normalize`: similarity 0, finite gradients), not an error: finding it would sync every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .validate import check_choice, check_positive

__all__ = ["info_nce", "supcon", "trades_kl"]


def _check_embeddings(z: torch.Tensor, name: str, min_batch: int = 2) -> None:
    """z: (B, D) float tensor with B >= min_batch (2 for contrastive losses: the other samples are the negatives)."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, D), got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (B, D) (rank 2), got shape {tuple(z.shape)} (rank {z.dim()}); "
                         "flatten the embeddings first, e.g. z.flatten(1)")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (embeddings), got dtype {z.dtype}")
    if z.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(z.shape)}); pass at least one sample")
    if z.shape[0] < min_batch:
        raise ValueError(f"contrastive losses need at least two samples (the other samples are the negatives); "
                         f"{name} has batch size {z.shape[0]} (shape {tuple(z.shape)})")


def info_nce(anchor: torch.Tensor, *views: torch.Tensor, temperature: float = 0.1, symmetric: bool = False,
             reduction: str = "mean") -> torch.Tensor:
    r"""InfoNCE with the anchor as query, one term per view (K views); float32.

    anchor, views[k]: (B, D), row i of each the same sample (e.g. clean image i and its adversarial views). Term k,
    query a_i, positive v^k_i, negatives the 2B - 2 other rows of anchor and view k:
        l^k_i = -log( exp(s(a_i, v^k_i)/tau) / ( sum_{j != i} exp(s(a_i, a_j)/tau) + sum_j exp(s(a_i, v^k_j)/tau) ) )
    With two views this is the published C-LEAD 3-view loss (clean = anchor). symmetric=True also makes each view
    row a query (positive a_i): with one view, SimCLR's NT-Xent. reduction="mean": a scalar over all queries;
    "none": (B,), per sample the mean of its queries' terms (one view, not symmetric: exactly l_i, what an attack on
    the contrastive loss climbs). Unrelated embeddings give about log(2B - 1).
    """
    tau = check_positive(temperature, "temperature")
    check_choice(reduction, "reduction", ("mean", "none"))
    if not views:
        raise ValueError("info_nce needs at least one view besides the anchor: info_nce(anchor, view, ...)")
    _check_embeddings(anchor, "anchor")
    for k, v in enumerate(views):
        _check_embeddings(v, f"view {k} (views[{k}])")
        if v.shape != anchor.shape:
            raise ValueError(f"view {k} (views[{k}]) has shape {tuple(v.shape)}, but anchor has shape "
                             f"{tuple(anchor.shape)}; every view must match the anchor row for row")
    b = anchor.shape[0]
    with torch.autocast(anchor.device.type, enabled=False):
        a = F.normalize(anchor.float(), dim=1)
        us = [F.normalize(v.float(), dim=1) for v in views]
        # Queries against the 2B columns [a_j, u_j]: one batched matmul for "mean" (training), two per block for
        # "none" (attacks): equal values, but either one for both would move gradients in the last bit (tests/golden).
        if reduction == "mean":
            pairs = torch.stack([torch.cat([a, u]) for u in us])                   # (K, 2B, D)
            queries = pairs if symmetric else pairs[:, :b]                        # (K, Q, D), Q = 2B or B
            logits = (queries @ pairs.transpose(1, 2)).flatten(0, 1)              # (K Q, 2B)
        else:
            logits = torch.cat([torch.cat([q @ a.T, q @ u.T], dim=1)
                                for u in us for q in ((a, u) if symmetric else (a,))])
        q = logits.shape[0] // len(views)
        self_mask = torch.eye(q, 2 * b, dtype=torch.bool, device=a.device).repeat(len(views), 1)
        logits = (logits / tau).masked_fill(self_mask, float("-inf"))   # a query is not its own negative
        target = ((torch.arange(q, device=a.device) + b) % (2 * b)).repeat(len(views))   # its partner
        loss = F.cross_entropy(logits, target, reduction=reduction)
        return loss if reduction == "mean" else loss.view(-1, b).mean(0)


def supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    r"""Supervised contrastive loss L_out (Khosla et al. 2020); a float32 scalar.

    z: (N, D), labels: (N,) int64; several views: supcon(torch.cat([z_clean, z_adv]), torch.cat([y, y])).
        P(i) = {p != i : labels_p = labels_i},   A(i) = {a != i}
        l_i  = -1/|P(i)| sum_{p in P(i)} log( exp(s(z_i, z_p)/tau) / sum_{a in A(i)} exp(s(z_i, z_a)/tau) )
        loss = mean of l_i over the anchors i with |P(i)| > 0
    No anchor with a positive: a ValueError on the CPU, NaN on a GPU (raising there would sync every step).
    """
    tau = check_positive(temperature, "temperature")
    _check_embeddings(z, "z")
    n = z.shape[0]
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"labels must be a torch.Tensor with dtype torch.int64 (class indices), got {got}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},) to match z {tuple(z.shape)}, got {tuple(labels.shape)}")
    labels = labels.to(z.device)
    with torch.autocast(z.device.type, enabled=False):
        u = F.normalize(z.float(), dim=1)
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = (u @ u.T / tau).masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)      # log p(a | i), a != i
        positives = (labels[:, None] == labels[None, :]) & ~self_mask
        n_pos = positives.sum(1)
        has_pos = n_pos > 0
        if z.device.type == "cpu" and not has_pos.any():
            raise ValueError(f"supcon needs at least two samples with the same label (a positive pair), but all "
                             f"{n} labels are distinct; use a larger batch or add views of the same samples")
        per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1) / n_pos.clamp(min=1)  # the diagonal's -inf out
        return torch.where(has_pos, per_anchor, 0.0).sum() / has_pos.sum()


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    r"""TRADES' robustness term (Zhang et al. 2019): KL(p_clean || p_adv) averaged over the batch; float32 scalar.

    logits_clean, logits_adv: (B, C), p = softmax(logits), gradients into both (as in TRADES' training loss):
        loss = 1/B sum_i sum_c p_clean[i, c] (log p_clean[i, c] - log p_adv[i, c])   (>= 0, 0 iff equal)
    """
    _check_embeddings(logits_clean, "logits_clean", min_batch=1)
    _check_embeddings(logits_adv, "logits_adv", min_batch=1)
    if logits_adv.shape != logits_clean.shape:
        raise ValueError(f"logits_adv has shape {tuple(logits_adv.shape)}, but logits_clean has shape "
                         f"{tuple(logits_clean.shape)}; they must match")
    with torch.autocast(logits_clean.device.type, enabled=False):
        log_p_clean = F.log_softmax(logits_clean.float(), dim=1)
        log_p_adv = F.log_softmax(logits_adv.float(), dim=1)
        return F.kl_div(log_p_adv, log_p_clean, reduction="batchmean", log_target=True)
