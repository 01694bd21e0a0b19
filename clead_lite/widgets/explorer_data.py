"""The embedding explorer's data (notebook 07), computed once up front so that the widget (`explorer.py`) only
redraws: for every model, attack and eps, attack the images (white-box, against that model), embed the clean and
adversarial images, fit ONE 2-D UMAP map on both sets together (cached on disk by `course.umap_cache`),
and store predictions, probabilities and separation metrics (`ExplorerData`); plus the queries the widget asks
of it (`nearest_point`, `point_details`, `fooled_indices`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..course.umap_cache import cached_umap_projection
from ..embeddings import clean_and_adversarial_embeddings, separation_metrics
from ..models import device_of, eval_mode
from ..validate import check_eps, check_images, check_int, check_labels
from .viz import EXPLORER_ATTACKS, make_explorer_attack

ExplorerAttack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
Projector = Callable[[torch.Tensor, torch.Tensor], np.ndarray]

__all__ = ["ExplorerData", "precompute_explorer_data", "nearest_point", "point_details", "fooled_indices"]


# =============================================================================================== data
@dataclass
class ExplorerData:
    """Everything the explorer shows, computed once.

    x: (N, C, H, W) float in [0, 1] on the CPU; y: (N,) int64; classes: names by label.
    models / attacks: names in display order; eps_values: the budgets attacked.
    probs_clean[model]: (N, K) softmax of the clean images.
    entries[(model, attack, eps)]: a dict with
      coords (2N, 2) float32 numpy (rows [0, N) clean, [N, 2N) adversarial, one shared UMAP map),
      z_clean / z_adv (N, D) float32 embeddings (the space `space`), x_adv (N, C, H, W) float32,
      probs_adv (N, K), pred_clean / pred_adv (N,) int64,
      metrics (dict of `embeddings.separation_metrics` plus clean_accuracy and robust_accuracy).
    """
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    models: tuple[str, ...]
    attacks: tuple[str, ...]
    eps_values: tuple[float, ...]
    space: str
    probs_clean: dict[str, torch.Tensor] = field(default_factory=dict)
    entries: dict[tuple[str, str, float], dict] = field(default_factory=dict)

    def entry(self, model: str, attack: str, eps: float) -> dict:
        key = (model, attack, float(eps))
        if key not in self.entries:
            raise KeyError(f"no precomputed data for model {model!r}, attack {attack!r}, eps {eps}; available: "
                           f"models {list(self.models)}, attacks {list(self.attacks)}, eps {list(self.eps_values)}")
        return self.entries[key]

    def metrics_table(self):
        """A pandas DataFrame, one row per (model, attack, eps): accuracies and separation metrics."""
        import pandas as pd
        rows = [{"model": m, "attack": a, "eps": e, **d["metrics"]} for (m, a, e), d in self.entries.items()]
        return pd.DataFrame(rows)


def _softmax(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, K) class probabilities of x in eval mode on the model's device, returned on the CPU."""
    device = device_of(model)
    with eval_mode(model), torch.no_grad():
        return torch.cat([F.softmax(model(x[i:i + batch_size].to(device)).float(), dim=1).cpu()
                          for i in range(0, len(x), batch_size)])


def _resolve_attacks(attacks, steps: int) -> dict[str, ExplorerAttack]:
    """Names from viz.EXPLORER_ATTACKS ('fgsm', 'pgd', 'noise') or a {name: attack(model, x, y, eps)} dict."""
    if isinstance(attacks, str):
        attacks = (attacks,)
    if isinstance(attacks, Mapping):
        out = dict(attacks)
        for name, fn in out.items():
            if not callable(fn):
                raise TypeError(f"attacks[{name!r}] must be a callable(model, x, y, eps) -> x_adv, "
                                f"got {type(fn).__name__}")
    else:
        out = {}
        for name in attacks:
            if name not in EXPLORER_ATTACKS:
                raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(map(repr, EXPLORER_ATTACKS))} "
                                 "(or pass a dict {name: attack(model, x, y, eps) -> x_adv})")
            out[name] = make_explorer_attack(name, steps=steps)
    if not out:
        raise ValueError(f"attacks must name at least one attack, e.g. ('pgd', 'noise'); got {attacks!r}")
    return out


def precompute_explorer_data(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                             attacks: Sequence[str] | Mapping[str, ExplorerAttack] = ("pgd", "noise"),
                             eps_values: Sequence[float] = (0.15, 0.3), classes: Sequence[str] | None = None,
                             space: str = "features", steps: int = 10, n_neighbors: int = 15, seed: int = 0,
                             cache_dir=None, projector: Projector | None = None, batch_size: int = 256,
                             progress: bool = True) -> ExplorerData:
    """Attack, embed and project everything the explorer can show.

    models: {display name: model}, e.g. {"standard": m0, "PGD-AT": m1, "C-LEAD online": m2} (any subset).
    x: (N, C, H, W) float in [0, 1]; y: (N,) int64. attacks: names ('fgsm', 'pgd' = L-inf PGD with `steps`
    steps of eps/4, 'noise' = random signs of size eps, the sanity baseline) or {name: attack(model, x, y, eps)
    -> x_adv}. eps_values: budgets (> 0, pixel units). Every attack is white-box against the model shown.
    space: "features" (penultimate layer) or "projection" (contrastive head). projector(z_clean, z_adv) ->
    (2N, 2): default one UMAP per (model, attack, eps) on clean and adversarial embeddings together, cached on
    disk (`course.umap_cache.cached_umap_projection(..., n_neighbors, seed, cache_dir)`). Cost: one attack and
    one UMAP fit per combination, paid once; nothing is computed while the widget is used.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty dict {display name: model}, e.g. {'standard': model}")
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{name!r}] must be a torch.nn.Module, got {type(m).__name__}")
    check_images(x)
    x = x.detach().float().cpu()
    y = check_labels(y, len(x)).detach().cpu()
    if len(x) < 4:
        raise ValueError(f"the explorer needs at least 4 images (it fits a 2-D map), got {len(x)}")
    eps_values = tuple(float(check_eps(e, "eps_values[i]")) for e in eps_values)
    if not eps_values:
        raise ValueError("eps_values must hold at least one budget, e.g. (0.15, 0.3)")
    if any(e == 0 for e in eps_values):
        raise ValueError(f"eps_values must be > 0 (at eps = 0 the adversarial images are the clean ones), "
                         f"got {list(eps_values)}")
    check_int(steps, "steps")
    attack_fns = _resolve_attacks(attacks, steps)
    num_classes = int(y.max()) + 1
    if classes is None:
        classes = tuple(str(k) for k in range(max(num_classes, 10)))
    classes = tuple(str(c) for c in classes)
    if len(classes) < num_classes:
        raise ValueError(f"classes has {len(classes)} names but y has labels up to {num_classes - 1}")
    if projector is None:
        n_nb = min(n_neighbors, 2 * len(x) - 1)

        def projector(zc, za):
            return cached_umap_projection(zc, za, n_neighbors=n_nb, seed=seed, cache_dir=cache_dir)

    data = ExplorerData(x=x, y=y, classes=classes, models=tuple(models), attacks=tuple(attack_fns),
                        eps_values=eps_values, space=space)
    jobs = [(m, a, e) for m in models for a in attack_fns for e in eps_values]
    bar = _progress(len(jobs), progress)
    for model_name, model in models.items():
        data.probs_clean[model_name] = _softmax(model, x, batch_size)
        for attack_name, attack in attack_fns.items():
            for eps in eps_values:
                bar.set_description(f"{model_name} / {attack_name} / eps {eps:.3g}")
                data.entries[(model_name, attack_name, eps)] = _one_entry(
                    model, x, y, lambda m, xb, yb, a=attack, e=eps: a(m, xb, yb, e), projector, space, batch_size)
                bar.update(1)
    bar.close()
    return data


def _one_entry(model, x, y, attack, projector, space, batch_size) -> dict:
    emb = clean_and_adversarial_embeddings(model, x, y, attack, batch_size=batch_size, space=space)
    coords = np.asarray(projector(emb["z_clean"], emb["z_adv"]), dtype=np.float32)
    if coords.shape != (2 * len(x), 2):
        raise ValueError(f"projector must return (2N, 2) = ({2 * len(x)}, 2) coordinates, got {coords.shape}")
    metrics = separation_metrics(emb["z_clean"], emb["z_adv"], y) if len(torch.unique(y)) > 1 else {}
    metrics = {"clean_accuracy": float((emb["pred_clean"] == y).float().mean()),
               "robust_accuracy": float((emb["pred_adv"] == y).float().mean()), **metrics}
    return {"coords": coords, "z_clean": emb["z_clean"], "z_adv": emb["z_adv"], "x_adv": emb["x_adv"],
            "probs_adv": _softmax(model, emb["x_adv"], batch_size),
            "pred_clean": emb["pred_clean"], "pred_adv": emb["pred_adv"], "metrics": metrics}


class _NoBar:
    def set_description(self, *_):
        pass

    def update(self, *_):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="explorer", unit="map")


# =============================================================================================== queries
def nearest_point(coords: np.ndarray, u: float, v: float) -> tuple[int, str]:
    """The point of a (2N, 2) map nearest to map coordinates (u, v): (image index in [0, N), 'clean' or
    'adversarial')."""
    coords = np.asarray(coords)
    k = int(np.argmin(((coords - np.array([u, v], dtype=coords.dtype)) ** 2).sum(1)))
    n = len(coords) // 2
    return k % n, ("clean" if k < n else "adversarial")


def point_details(data: ExplorerData, model: str, attack: str, eps: float, index: int) -> dict:
    """What the explorer shows for image `index`: x, x_adv (C, H, W), label, clean / adversarial prediction and
    confidence, whether the attack fooled the model, and the two map positions."""
    e = data.entry(model, attack, eps)
    n = len(data.x)
    if not 0 <= index < n:
        raise IndexError(f"index must be in [0, {n - 1}], got {index}")
    p_clean, p_adv = data.probs_clean[model][index], e["probs_adv"][index]
    k_clean, k_adv = int(p_clean.argmax()), int(p_adv.argmax())
    label = int(data.y[index])
    return {"index": index, "x": data.x[index], "x_adv": e["x_adv"][index], "label": label,
            "pred_clean": k_clean, "conf_clean": float(p_clean[k_clean]),
            "pred_adv": k_adv, "conf_adv": float(p_adv[k_adv]),
            "fooled": k_adv != label and k_clean == label, "changed": k_adv != k_clean,
            "xy_clean": tuple(map(float, e["coords"][index])), "xy_adv": tuple(map(float, e["coords"][n + index]))}


def fooled_indices(data: ExplorerData, model: str, attack: str, eps: float) -> np.ndarray:
    """Indices of images the model classifies correctly when clean and wrongly under the attack."""
    e = data.entry(model, attack, eps)
    return np.flatnonzero(((e["pred_clean"] == data.y) & (e["pred_adv"] != data.y)).numpy())
