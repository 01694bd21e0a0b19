"""Honest robustness evaluation: clean and robust accuracy, eps sweeps, transfer attacks, the original
AutoAttack, and the automated sanity checks of Carlini et al. (2019) and Croce & Hein (2020).

Every function takes plain tensors:
- `x`: (N, C, H, W) float in [0, 1] (any device: batches are moved to the model's device),
- `y`: (N,) int64 class indices,
- `attack`: a callable `attack(model, xb, yb) -> x_adv`, e.g. `attacks.make_attack("pgd", eps=0.3,
  alpha=0.0375, steps=20)`.

The threat model is always stated: `evaluate` returns a row with norm, eps, step size, steps, restarts and
which model generated the attack, and `sanity_checks` returns a `SanityReport` whose checks each say what
was measured, what was expected and whether it held (or that the check does not apply: never a fake pass).
The pieces live in `accuracies` (clean / robust / transfer accuracy and the shared helpers) and `sanity` (the
sanity checks); this module adds eps sweeps, AutoAttack and the results row, and re-exports the rest.
Floor 3: imports `accuracies`, `sanity`, `attacks`, `models`, `validate`.
"""
from __future__ import annotations

import logging
import math
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch
import torch.nn as nn

from .accuracies import (AttackFn, _channels_last, _check_budget, _check_data, _check_norm,  # noqa: F401
                         _device, _distance, _eval_mode, _generator, _in_channels_last, _single_step, accuracy,
                         default_alpha, predict, robust_accuracy, transfer_accuracy)
from .attacks import make_attack
from .models import _unwrap
from .sanity import Check, SanityReport, sanity_checks
from .validate import check_choice, check_eps, check_int, check_logits, check_positive

__all__ = ["predict", "accuracy", "robust_accuracy", "eps_sweep", "transfer_accuracy", "autoattack_accuracy",
           "AutoAttackResult", "sanity_checks", "SanityReport", "Check", "evaluate", "results_table",
           "format_table", "default_alpha", "SWEEP_ATTACKS"]

SWEEP_ATTACKS = ("fgsm", "pgd", "pgd_l2", "noise")
AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
              attack: str | Callable[[float], AttackFn] = "pgd", *, batch_size: int = 512, seed: int = 0,
              **attack_kwargs) -> pd.DataFrame:
    """Accuracy against one attack at several budgets: DataFrame with columns eps, accuracy, attack, n.

    attack: 'fgsm' (L-inf), 'pgd' (L-inf), 'pgd_l2' (L2; eps may exceed 1), 'noise' (random sign noise of
    size eps, L-inf; pass norm='l2' for Gaussian directions), or a callable eps -> attack(model, x, y).
    attack_kwargs go to the attack; PGD defaults: steps=20, alpha=2.5 * eps / steps at each eps (pass alpha
    to fix it). Each eps draws its random starts from a fresh generator seeded with `seed`.
    """
    _check_data(model, x, y)
    check_int(batch_size, "batch_size")
    check_int(seed, "seed", minimum=0)
    if not callable(attack):
        check_choice(attack, "attack", SWEEP_ATTACKS)
    if isinstance(eps_values, (int, float)) or not hasattr(eps_values, "__iter__"):
        raise TypeError(f"eps_values must be a sequence of budgets, e.g. [0, 0.1, 0.2, 0.3], got {eps_values!r}")
    eps_values = list(eps_values)
    if not eps_values:
        raise ValueError("eps_values is empty; pass at least one budget, e.g. [0, 0.1, 0.2, 0.3]")
    if attack in ("pgd", "fgsm") and str(attack_kwargs.get("norm", "linf")).lower() == "l2":
        raise ValueError(f"attack={attack!r} with norm='l2': {attack!r} is the L-inf attack here; for L2 use "
                         "attack='pgd_l2' (without norm), e.g. eps_sweep(model, x, y, [0.5, 1.0, 2.0], attack='pgd_l2')")
    norm = "l2" if attack == "pgd_l2" or (attack == "noise" and attack_kwargs.get("norm") == "l2") else "linf"
    eps_values = [_check_budget(e, norm, f"eps_values[{i}]") for i, e in enumerate(eps_values)]
    rows = []
    for e in eps_values:
        fn = attack(e) if callable(attack) else _sweep_attack(attack, e, seed, attack_kwargs)
        acc = robust_accuracy(model, x, y, fn, batch_size)
        rows.append({"eps": e, "accuracy": acc, "attack": getattr(attack, "__name__", attack), "n": x.shape[0]})
    return pd.DataFrame(rows)


def _sweep_attack(name: str, eps: float, seed: int, kwargs: dict) -> AttackFn:
    kwargs = dict(kwargs)
    if name == "fgsm":
        return make_attack("fgsm", eps=eps, **kwargs)
    if name == "noise":
        return make_attack("random_noise", eps=eps, generator=_generator(seed), **kwargs)
    steps = kwargs.pop("steps", 20)
    alpha = kwargs.pop("alpha", None) or default_alpha(eps, steps)
    norm = "l2" if name == "pgd_l2" else "linf"
    if kwargs.pop("norm", norm) != norm:
        raise ValueError(f"attack {name!r} is the {norm} attack; use 'pgd' for L-inf and 'pgd_l2' for L2")
    return make_attack("pgd", eps=eps, alpha=alpha, steps=steps, norm=norm, generator=_generator(seed), **kwargs)


# ----------------------------------------------------------------------------------------------------------
# AutoAttack (the original, Croce & Hein 2020, from the PyPI package `pyautoattack`)


@dataclass
class AutoAttackResult:
    """What one AutoAttack run measured. accuracy: robust accuracy of the evaluated subset, re-scored on
    the returned x_adv; attacks_run: the attacks that actually ran (AutoAttack stops once nothing is left
    to break); accuracy_after: robust accuracy after each of them (from AutoAttack's log)."""
    accuracy: float
    clean_accuracy: float
    n: int
    eps: float
    norm: str
    version: str
    seed: int
    attacks: list[str]
    attacks_run: list[str]
    accuracy_after: dict[str, float]
    max_perturbation: float
    seconds: float
    correct: torch.Tensor = field(repr=False)      # (n,) bool
    indices: torch.Tensor = field(repr=False)      # (n,) int64 positions in x of the evaluated subset
    warnings: list[str] = field(default_factory=list)


class _LogRecords(logging.Handler):
    """Collects AutoAttack's log records (and echoes them when verbose)."""

    def __init__(self, verbose: bool):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.verbose:
            print(f"[autoattack] {record.getMessage()}", flush=True)


@contextmanager
def _capture_autoattack_log(verbose: bool) -> Iterator[_LogRecords]:
    logger = logging.getLogger("auto-attack")
    handler = _LogRecords(verbose)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@_in_channels_last
def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "Linf",
                        version: str = "standard", n: int | None = None, seed: int = 0, *,
                        attacks: Sequence[str] | None = None, batch_size: int = 500, verbose: bool = False,
                        return_details: bool = False) -> float | AutoAttackResult:
    """Robust accuracy in [0, 1] under the original AutoAttack (package `pyautoattack`).

    x: (N, C, H, W) float in [0, 1]; y: (N,) int64; eps > 0 (L-inf: at most 1); norm 'Linf' | 'L2' | 'L1'
    (any case); version 'standard' (APGD-CE, APGD-T, FAB-T, Square: the headline number), 'plus', 'rand',
    or 'custom' with `attacks` (e.g. ['apgd-ce', 'apgd-t'], run with the standard version's settings).
    n: evaluate a random subset of n examples (drawn with `seed`; None = all). Runs on the model's device, seeded with `seed`; the global RNG state
    is restored afterwards. AutoAttack's log is silent unless `verbose`; its warnings (e.g. "it seems to be
    a randomized defense") are re-issued as Python warnings. return_details: return an AutoAttackResult
    (attacks run, accuracy after each, per-example correctness, subset indices) instead of the float.
    """
    from pyautoattack import AutoAttack

    _check_data(model, x, y)
    if not isinstance(norm, str) or norm.lower() not in AUTOATTACK_NORMS:
        raise ValueError(f"unknown norm {norm!r}; allowed: 'Linf', 'L2', 'L1'")
    aa_norm = AUTOATTACK_NORMS[norm.lower()]
    eps = check_eps(eps) if aa_norm == "Linf" else check_positive(eps, "eps")
    if eps == 0:
        raise ValueError("eps must be > 0 for AutoAttack, got 0 (at eps 0 robust accuracy is the clean accuracy)")
    check_choice(version, "version", AUTOATTACK_VERSIONS)
    if (attacks is None) != (version != "custom"):
        raise ValueError("pass attacks=[...] exactly when version='custom' "
                         f"(got version={version!r}, attacks={attacks!r})")
    if attacks is not None:
        if isinstance(attacks, str) or not attacks:
            raise ValueError(f"attacks must be a non-empty list such as ['apgd-ce', 'apgd-t'], got {attacks!r}")
        for a in attacks:
            check_choice(a, "AutoAttack attack", AUTOATTACK_ATTACKS)
    check_int(seed, "seed", minimum=0)
    check_int(batch_size, "batch_size")
    indices = _subset(x.shape[0], n, seed)

    device = _device(model)
    xs, ys = x[indices].to(device), y[indices].to(device)
    with torch.no_grad(), _eval_mode(model):   # AutoAttack assumes (B, C) logits: say so before it starts
        check_logits(model(xs[:2]), min(2, xs.shape[0]))
    rng_devices = [device] if device.type == "cuda" else []  # device-ok
    start = time.perf_counter()
    with _eval_mode(model), torch.random.fork_rng(devices=rng_devices), _capture_autoattack_log(verbose) as log:
        # 'custom' runs the listed attacks with the standard version's settings (1 APGD restart, 9 target
        # classes, 5000 Square queries): built as 'standard', then given the list
        adversary = AutoAttack(model, device=device, eps=eps, norm=aa_norm, seed=seed,
                               version="standard" if version == "custom" else version)
        if version == "custom":
            adversary.version, adversary.attacks_to_run = "custom", list(attacks)
        x_adv, _ = adversary.run_standard_evaluation(xs, ys, batch_size=batch_size)
    seconds = time.perf_counter() - start

    correct = (predict(model, x_adv, batch_size) == ys).cpu()
    clean = (predict(model, xs, batch_size) == ys).cpu()
    messages = [r.getMessage() for r in log.records]
    after = {}   # AutoAttack logs this line once an attack has run on every remaining robust example
    for m in messages:
        match = re.match(r"robust accuracy after (\S+): ([\d.]+)%", m)
        if match:
            after[match.group(1).lower()] = float(match.group(2)) / 100
    warned = [r.getMessage() for r in log.records if r.levelno >= logging.WARNING]
    for w in warned:
        warnings.warn(f"AutoAttack: {w}", RuntimeWarning, stacklevel=2)
    dist = _distance(x_adv, xs, aa_norm.lower())
    result = AutoAttackResult(
        accuracy=correct.float().mean().item(), clean_accuracy=clean.float().mean().item(), n=len(indices),
        eps=eps, norm=aa_norm, version=version, seed=seed, attacks=list(adversary.attacks_to_run),
        attacks_run=list(after), accuracy_after=after, max_perturbation=float(dist.max()), seconds=seconds,
        correct=correct, indices=indices, warnings=warned)
    return result if return_details else result.accuracy


def _subset(total: int, n: int | None, seed: int) -> torch.Tensor:
    """Positions of a seeded random subset of n out of `total` (all of them, in order, for n=None)."""
    if n is None:
        return torch.arange(total)
    check_int(n, "n")
    if n > total:
        raise ValueError(f"n must be at most the number of examples ({total}), got {n}")
    return torch.randperm(total, generator=_generator(seed))[:n]


# ----------------------------------------------------------------------------------------------------------
# One evaluation row and the results table

TABLE_COLUMNS = ["model", "norm", "eps", "alpha", "steps", "restarts", "attack_source", "n", "clean", "fgsm",
                 "pgd", "autoattack", "n_autoattack", "transfer", "transfer_source"]
ACCURACY_COLUMNS = ("clean", "fgsm", "pgd", "autoattack", "transfer")


@_in_channels_last
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float | None = None,
             steps: int = 20, restarts: int = 1, n_autoattack: int = 0, source: nn.Module | None = None,
             batch_size: int = 512, seed: int = 0, *, norm: str = "linf", name: str | None = None,
             source_name: str | None = None, per_image: bool = False) -> dict:
    """One row of the results table, with its threat model stated.

    Accuracies in [0, 1]: clean; fgsm (single step; FGM for L2); pgd (PGD-`steps`, `restarts` restarts,
    alpha = 2.5 * eps / steps unless given, white-box: generated on the model itself); autoattack (original
    AutoAttack, standard version, on a seeded subset of n_autoattack examples; NaN when 0); transfer (the
    same PGD generated on `source` and scored on the model; NaN without a source).
    per_image: also return row["pgd_correct"], the (N,) bool per-image outcome of that PGD (CPU), so that a
    later comparison on a subset (e.g. AutoAttack's) reuses this run instead of attacking again.
    x: (N, C, H, W) float in [0, 1]; y: (N,) int64.
    """
    _check_data(model, x, y)
    if not isinstance(per_image, bool):
        raise TypeError(f"per_image must be True or False, got {per_image!r}")
    norm = _check_norm(norm)
    eps = _check_budget(eps, norm)
    check_int(steps, "steps")
    check_int(restarts, "restarts")
    check_int(n_autoattack, "n_autoattack", minimum=0)
    check_int(batch_size, "batch_size")
    check_int(seed, "seed", minimum=0)
    alpha = default_alpha(eps, steps) if alpha is None else check_positive(alpha, "alpha")
    if source is not None:
        _check_data(source, x, y, "source")
    attack = make_attack("pgd", eps=eps, alpha=alpha, steps=steps, restarts=restarts, norm=norm,
                         generator=_generator(seed))
    row = {"model": name or type(_unwrap(model)).__name__, "norm": norm, "eps": eps, "alpha": alpha,
           "steps": steps, "restarts": restarts, "attack_source": "white-box (the model itself)",
           "n": x.shape[0], "clean": accuracy(model, x, y, batch_size),
           "fgsm": robust_accuracy(model, x, y, _single_step(eps, norm), batch_size), "pgd": math.nan,
           "autoattack": math.nan, "n_autoattack": n_autoattack, "transfer": math.nan, "transfer_source": None}
    row["pgd"], pgd_correct = robust_accuracy(model, x, y, attack, batch_size, return_correct=True)
    if per_image:
        row["pgd_correct"] = pgd_correct
    if n_autoattack and eps > 0:
        row["autoattack"] = autoattack_accuracy(model, x, y, eps, norm=AUTOATTACK_NORMS[norm], n=n_autoattack,
                                                seed=seed, batch_size=batch_size)
    if source is not None:
        transfer = make_attack("pgd", eps=eps, alpha=alpha, steps=steps, restarts=restarts, norm=norm,
                               generator=_generator(seed))
        row["transfer"] = transfer_accuracy(source, model, x, y, transfer, batch_size)
        row["transfer_source"] = source_name or type(_unwrap(source)).__name__
    return row


def results_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of `evaluate` -> DataFrame, threat-model columns first, then the accuracies."""
    rows = list(rows)
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be a non-empty list of dicts returned by evaluate()")
    frame = pd.DataFrame(rows)
    return frame[[c for c in TABLE_COLUMNS if c in frame] + [c for c in frame if c not in TABLE_COLUMNS]]


def format_table(rows: Sequence[dict] | pd.DataFrame, ci: bool = True) -> str:
    """A plain-text table for the terminal: accuracies as percentages, missing values as '-'.

    ci: follow each accuracy by the half-width of its 95 % interval in points ('45.1% ±3.1'; binomial,
    normal approximation, n = the row's `n`, `n_autoattack` for AutoAttack): the sampling error of a
    small evaluation set."""
    from .course.stats import half_width_95
    frame = rows if isinstance(rows, pd.DataFrame) else results_table(rows)
    if frame.empty:
        raise ValueError("rows is empty: nothing to format")

    def cell(column: str, value, n=None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column in ACCURACY_COLUMNS:
            if ci and isinstance(n, (int, float)) and not math.isnan(n) and n >= 1 and 0 <= value <= 1:
                return f"{100 * value:.1f}% ±{100 * half_width_95(float(value), int(n)):.1f}"
            return f"{100 * value:.1f}%"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    columns = list(frame.columns)

    def size(column: str, record: dict):
        return record.get("n_autoattack" if column == "autoattack" else "n")

    body = [[cell(c, v, size(c, dict(zip(columns, r)))) for c, v in zip(columns, r)]
            for r in frame.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(s.rjust(w) if columns[i] in ACCURACY_COLUMNS else s.ljust(w)
                         for i, (s, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule] + [line(r) for r in body])
