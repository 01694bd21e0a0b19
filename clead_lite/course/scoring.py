"""Extra robustness columns of one trained checkpoint, with per-image correctness for paired statistics:
APGD-CE + APGD-T (AutoAttack's `custom` version with those two), Square alone, and a PGD eps curve.

    score = score_model(model, x, y, eps=0.3, columns=("apgd", "square", "eps_curve"))
    score["apgd"], score["apgd_correct"]            # accuracy in [0, 1], (n,) list of 0 / 1

Used by benchmarks/run_results.py and benchmarks/budget_curve.py.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn as nn

from .autoattack import autoattack_accuracy
from ..evaluation import eps_sweep

__all__ = ["SCORE_COLUMNS", "EPS_FRACTIONS", "score_model", "load_for_scoring"]

SCORE_COLUMNS = ("apgd", "square", "eps_curve")
EPS_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.25)    # the eps curve, as fractions of the threat model's eps


def score_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                columns: Sequence[str] = SCORE_COLUMNS, seed: int = 0, eps_fractions: Sequence[float] = EPS_FRACTIONS,
                pgd_steps: int = 20, batch_size: int = 500) -> dict:
    """The columns of one model on all of x (in order): a JSON-ready dict.

    x: (N, C, H, W) float in [0, 1], y: (N,) int64; eps: the L-inf budget. 'apgd': APGD-CE then APGD-T
    (AutoAttack's standard settings: 1 restart, 9 target classes), per-image correctness in 'apgd_correct';
    'square': Square alone (5,000 queries), 'square_correct'; 'eps_curve': PGD-`pgd_steps` (1 restart) at
    eps * each fraction, a list of {eps, accuracy}. Seconds per column in 'seconds'.
    """
    unknown = [c for c in columns if c not in SCORE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown score column(s) {unknown}; allowed: {', '.join(SCORE_COLUMNS)}")
    out: dict = {"n_scored": int(x.shape[0]), "eps": float(eps), "seed": seed, "seconds": {}}
    for column, attacks in (("apgd", ["apgd-ce", "apgd-t"]), ("square", ["square"])):
        if column in columns:
            t = time.perf_counter()
            res = autoattack_accuracy(model, x, y, eps, version="custom", attacks=attacks, seed=seed,
                                      batch_size=batch_size, return_details=True)
            out[column] = res.accuracy
            out[f"{column}_correct"] = [int(v) for v in res.correct.tolist()]
            out["seconds"][column] = time.perf_counter() - t
    if "eps_curve" in columns:
        t = time.perf_counter()
        budgets = [min(1.0, eps * f) for f in eps_fractions]
        frame = eps_sweep(model, x, y, budgets, "pgd", seed=seed, steps=pgd_steps, batch_size=batch_size)
        out["eps_curve"] = [{"eps": float(r.eps), "accuracy": float(r.accuracy)} for r in frame.itertuples()]
        out["eps_curve_attack"] = f"PGD-{pgd_steps}, alpha 2.5 eps / {pgd_steps}, 1 restart"
        out["seconds"]["eps_curve"] = time.perf_counter() - t
    return out


def load_for_scoring(checkpoint: str, n_test: int, dataset: str | None = None, device=None):
    """(model in eval mode on `device`, x, y, state): a checkpoint written by `python -m clead_lite train` and
    the images `evaluate --n n_test` scores: the first n_test of the test split (`data.test_images`, the one
    convention of the course), so that a row's scores and its evaluation columns share their images."""
    from .checkpoints import load_trained_model
    from .datasets import test_images
    from .profiles import get_device
    model, state = load_trained_model(checkpoint, get_device(device))
    x, y = test_images(dataset or state.get("dataset"), n_test)
    return model, x, y, state
