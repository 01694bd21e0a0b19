"""Clean and adversarial embeddings, how far apart they are, and a shared 2-D UMAP map of both, in reading order:
`embed`, `clean_and_adversarial_embeddings`, `separation_metrics` (does the attack move an embedding far, towards
another class, or keep it close?) and `umap_projection`. Embeddings come back as (N, D) float32 CPU tensors; row i
of z_adv is image i attacked.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import check_batch, device_of, eval_mode, unwrap
from .validate import check_adversarial, check_attack, check_choice, check_int, check_labels, check_nonnegative

SPACES = ("features", "projection")
KNN_K = 5
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["embed", "clean_and_adversarial_embeddings", "separation_metrics", "umap_projection", "SPACES"]


def _embedder(model: nn.Module, space: str) -> Callable[[torch.Tensor], torch.Tensor]:
    check_choice(space, "space", SPACES)
    inner = unwrap(model)
    method = "features" if space == "features" else "project"
    fn = getattr(inner, method, None)
    if not callable(fn):
        raise TypeError(f"space={space!r} needs a model with a {method}(x) method; "
                        f"{type(inner).__name__} has none (use a clead_lite.models model)")
    return fn


def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 512, space: str = "features") -> torch.Tensor:
    """Embeddings of x: (N, C, H, W) in [0, 1] -> (N, D) float32 on the CPU, in eval mode, without gradients; space:
    "features" (`model.features`, the penultimate layer) or "projection" (`model.project`, the contrastive head)."""
    fn = _embedder(model, space)
    check_int(batch_size, "batch_size")
    check_batch(model, x)
    device = device_of(model)
    with eval_mode(model), torch.no_grad():
        return torch.cat([fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def clean_and_adversarial_embeddings(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                                     batch_size: int = 256, space: str = "features") -> dict[str, torch.Tensor]:
    """Attack x and embed both the clean and the adversarial images (all results on the CPU).

    x: (N, C, H, W) in [0, 1], y: (N,) int64, attack: callable(model, x, y) -> x_adv (`attacks.make_attack`).
    Returns {z_clean, z_adv: (N, D) float32; y, pred_clean, pred_adv: (N,) int64; x_adv: (N, C, H, W) float32}."""
    fn = _embedder(model, space)
    check_int(batch_size, "batch_size")
    check_attack(attack)
    check_batch(model, x, y)
    device = device_of(model)
    parts = []     # per batch: z_clean, z_adv, pred_clean, pred_adv, x_adv
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            xb_adv = check_adversarial(attack(model, xb, yb), xb)
            with torch.no_grad():     # clean and adversarial images in one batch
                both = torch.cat([xb, xb_adv.detach().to(xb.dtype)])
                z = fn(both).float().cpu()
                pred = model(both).argmax(1).cpu()
            b = len(xb)
            parts.append((z[:b], z[b:], pred[:b], pred[b:], xb_adv.detach().float().cpu()))
    out = {k: torch.cat(v) for k, v in zip(("z_clean", "z_adv", "pred_clean", "pred_adv", "x_adv"), zip(*parts))}
    out["y"] = y.detach().cpu()
    return out


def _as_embeddings(z, name: str) -> torch.Tensor:
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(z)
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (N, D), got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (embeddings), got dtype {z.dtype}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return z.detach().float().cpu()


def separation_metrics(z_clean: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How far adversarial embeddings move away from their clean versions, as five numbers.

    z_clean, z_adv: (N, D), paired row for row; y: (N,) int64 true labels. "Cosine": cosine similarity.
    - pair_cosine: mean_i cos(z_clean_i, z_adv_i) in [-1, 1]; near 1: the attack barely turns an embedding.
    - pair_distance_ratio: mean ||z_clean_i - z_adv_i|| / mean distance between the clean class centroids
      (Euclidean, scale-free); much below 1: a small step next to the class gaps; near 1: one class to another.
    - knn_accuracy: fraction of adversarial embeddings whose 5-nearest-neighbour (cosine) vote among the clean
      ones gives their true label; high: the representation is robust even if the classifier head is fooled.
    - silhouette: sklearn's silhouette score (cosine) of clean and adversarial embeddings together, labelled
      with the true class, in [-1, 1]; high: compact, separate classes; near 0 or below: the attack blurs them.
    - own_neighbour_fraction: fraction of adversarial points whose nearest clean point (cosine) is their own
      clean version; low: the attack carries embeddings past other images."""
    z_clean, z_adv = _as_embeddings(z_clean, "z_clean"), _as_embeddings(z_adv, "z_adv")
    if z_adv.shape != z_clean.shape:
        raise ValueError(f"z_adv has shape {tuple(z_adv.shape)}, but z_clean has shape {tuple(z_clean.shape)}; "
                         "they must be paired row for row")
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    y = check_labels(y, len(z_clean), name="y").cpu()
    classes = torch.unique(y)
    if len(classes) < 2:
        raise ValueError(f"separation_metrics needs at least two classes in y, got only class {classes.tolist()}")
    n = len(z_clean)
    u_clean, u_adv = F.normalize(z_clean, dim=1), F.normalize(z_adv, dim=1)
    pair_cosine = (u_clean * u_adv).sum(1).mean()
    centroids = torch.stack([z_clean[y == c].mean(0) for c in classes])
    iu = torch.triu_indices(len(classes), len(classes), offset=1)
    centroid_dist = torch.cdist(centroids, centroids)[iu[0], iu[1]].mean()
    pair_dist = (z_clean - z_adv).norm(dim=1).mean()
    ratio = pair_dist / centroid_dist if centroid_dist > 0 else torch.tensor(float("inf"))

    k = min(KNN_K, n)
    # (N, k): the k clean points most similar to each adversarial one, nearest first (in chunks: not an N x N matrix)
    nn_idx = torch.cat([(u_adv[i:i + 2048] @ u_clean.T).topk(k, dim=1).indices for i in range(0, n, 2048)])
    # votes (N, k, C); a tie goes to the class of the nearest point among the tied classes (the bonuses 2^-rank
    # never add up to a whole vote)
    votes = F.one_hot(y[nn_idx], int(y.max()) + 1).float() * (1.0 + 1e-3 * 0.5 ** torch.arange(k).view(1, k, 1))
    knn_accuracy = (votes.sum(1).argmax(1) == y).float().mean()
    own = (nn_idx[:, 0] == torch.arange(n)).float().mean()
    from sklearn.metrics import silhouette_score
    union = torch.cat([u_clean, u_adv]).numpy()
    labels = torch.cat([y, y]).numpy()
    sample = 10_000 if len(union) > 10_000 else None
    silhouette = silhouette_score(union, labels, metric="cosine", sample_size=sample, random_state=0)
    return {"pair_cosine": float(pair_cosine), "pair_distance_ratio": float(ratio), "knn_accuracy": float(knn_accuracy),
            "silhouette": float(silhouette), "own_neighbour_fraction": float(own)}


def umap_projection(z_clean, z_adv, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                    metric: str = "cosine") -> np.ndarray:
    """One 2-D UMAP map of z_clean: (N_clean, D) and z_adv: (N_adv, D) (tensors or arrays), fitted on both together
    (separate fits would be incomparable) -> (N_clean + N_adv, 2) float32 numpy, the clean rows first, in input order.
    Seeded: deterministic, single-threaded. Above 4,096 points UMAP uses pynndescent, whose first use compiles for a
    minute (`clead_lite.course.umap_cache.cached_umap_projection` caches the maps)."""
    zc, za = _as_embeddings(z_clean, "z_clean"), _as_embeddings(z_adv, "z_adv")
    if zc.shape[1] != za.shape[1]:
        raise ValueError(f"z_clean and z_adv must have the same embedding dimension, got {tuple(zc.shape)} and "
                         f"{tuple(za.shape)}")
    n = len(zc) + len(za)
    check_int(n_neighbors, "n_neighbors", minimum=2)
    if n_neighbors >= n:
        raise ValueError(f"n_neighbors must be smaller than the number of points ({n}), got {n_neighbors}")
    if check_nonnegative(min_dist, "min_dist") > 1.0:
        raise ValueError(f"min_dist must be in [0, 1] (UMAP's spread is 1), got {min_dist}")
    check_int(seed, "seed", minimum=0)
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a metric name such as 'cosine' or 'euclidean', got {metric!r}")
    z = np.ascontiguousarray(torch.cat([zc, za]).numpy(), dtype=np.float32)
    try:
        import umap     # only here: numba compiles it on first use
    except ImportError as e:
        raise ImportError("UMAP projections need the package umap-learn: pip install umap-learn "
                          f"(import failed: {e})") from e
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=float(min_dist), n_components=2, metric=metric,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")   # a seed makes UMAP single-threaded
        return np.asarray(reducer.fit_transform(z), dtype=np.float32)
