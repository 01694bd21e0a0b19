"""Honest robustness evaluation: clean, robust and transfer accuracy; eps sweeps; the sanity checks of Carlini et al.
(2019) and Croce & Hein (2020); `evaluate`, one results row that states its threat model (the course adds the original
AutoAttack's column to it: `clead_lite.course.autoattack`).

x: (N, C, H, W) float in [0, 1] on any device (batches move to the model's device); y: (N,) int64 class indices;
attack: a callable attack(model, xb, yb) -> x_adv, e.g. `attacks.make_attack("pgd", eps=0.3, alpha=0.0375,
steps=20)`. Arguments are checked once, where you call; the loops over batches then trust them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch
import torch.nn as nn

from .attacks import make_attack
from .models import check_batch, device_of, eval_mode, unwrap
from .validate import (check_adversarial, check_attack, check_budget, check_choice, check_int, check_logits,
                       check_nonnegative, check_positive)

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
AttackFactory = Callable[[float, int, int], AttackFn]   # (eps, steps, restarts) -> attack(model, x, y)

__all__ = ["predict", "accuracy", "robust_accuracy", "transfer_accuracy", "eps_sweep", "sanity_checks",
           "SanityReport", "Check", "evaluate", "default_alpha", "distance", "channels_last_weights", "SWEEP_ATTACKS"]

SWEEP_ATTACKS = ("fgsm", "pgd", "pgd_l2", "noise")
BALL_ATOL = 1e-6        # float32 slack when checking |x_adv - x| <= eps
BALL_RTOL = 1e-5        # relative slack for the L2 norm (a sum of 784+ squares)


# Argument checks: called once by each public function
def _check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1,
                  name: str = "model") -> None:
    check_batch(model, x, y, name=name)
    check_int(batch_size, "batch_size")


def _check_norm(norm: str) -> str:
    if not isinstance(norm, str):
        raise TypeError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return check_choice(norm.lower(), "norm", ("linf", "l2"))


# Small helpers
def default_alpha(eps: float, steps: int) -> float:
    """PGD step size 2.5 * eps / steps (Madry et al. 2018): the steps can cross the ball 2.5 times.
    eps = 0 gets 1/255 (an eps-0 attack returns x unchanged; the step size only has to be valid)."""
    return 2.5 * eps / steps if eps > 0 else 1 / 255


def _generator(seed: int) -> torch.Generator:
    """A CPU generator: the attacks draw from it on the CPU and move the draws to the data's device."""
    return torch.Generator().manual_seed(seed)


def distance(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """(B,) per-example distance |x_adv - x| in norm 'linf', 'l2' or 'l1'."""
    d = (x_adv - x).flatten(1).float()
    return d.abs().amax(1) if norm == "linf" else d.norm(p=2 if norm == "l2" else 1, dim=1)


def _single_step(eps: float, norm: str) -> AttackFn:
    """FGSM for L-inf; for L2 its counterpart, one normalised-gradient step of length eps (FGM)."""
    if norm == "linf":
        return make_attack("fgsm", eps=eps)
    return make_attack("pgd", eps=eps, alpha=max(eps, 1e-12), steps=1, norm="l2", random_start=False)


@contextmanager
def channels_last_weights(model: nn.Module) -> Iterator[None]:
    """4-D weights in the channels_last layout for the duration, each restored afterwards; values unchanged (outputs
    agree to 1e-7), but on the CPU oneDNN runs SmallCNN's forward 1.8x and forward + backward 1.3x faster, which
    AutoAttack's 5,000 Square queries feel (benchmarks/bench_eval_layout.py). Nested use converts nothing twice."""
    def channels_last_strides(p: torch.Tensor) -> tuple[int, ...]:
        _, c, h, w = p.shape
        return (h * w * c, 1, w * c, c)
    # compared by strides, not is_contiguous(memory_format=...): a (O, 1, k, k) kernel counts as channels_last
    # either way, but its strides decide the layout oneDNN picks for the first convolution and all after it
    converted = [p for p in model.parameters() if p.dim() == 4 and p.stride() != channels_last_strides(p)]
    layouts = [p.data for p in converted]
    for p in converted:
        p.data = torch.empty_like(p.data, memory_format=torch.channels_last).copy_(p.data)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, data in zip(converted, layouts):
                data.copy_(p.data)   # the same values (evaluation does not change weights), original layout
                p.data = data


# Accuracy: one forward pass, or one attack run with its per-example outcomes
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device, preds = device_of(model), []
    with torch.no_grad(), eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            preds.append(check_logits(model(xb), xb.shape[0]).argmax(1).to(x.device))
    return torch.cat(preds)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    return (_predict(model, x, batch_size) == y).float().mean().item()


@dataclass
class _Run:
    """What one attack run over a data set measured: per-example correctness and x_adv statistics."""
    correct: torch.Tensor          # (N,) bool, on the CPU
    max_distance: float            # largest |x_adv - x| in the run's norm
    min_value: float
    max_value: float
    n_nonfinite: int

    @property
    def accuracy(self) -> float:
        return self.correct.float().mean().item()


def _run_attack(attack: AttackFn, source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor,
                batch_size: int, norm: str = "linf") -> _Run:
    """x_adv = attack(source, xb, yb) batch by batch, scored on `target` (the same model for white-box)."""
    src_device, tgt_device = device_of(source), device_of(target)
    rows = []   # per batch: correct, then x_adv's statistics for `within_ball`; all read once after the loop
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(src_device)
        yb = y[start:start + batch_size].to(src_device)
        x_adv = check_adversarial(attack(source, xb, yb), xb).detach()
        flat = x_adv.flatten(1)
        stats = distance(x_adv, xb, norm), flat.amin(1), flat.amax(1), ~torch.isfinite(flat).all(1)
        with torch.no_grad(), eval_mode(target):
            pred = check_logits(target(x_adv.to(tgt_device)), x_adv.shape[0]).argmax(1)
        rows.append((pred == yb.to(tgt_device), *stats))
    correct, dist, lo, hi, bad = (torch.cat([p.cpu() for p in column]) for column in zip(*rows))
    return _Run(correct, float(dist.nan_to_num(nan=math.inf).max()), float(lo.min()), float(hi.max()), int(bad.sum()))


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes. x: (N, C, H, W) float in [0, 1] -> (N,) int64 on x's device (eval mode, no grad)."""
    _check_inputs(model, x, batch_size=batch_size)
    return _predict(model, x, batch_size)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Clean accuracy in [0, 1]. x: (N, C, H, W) float in [0, 1]; y: (N,) int64."""
    _check_inputs(model, x, y, batch_size)
    return _accuracy(model, x, y, batch_size)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackFn, batch_size: int = 512,
                    return_correct: bool = False) -> float | tuple[float, torch.Tensor]:
    """White-box robust accuracy in [0, 1]: x_adv = attack(model, xb, yb) per batch, scored on the same model.
    return_correct: also return the (N,) bool per-example correctness (CPU)."""
    _check_inputs(model, x, y, batch_size)
    run = _run_attack(check_attack(attack), model, model, x, y, batch_size)
    return (run.accuracy, run.correct) if return_correct else run.accuracy


def transfer_accuracy(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackFn,
                      batch_size: int = 512, return_correct: bool = False) -> float | tuple[float, torch.Tensor]:
    """Black-box transfer accuracy in [0, 1]: x_adv = attack(source, xb, yb) on the surrogate, scored on `target`."""
    _check_inputs(source, x, y, batch_size, "source")
    _check_inputs(target, x, y, batch_size, "target")
    run = _run_attack(check_attack(attack), source, target, x, y, batch_size)
    return (run.accuracy, run.correct) if return_correct else run.accuracy


# eps sweeps
def eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
              attack: str | Callable[[float], AttackFn] = "pgd", *, batch_size: int = 512, seed: int = 0,
              **attack_kwargs) -> pd.DataFrame:
    """Accuracy against one attack at several budgets: DataFrame with columns eps, accuracy, attack, n. attack: 'fgsm'
    or 'pgd' (L-inf), 'pgd_l2' (L2; eps may exceed 1), 'noise' (random signs of size eps; norm='l2': a Gaussian
    direction), or a callable eps -> attack(model, x, y). attack_kwargs go to the attack (PGD: steps=20, alpha =
    2.5 * eps / steps unless given). Each eps draws its random starts from a fresh generator seeded with `seed`."""
    _check_inputs(model, x, y, batch_size)
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
                         "attack='pgd_l2' (without norm), e.g. eps_sweep(model, x, y, [0.5, 1.0, 2.0], "
                         "attack='pgd_l2')")
    norm = "l2" if attack == "pgd_l2" or (attack == "noise" and attack_kwargs.get("norm") == "l2") else "linf"
    eps_values = [check_budget(e, norm, f"eps_values[{i}]") for i, e in enumerate(eps_values)]
    rows = []
    for e in eps_values:
        fn = check_attack(attack(e)) if callable(attack) else _sweep_attack(attack, e, seed, attack_kwargs)
        rows.append({"eps": e, "accuracy": _run_attack(fn, model, model, x, y, batch_size).accuracy,
                     "attack": getattr(attack, "__name__", attack), "n": x.shape[0]})
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


# Sanity checks: each says what was measured, what was expected and whether it held (or n/a: never a fake pass)
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
        return "\n".join([head] + [f"  {c.status:<4}  {c.name:<{width}}  {c.detail}" for c in self.checks])

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


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf", *,
                  alpha: float | None = None, steps: int = 20, restarts: int = 1, source: nn.Module | None = None,
                  undefended: bool = False, attack: AttackFactory | None = None,
                  sweep: Sequence[float] | None = None, large_eps: float | None = None,
                  more_restarts: int | None = None, tolerance: int = 2, large_eps_max: float = 0.05,
                  undefended_max: float = 0.05, noise_ratio: float = 0.5, batch_size: int = 512,
                  seed: int = 0) -> SanityReport:
    """The sanity checks of an evaluation with PGD (alpha = 2.5 * eps / steps unless given) or with `attack`, a factory
    (eps, steps, restarts) -> attack(model, x, y). Comparisons between attacks allow `tolerance` examples of noise;
    eps 0 must match exactly. In this order:
    - eps0_equals_clean: the attack at eps 0 gives exactly the clean accuracy
    - monotone_in_eps: accuracy does not rise along `sweep` (default 0, eps/4, eps/2, 3eps/4, eps)
    - large_eps_breaks: <= large_eps_max at large_eps (1 for L-inf, sqrt(C*H*W) for L2: any image is reachable)
    - more_steps_not_weaker: steps/4, steps, 2*steps never raise accuracy
    - more_restarts_not_weaker: `more_restarts` (default restarts + 2) never raise accuracy
    - attack_beats_single_step: accuracy <= FGSM's (FGM for L2)
    - whitebox_le_transfer: accuracy <= that of the same attack made on `source` (n/a without a source)
    - noise_much_weaker: noise of size eps removes <= noise_ratio of the attack's drop, the attack > tolerance
    - within_ball: every x_adv of every run is finite, in [0, 1] and within eps (float slack 1e-6)
    - undefended_near_zero: accuracy <= undefended_max, with undefended=True only (a model without a defence)"""
    _check_inputs(model, x, y, batch_size)
    norm = _check_norm(norm)
    eps = check_budget(eps, norm)
    if eps == 0:
        raise ValueError("eps must be > 0 for the sanity checks (eps 0 is one of the checks)")
    check_int(steps, "steps")
    check_int(restarts, "restarts")
    check_int(tolerance, "tolerance", minimum=0)
    check_int(seed, "seed", minimum=0)
    alpha = default_alpha(eps, steps) if alpha is None else check_positive(alpha, "alpha")
    for name, v in dict(large_eps_max=large_eps_max, undefended_max=undefended_max, noise_ratio=noise_ratio).items():
        if check_nonnegative(v, name) > 1:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if not isinstance(undefended, bool):
        raise TypeError(f"undefended must be True or False, got {undefended!r}")
    if source is not None:
        _check_inputs(source, x, y, batch_size, "source")
    if attack is not None and not callable(attack):
        raise TypeError("attack must be None (PGD) or a factory attack(eps, steps, restarts) -> "
                        f"callable(model, x, y) -> x_adv, got {type(attack).__name__}")
    more_restarts = restarts + 2 if more_restarts is None else check_int(more_restarts, "more_restarts")
    if more_restarts <= restarts:
        raise ValueError(f"more_restarts must be > restarts ({restarts}), got {more_restarts}")
    default_large = 1.0 if norm == "linf" else math.sqrt(x[0].numel())   # the [0, 1]-cube's diameter for L2
    large_eps = check_budget(default_large if large_eps is None else large_eps, norm, "large_eps")
    if large_eps <= eps:
        raise ValueError(f"large_eps must be > eps ({eps}), got {large_eps}")
    sweep = sorted({0.0, eps / 4, eps / 2, 3 * eps / 4, eps} if sweep is None else
                   {check_budget(e, norm, f"sweep[{i}]") for i, e in enumerate(sweep)} | {0.0, eps})
    factory = attack or _pgd_factory(norm, eps, alpha, seed)
    name = getattr(factory, "__name__", type(factory).__name__)
    n, tol = x.shape[0], tolerance / x.shape[0]
    runs: dict[str, tuple[_Run, float]] = {}      # label -> (run, its eps): every x_adv made on `model`

    def run(label: str, fn: AttackFn, e: float, src: nn.Module = model) -> float:
        result = _run_attack(fn, src, model, x, y, batch_size, norm)
        runs[label] = (result, e)
        return result.accuracy

    with channels_last_weights(model):     # first every run, in a fixed order (a factory may draw from global RNG)
        clean = _accuracy(model, x, y, batch_size)
        sweep_acc = [run(f"{name} eps={e:.4g}", factory(e, steps, restarts), e) for e in sweep]
        acc = sweep_acc[sweep.index(eps)]
        acc_large = run(f"{name} eps={large_eps:.4g}", factory(large_eps, steps, restarts), large_eps)
        step_list = sorted({max(1, steps // 4), steps, 2 * steps})
        step_acc = [acc if s == steps else run(f"{name} steps={s}", factory(eps, s, restarts), eps) for s in step_list]
        acc_more = run(f"{name} restarts={more_restarts}", factory(eps, steps, more_restarts), eps)
        single = "FGSM" if norm == "linf" else "FGM-L2"
        acc_single = run(single, _single_step(eps, norm), eps)
        acc_tr = None if source is None else run(f"{name} from source", factory(eps, steps, restarts), eps, source)
        noise = make_attack("random_noise", eps=eps, norm=norm, generator=_generator(seed))
        acc_noise = run("random noise", noise, eps)

    # then the checks
    def rises(points: list, accs: list[float]) -> list[tuple]:   # neighbours where accuracy rises beyond tol
        return [(points[i], points[i + 1]) for i in range(len(points) - 1) if accs[i + 1] > accs[i] + tol]

    acc0, eps_rises, step_rises = sweep_acc[0], rises(sweep, sweep_acc), rises(step_list, step_acc)
    drop_attack, drop_noise = clean - acc, clean - acc_noise
    ok = drop_attack > tol and drop_noise <= noise_ratio * drop_attack
    outside, worst = [], 0.0            # runs with an x_adv outside the image range or the eps ball
    for label, (r, e) in runs.items():
        slack = BALL_ATOL + (BALL_RTOL * e if norm == "l2" else 0.0)
        worst = max(worst, r.max_distance - e)
        if r.n_nonfinite or r.min_value < 0 or r.max_value > 1 or r.max_distance > e + slack:
            outside.append(f"{label}: max dist {r.max_distance:.4g} (eps {e:.4g}), values in "
                           f"[{r.min_value:.3g}, {r.max_value:.3g}], {r.n_nonfinite} non-finite")
    checks = [
        Check("eps0_equals_clean", acc0 == clean, f"eps 0: {acc0:.2%} vs clean {clean:.2%} (must be equal)",
              {"eps0": acc0, "clean": clean}),
        Check("monotone_in_eps", not eps_rises, ", ".join(f"{e:.3g}: {a:.1%}" for e, a in zip(sweep, sweep_acc)) +
              (f"; rises between eps {eps_rises}" if eps_rises else " (non-increasing)"),
              {f"eps={e:.4g}": a for e, a in zip(sweep, sweep_acc)}),
        Check("large_eps_breaks", acc_large <= large_eps_max, f"eps {large_eps:.3g}: {acc_large:.2%} (must be <= "
              f"{large_eps_max:.0%}: any image is reachable)", {"large_eps": large_eps, "accuracy": acc_large}),
        Check("more_steps_not_weaker", not step_rises,
              ", ".join(f"{s} steps: {a:.1%}" for s, a in zip(step_list, step_acc)) +
              (f"; rises {step_rises}" if step_rises else ""), {f"steps={s}": a for s, a in zip(step_list, step_acc)}),
        Check("more_restarts_not_weaker", acc_more <= acc + tol,
              f"{restarts} restart(s): {acc:.1%}, {more_restarts}: {acc_more:.1%}",
              {f"restarts={restarts}": acc, f"restarts={more_restarts}": acc_more}),
        Check("attack_beats_single_step", acc <= acc_single + tol,
              f"{name} {acc:.1%} vs {single} {acc_single:.1%} (must be <=)",
              {"attack": acc, "single_step": acc_single}),
        Check("whitebox_le_transfer", None, "no source model given", {}) if acc_tr is None else
        Check("whitebox_le_transfer", acc <= acc_tr + tol,
              f"white-box {acc:.1%} vs transfer from source {acc_tr:.1%} (must be <=)",
              {"whitebox": acc, "transfer": acc_tr}),
        Check("noise_much_weaker", ok, f"clean {clean:.1%}, noise {acc_noise:.1%}, {name} {acc:.1%}: noise removes "
              f"{drop_noise:.1%}, the attack {drop_attack:.1%} (noise must remove <= {noise_ratio:.0%} of it, the "
              f"attack > {tolerance} examples)", {"clean": clean, "noise": acc_noise, "attack": acc}),
        Check("within_ball", not outside, (f"{len(runs)} runs, all x_adv finite, in [0, 1] and within eps"
                                           if not outside else "; ".join(outside)),
              {"runs": len(runs), "max_excess": worst}),
        Check("undefended_near_zero", acc <= undefended_max,
              f"{name} {acc:.1%} (an undefended model must be <= {undefended_max:.0%})", {"attack": acc})
        if undefended else Check("undefended_near_zero", None, "model not flagged undefended", {}),
    ]
    settings = {"attack": name, "norm": norm, "eps": eps, "alpha": alpha if attack is None else None, "steps": steps,
                "restarts": restarts, "n": n, "tolerance": tolerance, "seed": seed,
                "source": None if source is None else type(unwrap(source)).__name__, "clean": clean, "accuracy": acc}
    return SanityReport(checks, settings)


# One evaluation: a results row that states its threat model
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float | None = None,
             steps: int = 20, restarts: int = 1, source: nn.Module | None = None,
             batch_size: int = 512, seed: int = 0, *, norm: str = "linf", name: str | None = None,
             source_name: str | None = None, per_image: bool = False) -> dict:
    """One row of the results table, with its threat model stated. Accuracies in [0, 1]: clean; fgsm (FGM for L2);
    pgd (PGD-`steps`, `restarts` restarts, alpha = 2.5 * eps / steps unless given, white-box: made on the model);
    transfer (the same PGD made on `source`, scored on the model; NaN without a source). per_image: also
    row["pgd_correct"], that PGD's (N,) bool per-image outcome (CPU), so that a later comparison on a subset (e.g.
    AutoAttack's) needs no new run."""
    _check_inputs(model, x, y, batch_size)
    if not isinstance(per_image, bool):
        raise TypeError(f"per_image must be True or False, got {per_image!r}")
    norm = _check_norm(norm)
    eps = check_budget(eps, norm)
    check_int(steps, "steps")
    check_int(restarts, "restarts")
    check_int(seed, "seed", minimum=0)
    alpha = default_alpha(eps, steps) if alpha is None else check_positive(alpha, "alpha")
    if source is not None:
        _check_inputs(source, x, y, batch_size, "source")

    def pgd() -> AttackFn:     # the same seeded PGD for the white-box and the transfer run
        return make_attack("pgd", eps=eps, alpha=alpha, steps=steps, restarts=restarts, norm=norm,
                           generator=_generator(seed))
    row = {"model": name or type(unwrap(model)).__name__, "norm": norm, "eps": eps, "alpha": alpha,
           "steps": steps, "restarts": restarts, "attack_source": "white-box (the model itself)",
           "n": x.shape[0], "clean": math.nan, "fgsm": math.nan, "pgd": math.nan, "transfer": math.nan,
           "transfer_source": None}
    with channels_last_weights(model):
        row["clean"] = _accuracy(model, x, y, batch_size)
        row["fgsm"] = _run_attack(_single_step(eps, norm), model, model, x, y, batch_size).accuracy
        pgd_run = _run_attack(pgd(), model, model, x, y, batch_size)
        row["pgd"] = pgd_run.accuracy
        if per_image:
            row["pgd_correct"] = pgd_run.correct
        if source is not None:
            row["transfer"] = _run_attack(pgd(), source, model, x, y, batch_size).accuracy
            row["transfer_source"] = source_name or type(unwrap(source)).__name__
    return row
