"""Checks for notebook 03's exercises: one PGD adversarial-training step and early stopping on held-out
robust accuracy."""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import attacks
from ._common import _FAILED, _call, _close, _fail, _images, _model, _ok, _Recorder, exercise

__all__ = ["check_pgd_at_step", "check_early_stopping"]


def pgd_at_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, eps: float,
                alpha: float, steps: int) -> float:
    """The reference PGD-AT step: craft x_adv with attacks.pgd, then one optimiser step on CE(model(x_adv), y)."""
    x_adv = attacks.pgd(model, x, y, eps, alpha, steps)
    model.train()
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


class _LoggingSGD(torch.optim.SGD):
    """SGD that writes 'zero_grad', 'step' or 'step without gradients' into `log`."""

    def __init__(self, params, lr: float, log: list[str]):
        super().__init__(params, lr=lr)
        self._log = log

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._log.append("zero_grad")
        super().zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        live = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for g in self.param_groups for p in g["params"])
        self._log.append("step" if live else "step without gradients")
        return super().step(closure)


_RECIPE = ("x_adv = attacks.pgd(model, x, y, eps, alpha, steps); model.train(); optimizer.zero_grad(); "
           "loss = F.cross_entropy(model(x_adv), y); loss.backward(); optimizer.step(); return loss.item()")


@exercise("clead_lite.exercises.nb03_training:pgd_at_step")
def check_pgd_at_step(student_step: Callable) -> bool:
    """Exercise (03): `pgd_at_step(model, optimizer, x, y, eps, alpha, steps) -> float`, one step of PGD
    adversarial training (see `pgd_at_step` above).

    The check records what the student's step fed the model in train mode and what it did with the optimiser,
    then compares the update with one SGD step from the same weights on the same inputs (exact, whatever the
    random start). Detects: training on the clean images, on FGSM examples, on a mix of clean and adversarial
    examples, on examples outside the eps ball or in a ball of radius alpha (eps and alpha swapped), too few attack
    steps, forgetting zero_grad (gradients accumulate), zero_grad after backward, no backward, no
    optimizer.step(), backward twice, a summed loss, updating in eval mode, returning the wrong loss.
    """
    name = "check_pgd_at_step"
    base = _model(seed=5)
    x, y = _images(16, seed=5)
    eps, alpha, steps, lr = 0.2, 0.05, 3, 0.5
    stale = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in
             enumerate(base.parameters())]

    def fresh(log: list[str] | None = None):
        m = copy.deepcopy(base).train()
        for p, s in zip(m.parameters(), stale):  # the previous batch's gradients, as in a real loop
            p.grad = s.clone()
        return m, _LoggingSGD(m.parameters(), lr, [] if log is None else log)

    def update(m):
        return torch.cat([(p.detach() - q.detach()).flatten() for p, q in zip(m.parameters(), base.parameters())])

    def sgd_update(inputs, zero=True, reduction="mean"):
        m, opt = fresh()
        if zero:
            opt.zero_grad()
        loss = F.cross_entropy(m(inputs), y, reduction=reduction)
        loss.backward()
        opt.step()
        with torch.no_grad():
            return update(m), F.cross_entropy(base(inputs), y).item()

    torch.manual_seed(123)
    m_ref, _ = fresh()
    x_pgd = attacks.pgd(m_ref, x, y, eps, alpha, steps)

    torch.manual_seed(123)
    log: list[str] = []
    m_student, opt = fresh(log)
    recorder = _Recorder(m_student, keep_inputs=True).train()
    seen_at_backward: list[int] = []        # how many forward passes had run when backward() was first called

    def on_backward(grad):
        log.append("backward")
        seen_at_backward.append(len(recorder.inputs))
    next(m_student.parameters()).register_hook(on_backward)
    out = _call(name, student_step, recorder, opt, x.clone(), y.clone(), eps, alpha, steps)
    if out is _FAILED:
        return False
    got = update(m_student)
    n_backward = log.count("backward")
    if n_backward == 0:
        return _fail(name, "you never called loss.backward(): without it there are no fresh gradients for the "
                           "optimiser" + (" (your step used the previous batch's leftover gradients)"
                                          if "step" in log else ""), _RECIPE)
    if "step" not in log:
        if "step without gradients" in log:
            last_backward = max(i for i, e in enumerate(log) if e == "backward")
            if "zero_grad" in log[last_backward:]:
                return _fail(name, "you called optimizer.zero_grad() AFTER loss.backward(): it erased the gradients, "
                                   "so optimizer.step() changed nothing",
                             "zero_grad() comes first (before the forward pass or at least before backward())")
        if float(got.abs().max()) == 0.0:
            return _fail(name, "the model's parameters did not change: you never called optimizer.step()",
                         "call optimizer.step() after loss.backward()")
    if n_backward > 1:
        return _fail(name, f"you called backward() {n_backward} times: the gradients of the calls add up in .grad",
                     "one forward pass on x_adv, one loss.backward(), one optimizer.step()")
    modes, inputs = recorder.modes[:seen_at_backward[0]], recorder.inputs[:seen_at_backward[0]]
    last_eval = max([i for i, m in enumerate(modes) if not m], default=-1)
    train_inputs = inputs[last_eval + 1:]
    n_attack = sum(1 for m in modes[:last_eval + 1] if not m)
    if not train_inputs:
        return _fail(name, "you updated the model in eval mode (the last forward pass ran with model.eval())",
                     "call model.train() after crafting the adversarial examples, before the training forward pass")
    if last_eval < 0 and len(train_inputs) > 2:
        return _fail(name, f"you crafted the adversarial examples with the model in train mode (all "
                           f"{len(train_inputs)} forward passes ran in train mode): attacks use eval mode, and the "
                           "training forward pass train mode", "attacks.pgd(model, x, y, eps, alpha, steps) switches "
                                                                "to eval mode itself; then model.train()")
    batch = torch.cat(train_inputs)
    rows = [batch[i:i + len(x)] for i in range(0, len(batch) - len(x) + 1, len(x))]
    if len(batch) > len(x):
        if any(_close(r, x) for r in rows):
            return _fail(name, "your loss mixes clean and adversarial examples (e.g. half clean, half adversarial): "
                               "that is a different method (the mixed loss of Goodfellow et al. 2015); Madry's "
                               "PGD-AT trains on the adversarial examples only", _RECIPE)
        return _fail(name, f"you ran {len(train_inputs)} training forward passes ({len(batch)} images for a batch "
                           f"of {len(x)}): PGD-AT trains once on x_adv", _RECIPE)
    x_train = batch
    if _close(x_train, x):
        return _fail(name, "you trained on the clean images x: PGD-AT trains on the adversarial examples",
                     "x_adv = attacks.pgd(model, x, y, eps, alpha, steps); loss = CE(model(x_adv), y)")
    dist = float((x_train - x).abs().max())
    if dist > eps + 1e-5:
        return _fail(name, f"your training examples leave the eps ball: max |x_adv - x| = {dist:.3g} > eps = {eps}",
                     "attacks.pgd(model, x, y, eps, alpha, steps): the arguments in this order")
    if abs(dist - alpha) < 1e-4:
        return _fail(name, f"your adversarial examples stay within alpha = {alpha} of x instead of eps = {eps}: you "
                           "swapped eps and alpha", "attacks.pgd(model, x, y, eps, alpha, steps)")
    if dist < min(eps, steps * alpha) - 1e-3:  # without a random start PGD reaches steps * alpha at most
        return _fail(name, f"your adversarial examples stay within {dist:.3g} of x, but the budget is eps = {eps}",
                     "pass the function's eps to the attack")
    with torch.no_grad():
        base_eval = copy.deepcopy(base).eval()
    if _close(x_train, attacks.fgsm(base_eval, x, y, eps)):
        return _fail(name, f"you trained on FGSM examples (one step of size eps): PGD-AT uses {steps} projected "
                           "steps of size alpha from a random start", "attacks.pgd(model, x, y, eps, alpha, steps)")
    if n_attack < steps:
        return _fail(name, f"your attack took {n_attack} gradient step(s), not steps = {steps}",
                     "pass the function's steps to attacks.pgd")
    ref, ref_loss = sgd_update(x_train)
    if not _close(got, ref, 1e-6):
        accumulated, _ = sgd_update(x_train, zero=False)
        summed, _ = sgd_update(x_train, reduction="sum")
        if _close(got, accumulated, 1e-6):
            return _fail(name, "you forgot optimizer.zero_grad(): the previous batch's gradients were added to this "
                               "one", "call optimizer.zero_grad() before loss.backward()")
        if _close(got, summed, 1e-5):
            return _fail(name, f"you summed the loss over the batch (reduction='sum'): the step is {len(x)} times too "
                               "large for the learning rate", "F.cross_entropy(model(x_adv), y), the mean")
        return _fail(name, "your update differs from one SGD step on CE(model(x_adv), y) for the x_adv your step "
                           f"trained on (cosine similarity {float(F.cosine_similarity(got, ref, dim=0)):.3f})", _RECIPE)
    if not isinstance(out, (float, int)) and not (isinstance(out, torch.Tensor) and out.numel() == 1):
        return _fail(name, f"return the training loss as a number (loss.item()), got {type(out).__name__}")
    loss = float(out.detach()) if isinstance(out, torch.Tensor) else float(out)
    if abs(loss - ref_loss) > 1e-4:
        return _fail(name, f"you returned {loss:.4f}, but the adversarial training loss is {ref_loss:.4f}",
                     "return loss.item() of the cross-entropy on x_adv (computed before optimizer.step())")
    extra = "" if _close(x_train, x_pgd) else " (your x_adv came from another random start than the reference's; fine)"
    return _ok(name, f"your PGD-AT step trains on PGD examples in train mode with fresh gradients{extra}; "
                     f"loss {loss:.3f}")


def best_epoch(history) -> int:
    """The reference: the `epoch` of the row with the highest val_pgd_acc (the first one on ties)."""
    return int(history.loc[history["val_pgd_acc"].idxmax(), "epoch"])


@exercise("clead_lite.exercises.nb03_training:best_epoch")
def check_early_stopping(student_fn: Callable) -> bool:
    """Exercise (03): `best_epoch(history) -> int`, the epoch (value of the `epoch` column) with the highest
    held-out PGD accuracy (the first one on ties), the rule against robust overfitting.

    history: a DataFrame of `training.train` epoch records: epoch, loss, acc (accuracy on the adversarial
    training batches), val_clean_acc, val_pgd_acc (held-out).
    Detects: the last epoch, the training robust accuracy, the clean accuracy, the lowest loss, the lowest held-out
    accuracy, a row index instead of the epoch number, the last of tied epochs, the accuracy instead of the epoch.
    """
    import pandas as pd
    name = "check_early_stopping"
    history = pd.DataFrame({
        "epoch": [1, 2, 3, 4, 5, 6, 7, 8],
        "loss": [2.0, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5, 0.45],
        "acc": [0.20, 0.35, 0.45, 0.52, 0.60, 0.70, 0.80, 0.79],
        "val_clean_acc": [0.60, 0.75, 0.80, 0.82, 0.85, 0.88, 0.87, 0.86],
        "val_pgd_acc": [0.18, 0.30, 0.41, 0.44, 0.44, 0.40, 0.37, 0.35],
    })
    out = _call(name, student_fn, history.copy())
    if out is _FAILED:
        return False
    try:
        value = float(out)
    except (TypeError, ValueError):
        return _fail(name, f"return the epoch number as an int, got {out!r}")
    if 0.0 < value < 1.0:
        return _fail(name, f"you returned an accuracy ({value:.2f}), not the epoch where it was reached",
                     "history.loc[history['val_pgd_acc'].idxmax(), 'epoch']")
    epoch = int(value)
    wrong = {8: ("you picked the last epoch (or the lowest training loss): with robust overfitting the last "
                 "epoch is not the most robust one", "select on the held-out PGD accuracy (val_pgd_acc)"),
             7: ("you picked the epoch with the highest accuracy on the (adversarial) TRAINING batches",
                 "robust overfitting: training robust accuracy keeps rising while held-out robust accuracy falls; "
                 "select on val_pgd_acc"),
             6: ("you picked the epoch with the highest held-out CLEAN accuracy",
                 "we want the most robust model: select on val_pgd_acc"),
             3: ("you returned a row index (3), not the epoch number",
                 "read the `epoch` column of the best row, e.g. history.loc[history.val_pgd_acc.idxmax(), 'epoch']"),
             5: ("on a tie keep the FIRST epoch with the best held-out robust accuracy (fewer epochs, same robustness)",
                 "idxmax returns the first maximum"),
             1: ("you picked the epoch with the LOWEST held-out robust accuracy (idxmin instead of idxmax, or an "
                 "ascending sort)", "history['val_pgd_acc'].idxmax()")}
    if epoch == 4:
        return _ok(name, "epoch 4 has the best held-out robust accuracy (44%); later epochs overfit robustly "
                         "(training robust accuracy still rises to 80%, held-out falls to 35%)")
    if epoch in wrong:
        return _fail(name, *wrong[epoch])
    return _fail(name, f"you picked epoch {epoch}; the best held-out robust accuracy is at epoch 4",
                 "select on the val_pgd_acc column")
