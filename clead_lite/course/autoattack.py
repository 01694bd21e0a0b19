"""The original AutoAttack (Croce & Hein 2020, the PyPI package `pyautoattack`), run so that its number can be
trusted and repeated: a seeded subset of the images, the global RNG state restored afterwards, its log collected
(the accuracy after each attack) instead of printed, its warnings turned into Python warnings, and the accuracy
re-scored on the images it returns. `clead_lite.evaluation.evaluate` gives clean, FGSM, PGD and transfer accuracy;
the command line, notebook 06 (through `aa_cache`) and `benchmarks/run_results.py` add this column to its row.
"""
from __future__ import annotations

import logging
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ..evaluation import channels_last_weights, distance, predict
from ..models import check_batch, device_of, eval_mode
from ..validate import check_choice, check_eps, check_int, check_logits, check_positive

__all__ = ["autoattack_accuracy", "AutoAttackResult", "random_subset", "AUTOATTACK_NORMS"]

AUTOATTACK_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")
AUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


@dataclass
class AutoAttackResult:
    """What one AutoAttack run measured. accuracy: the subset's robust accuracy, re-scored on the returned x_adv;
    attacks_run: the attacks that ran (AutoAttack stops once nothing is left to break); accuracy_after: robust
    accuracy after each of them, from AutoAttack's log."""
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


def random_subset(total: int, n: int | None, seed: int) -> torch.Tensor:
    """Positions of a seeded random subset of n out of `total` (all, in order, for n=None): AutoAttack's images."""
    if n is None:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


@contextmanager
def _autoattack_log(verbose: bool) -> Iterator[list[logging.LogRecord]]:
    """AutoAttack's log records, collected instead of printed (and echoed when verbose)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            if verbose:
                print(f"[autoattack] {record.getMessage()}", flush=True)

    logger, handler = logging.getLogger("auto-attack"), Collect(logging.DEBUG)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "Linf",
                        version: str = "standard", n: int | None = None, seed: int = 0, *,
                        attacks: Sequence[str] | None = None, batch_size: int = 500, verbose: bool = False,
                        return_details: bool = False) -> float | AutoAttackResult:
    """Robust accuracy in [0, 1] under the original AutoAttack. eps > 0 (L-inf: at most 1); norm 'Linf' | 'L2' | 'L1'
    (any case); version 'standard' (APGD-CE, APGD-T, FAB-T, Square: the headline number), 'plus', 'rand', or 'custom'
    with `attacks` (e.g. ['apgd-ce', 'apgd-t'], run with the standard version's settings). n: a random subset of n
    examples (`random_subset`; None = all). Seeded with `seed`, on the model's device; the global RNG state is
    restored afterwards. AutoAttack's log is silent unless `verbose`; its warnings (e.g. "it seems to be a randomized
    defense") become Python warnings. return_details: an AutoAttackResult instead of the float."""
    check_batch(model, x, y)
    check_int(batch_size, "batch_size")
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
    if attacks is not None and (isinstance(attacks, str) or not attacks):
        raise ValueError(f"attacks must be a non-empty list such as ['apgd-ce', 'apgd-t'], got {attacks!r}")
    for a in attacks or ():
        check_choice(a, "AutoAttack attack", AUTOATTACK_ATTACKS)
    check_int(seed, "seed", minimum=0)
    if n is not None and check_int(n, "n") > x.shape[0]:
        raise ValueError(f"n must be at most the number of examples ({x.shape[0]}), got {n}")
    from pyautoattack import AutoAttack
    indices, device = random_subset(x.shape[0], n, seed), device_of(model)
    xs, ys = x[indices].to(device), y[indices].to(device)
    with torch.no_grad(), eval_mode(model):   # AutoAttack assumes (B, C) logits: say so before it starts
        check_logits(model(xs[:2]), min(2, xs.shape[0]))
    rng_devices = [device] if device.type == "cuda" else []  # device-ok
    start = time.perf_counter()
    with channels_last_weights(model):
        with eval_mode(model), torch.random.fork_rng(devices=rng_devices), _autoattack_log(verbose) as log:
            # 'custom': built as 'standard' (1 APGD restart, 9 target classes, 5000 Square queries), then given the list
            adversary = AutoAttack(model, device=device, eps=eps, norm=aa_norm, seed=seed,
                                   version="standard" if version == "custom" else version)
            if version == "custom":
                adversary.version, adversary.attacks_to_run = "custom", list(attacks)
            x_adv, _ = adversary.run_standard_evaluation(xs, ys, batch_size=batch_size)
        seconds = time.perf_counter() - start
        correct = (predict(model, x_adv, batch_size) == ys).cpu()
        clean = (predict(model, xs, batch_size) == ys).cpu()
    # AutoAttack logs this line once an attack has run on every remaining robust example
    found = [re.match(r"robust accuracy after (\S+): ([\d.]+)%", r.getMessage()) for r in log]
    after = {m.group(1).lower(): float(m.group(2)) / 100 for m in found if m}
    warned = [r.getMessage() for r in log if r.levelno >= logging.WARNING]
    for w in warned:
        warnings.warn(f"AutoAttack: {w}", RuntimeWarning, stacklevel=2)
    result = AutoAttackResult(
        accuracy=correct.float().mean().item(), clean_accuracy=clean.float().mean().item(), n=len(indices),
        eps=eps, norm=aa_norm, version=version, seed=seed, attacks=list(adversary.attacks_to_run),
        attacks_run=list(after), accuracy_after=after, seconds=seconds, correct=correct, indices=indices,
        max_perturbation=float(distance(x_adv, xs, aa_norm.lower()).max()), warnings=warned)
    return result if return_details else result.accuracy
