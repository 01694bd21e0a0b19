"""The automated sanity checks of an evaluation (Carlini et al. 2019; Croce & Hein 2020): `sanity_checks`
returns a `SanityReport` whose checks each say what was measured, what was expected and whether it held (or
that the check does not apply: never a fake pass). Notebook 06 shows them catching a broken evaluation.
Floor 2: imports `accuracies`, `attacks`, `validate`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pandas as pd
import torch
import torch.nn as nn

from .accuracies import (AttackFactory, AttackFn, _BALL_ATOL, _BALL_RTOL, _Run, _check_budget, _check_data,
                         _check_fraction, _check_norm, _generator, _in_channels_last, _run_attack, _single_step,
                         accuracy, default_alpha)
from .attacks import make_attack
from .models import _unwrap
from .validate import check_int, check_positive

__all__ = ["sanity_checks", "SanityReport", "Check"]


# ----------------------------------------------------------------------------------------------------------
# Sanity checks

@dataclass
class Check:
    """One sanity check: passed is True / False, or None when the check does not apply."""
    name: str
    passed: bool | None
    detail: str
    numbers: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "n/a" if self.passed is None else ("pass" if self.passed else "FAIL")


@dataclass
class SanityReport:
    """The sanity checks of one evaluation. passed: every applicable check passed."""
    checks: list[Check]
    settings: dict

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.passed is not None)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {', '.join(c.name for c in self.checks)}")

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"check": c.name, "status": c.status, "passed": c.passed, "detail": c.detail}
                             for c in self.checks])

    def to_dict(self) -> dict:
        return {"passed": self.passed, "settings": dict(self.settings), "checks": [asdict(c) for c in self.checks]}

    def __str__(self) -> str:
        s = self.settings
        head = (f"Sanity checks: {s['attack']}, norm {s['norm']}, eps {s['eps']:.4g}, {s['steps']} steps, "
                f"{s['restarts']} restart(s), n={s['n']}, tolerance {s['tolerance']} example(s) -> "
                f"{'ALL PASSED' if self.passed else f'{len(self.failed)} FAILED'}")
        width = max(len(c.name) for c in self.checks)
        lines = [head] + [f"  {c.status:<4}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # notebooks show the table
        return self.to_frame().to_html(index=False)


def _pgd_factory(norm: str, eps: float, alpha: float, seed: int) -> AttackFactory:
    """PGD with the step size proportional to eps (alpha at the main eps) and a fresh seeded generator per
    run, so that runs with different steps or restarts start from the same random points."""
    ratio = alpha / eps if eps > 0 else 0.0

    def factory(e: float, steps: int, restarts: int) -> AttackFn:
        a = ratio * e if ratio * e > 0 else default_alpha(e, steps)
        return make_attack("pgd", eps=e, alpha=a, steps=steps, norm=norm, restarts=restarts,
                           generator=_generator(seed))

    factory.__name__ = "PGD"
    return factory


@_in_channels_last
def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", *,
                  alpha: float | None = None, steps: int = 20, restarts: int = 1, source: nn.Module | None = None,
                  undefended: bool = False, attack: AttackFactory | None = None,
                  sweep: Sequence[float] | None = None, large_eps: float | None = None,
                  more_restarts: int | None = None, tolerance: int = 2, large_eps_max: float = 0.05,
                  undefended_max: float = 0.05, noise_ratio: float = 0.5, batch_size: int = 512,
                  seed: int = 0) -> SanityReport:
    """Run the automated sanity checks (Carlini et al. 2019; Croce & Hein 2020) of one evaluation.

    The attack under test is PGD (norm, eps, alpha = 2.5 * eps / steps unless given, steps, restarts) or
    `attack`, a factory attack(eps, steps, restarts) -> callable(model, x, y) -> x_adv. Checks:
    - eps0_equals_clean: the attack at eps 0 gives exactly the clean accuracy;
    - monotone_in_eps: accuracy does not rise along `sweep` (default 0, eps/4, eps/2, 3eps/4, eps);
    - large_eps_breaks: at `large_eps` (1 for L-inf, the [0, 1]-cube diameter sqrt(C*H*W) for L2: any image
      is reachable) accuracy <= large_eps_max (0.05);
    - more_steps_not_weaker: steps/4, steps, 2*steps never raise accuracy;
    - more_restarts_not_weaker: `more_restarts` (default restarts + 2) never raise accuracy;
    - attack_beats_single_step: accuracy <= FGSM's (FGM for L2);
    - whitebox_le_transfer: accuracy <= that of the same attack made on `source` (n/a without a source);
    - noise_much_weaker: random noise of the same size removes at most `noise_ratio` of what the attack
      removes from the clean accuracy, and the attack removes more than `tolerance` examples;
    - within_ball: every x_adv of every run here is finite, in [0, 1] and within eps (float slack 1e-6);
    - undefended_near_zero: with undefended=True, accuracy <= undefended_max (n/a otherwise: it is a
      check for models without a defence, at the dataset's standard eps).
    Comparisons between attacks allow `tolerance` examples (default 2) of noise; eps 0 must match exactly.
    x: (N, C, H, W) float in [0, 1]; y: (N,) int64.
    """
    _check_data(model, x, y)
    norm = _check_norm(norm)
    eps = _check_budget(eps, norm)
    if eps == 0:
        raise ValueError("eps must be > 0 for the sanity checks (eps 0 is one of the checks)")
    check_int(steps, "steps")
    check_int(restarts, "restarts")
    check_int(tolerance, "tolerance", minimum=0)
    check_int(batch_size, "batch_size")
    check_int(seed, "seed", minimum=0)
    alpha = default_alpha(eps, steps) if alpha is None else check_positive(alpha, "alpha")
    for name, value in (("large_eps_max", large_eps_max), ("undefended_max", undefended_max),
                        ("noise_ratio", noise_ratio)):
        _check_fraction(value, name)
    if not isinstance(undefended, bool):
        raise TypeError(f"undefended must be True or False, got {undefended!r}")
    if source is not None:
        _check_data(source, x, y, "source")
    if attack is not None and not callable(attack):
        raise TypeError("attack must be None (PGD) or a factory attack(eps, steps, restarts) -> "
                        f"callable(model, x, y) -> x_adv, got {type(attack).__name__}")
    more_restarts = restarts + 2 if more_restarts is None else check_int(more_restarts, "more_restarts")
    if more_restarts <= restarts:
        raise ValueError(f"more_restarts must be > restarts ({restarts}), got {more_restarts}")
    if large_eps is None:
        large_eps = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
    large_eps = _check_budget(large_eps, norm, "large_eps")
    if large_eps <= eps:
        raise ValueError(f"large_eps must be > eps ({eps}), got {large_eps}")
    sweep = sorted({0.0, eps / 4, eps / 2, 3 * eps / 4, eps} if sweep is None else
                   {_check_budget(e, norm, f"sweep[{i}]") for i, e in enumerate(sweep)} | {0.0, eps})

    factory = attack or _pgd_factory(norm, eps, alpha, seed)
    name = getattr(factory, "__name__", type(factory).__name__)
    n = x.shape[0]
    tol = tolerance / n
    runs: dict[str, tuple[_Run, float]] = {}      # label -> (run, its eps): every x_adv made on `model`

    def run(label: str, fn: AttackFn, e: float, src: nn.Module = model) -> float:
        result = _run_attack(fn, src, model, x, y, batch_size, norm)
        runs[label] = (result, e)
        return result.accuracy

    clean = accuracy(model, x, y, batch_size)
    sweep_acc = [run(f"{name} eps={e:.4g}", factory(e, steps, restarts), e) for e in sweep]
    acc = sweep_acc[sweep.index(eps)]
    checks: list[Check] = []

    # 1. attack at eps 0 equals clean accuracy (same inputs: exactly)
    acc0 = sweep_acc[0]
    checks.append(Check("eps0_equals_clean", acc0 == clean,
                        f"eps 0: {acc0:.2%} vs clean {clean:.2%} (must be equal)", {"eps0": acc0, "clean": clean}))

    # 2. accuracy non-increasing in eps
    rises = [(sweep[i], sweep[i + 1]) for i in range(len(sweep) - 1) if sweep_acc[i + 1] > sweep_acc[i] + tol]
    curve = ", ".join(f"{e:.3g}: {a:.1%}" for e, a in zip(sweep, sweep_acc))
    checks.append(Check("monotone_in_eps", not rises,
                        f"{curve}" + (f"; rises between eps {rises}" if rises else " (non-increasing)"),
                        {f"eps={e:.4g}": a for e, a in zip(sweep, sweep_acc)}))

    # 3. a very large eps drives accuracy to about 0
    acc_large = run(f"{name} eps={large_eps:.4g}", factory(large_eps, steps, restarts), large_eps)
    checks.append(Check("large_eps_breaks", acc_large <= large_eps_max,
                        f"eps {large_eps:.3g}: {acc_large:.2%} (must be <= {large_eps_max:.0%}: any image is "
                        "reachable)", {"large_eps": large_eps, "accuracy": acc_large}))

    # 4. more steps never raise accuracy
    step_list = sorted({max(1, steps // 4), steps, 2 * steps})
    step_acc = [acc if s == steps else run(f"{name} steps={s}", factory(eps, s, restarts), eps) for s in step_list]
    rises = [(step_list[i], step_list[i + 1]) for i in range(len(step_list) - 1)
             if step_acc[i + 1] > step_acc[i] + tol]
    checks.append(Check("more_steps_not_weaker", not rises,
                        ", ".join(f"{s} steps: {a:.1%}" for s, a in zip(step_list, step_acc)) +
                        (f"; rises {rises}" if rises else ""), {f"steps={s}": a for s, a in zip(step_list, step_acc)}))

    # 5. more restarts never raise accuracy
    acc_more = run(f"{name} restarts={more_restarts}", factory(eps, steps, more_restarts), eps)
    checks.append(Check("more_restarts_not_weaker", acc_more <= acc + tol,
                        f"{restarts} restart(s): {acc:.1%}, {more_restarts}: {acc_more:.1%}",
                        {f"restarts={restarts}": acc, f"restarts={more_restarts}": acc_more}))

    # 6. the iterative attack is at least as strong as the single-step one
    single = "FGSM" if norm == "linf" else "FGM-L2"
    acc_single = run(single, _single_step(eps, norm), eps)
    checks.append(Check("attack_beats_single_step", acc <= acc_single + tol,
                        f"{name} {acc:.1%} vs {single} {acc_single:.1%} (must be <=)",
                        {"attack": acc, "single_step": acc_single}))

    # 7. white-box at least as strong as transfer from a source model
    if source is None:
        checks.append(Check("whitebox_le_transfer", None, "no source model given", {}))
    else:
        acc_tr = run(f"{name} from source", factory(eps, steps, restarts), eps, src=source)
        checks.append(Check("whitebox_le_transfer", acc <= acc_tr + tol,
                            f"white-box {acc:.1%} vs transfer from source {acc_tr:.1%} (must be <=)",
                            {"whitebox": acc, "transfer": acc_tr}))

    # 8. random noise of the same size is much weaker than the attack
    acc_noise = run("random noise", make_attack("random_noise", eps=eps, norm=norm, generator=_generator(seed)), eps)
    drop_attack, drop_noise = clean - acc, clean - acc_noise
    ok = drop_attack > tol and drop_noise <= noise_ratio * drop_attack
    checks.append(Check("noise_much_weaker", ok,
                        f"clean {clean:.1%}, noise {acc_noise:.1%}, {name} {acc:.1%}: noise removes "
                        f"{drop_noise:.1%}, the attack {drop_attack:.1%} (noise must remove <= {noise_ratio:.0%} of "
                        f"it, the attack > {tolerance} examples)",
                        {"clean": clean, "noise": acc_noise, "attack": acc}))

    # 9. every x_adv finite, in [0, 1] and in the eps ball
    outside = []
    worst = 0.0
    for label, (r, e) in runs.items():
        slack = _BALL_ATOL + (_BALL_RTOL * e if norm == "l2" else 0.0)
        worst = max(worst, r.max_distance - e)
        if r.n_nonfinite or r.min_value < 0 or r.max_value > 1 or r.max_distance > e + slack:
            outside.append(f"{label}: max dist {r.max_distance:.4g} (eps {e:.4g}), values in "
                           f"[{r.min_value:.3g}, {r.max_value:.3g}], {r.n_nonfinite} non-finite")
    checks.append(Check("within_ball", not outside,
                        (f"{len(runs)} runs, all x_adv finite, in [0, 1] and within eps" if not outside else
                         "; ".join(outside)), {"runs": len(runs), "max_excess": worst}))

    # 10. an undefended model scores about 0
    if undefended:
        checks.append(Check("undefended_near_zero", acc <= undefended_max,
                            f"{name} {acc:.1%} (an undefended model must be <= {undefended_max:.0%})",
                            {"attack": acc}))
    else:
        checks.append(Check("undefended_near_zero", None, "model not flagged undefended", {}))

    settings = {"attack": name, "norm": norm, "eps": eps, "alpha": alpha if attack is None else None,
                "steps": steps, "restarts": restarts, "n": n, "tolerance": tolerance, "seed": seed,
                "source": None if source is None else type(_unwrap(source)).__name__, "clean": clean,
                "accuracy": acc}
    return SanityReport(checks, settings)
