"""Checks for notebook 06's exercises: transfer accuracy and the spot-the-flaw question."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import _letter, _say, _try, exercise

__all__ = ["check_transfer_eval", "check_spot_the_flaw", "SPOT_THE_FLAW_OPTIONS"]

_call = _try


class _Linear(nn.Module):
    """A linear classifier on 1x28x28 images with fixed weights (a stand-in model for the check)."""

    in_channels = 1

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def _transfer_scenario():
    """A target model, a related but different source model, data and an FGSM attack, built so that clean,
    white-box, transfer and the typical wrong answers all give different accuracies."""
    g = torch.Generator().manual_seed(0)
    w_true = torch.randn(10, 784, generator=g)
    x = torch.rand(200, 1, 28, 28, generator=g)

    def centred(w: torch.Tensor) -> _Linear:       # logits of (x - 0.5), so no class dominates
        return _Linear(w, -0.5 * w.sum(1))
    y = centred(w_true)(x).argmax(1).detach()
    target = centred(w_true + 0.6 * torch.randn(10, 784, generator=g))
    source = centred(w_true + 1.2 * torch.randn(10, 784, generator=g))

    def attack(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
        xb = xb.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xb), yb)
        grad, = torch.autograd.grad(loss, xb)
        return (xb + eps * grad.sign()).clamp(0, 1).detach()
    return source, target, x, y, attack


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def transfer_candidates(source, target, x, y, attack) -> dict[str, float]:
    """The correct transfer accuracy and the values of the typical mistakes."""
    x_src, x_tgt = attack(source, x, y), attack(target, x, y)
    correct = _acc(target, x_src, y)
    with torch.no_grad():
        clean_pred = target(x).argmax(1)
    return {"correct": correct, "white-box": _acc(target, x_tgt, y), "source evaluated": _acc(source, x_src, y),
            "reversed": _acc(source, x_tgt, y), "clean": _acc(target, x, y), "error rate": 1.0 - correct,
            "percent": 100.0 * correct, "count": correct * len(y),
            "predictions as labels": _acc(target, x_src, clean_pred)}


TRANSFER_MESSAGES = {
    "white-box": ("you crafted the attack on the target itself: that is white-box robust accuracy. Transfer means "
                  "x_adv = attack(source, x, y), then evaluate the *target* on x_adv."),
    "source evaluated": ("you evaluated the source model on its own adversarial examples (white-box for the "
                         "source); evaluate the target: target(x_adv)."),
    "reversed": "you swapped the models: craft on the source, evaluate on the target.",
    "clean": "you evaluated the target on the clean images x; evaluate it on x_adv = attack(source, x, y).",
    "error rate": "you returned the error rate (1 - accuracy); return the accuracy, the fraction correct.",
    "percent": "return a fraction in [0, 1], not a percentage.",
    "count": "you returned the number of correct predictions; divide by the number of images.",
    "predictions as labels": ("you compared with the target's predictions on the clean images instead of the true "
                              "labels y: accuracy counts target(x_adv).argmax(1) == y."),
}
NO_GRAD_ATTACK = ("the attack found no gradient: did you run it under torch.no_grad()? An attack needs gradients; "
                  "put only the evaluation of the target under torch.no_grad(), after x_adv = attack(source, x, y).")


def transfer_accuracy(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, attack) -> float:
    """The reference: accuracy of `target` on attack(source, x, y)."""
    return _acc(target, attack(source, x, y), y)


@exercise("clead_lite.exercises.nb06_evaluation:transfer_accuracy")
def check_transfer_eval(student_fn: Callable[..., float]) -> bool:
    """Check `student_fn(source, target, x, y, attack) -> float in [0, 1]`: the accuracy of `target` on adversarial
    examples crafted against `source` (attack(model, x, y) -> x_adv)."""
    source, target, x, y, attack = _transfer_scenario()
    out, err = _call(student_fn, source, target, x.clone(), y.clone(), attack)
    if err:
        return _say(False, NO_GRAD_ATTACK if "does not require grad" in err else err)
    try:
        value = float(out)
    except (TypeError, ValueError):
        return _say(False, f"return one number (a float), got {type(out).__name__}"
                           + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "") + ".")
    cands = transfer_candidates(source, target, x, y, attack)
    if abs(value - cands["correct"]) < 1e-6:
        return _say(True, f"transfer accuracy {value:.3f} (white-box on the same target: {cands['white-box']:.3f}, "
                          f"clean: {cands['clean']:.3f}) — transfer attacks are weaker than white-box ones.")
    for name, v in cands.items():
        if name != "correct" and abs(value - v) <= 1e-5 * max(1.0, abs(v)) and abs(v - cands["correct"]) > 1e-6:
            return _say(False, TRANSFER_MESSAGES[name])
    return _say(False, f"expected {cands['correct']:.3f}, got {value:.3f}. Recipe: x_adv = attack(source, x, y); "
                       "then the fraction of target(x_adv).argmax(1) == y (under torch.no_grad()).")


# ================================================================= 06: spot the flawed evaluation
# The right answer is C; the options have similar lengths so that neither position nor length gives it away.
SPOT_THE_FLAW_OPTIONS = {
    "A": ("The wrapped model is genuinely robust: multiplying its logits by 1e4 makes its decisions much harder "
          "to flip."),
    "B": "eps is too small for this dataset: the same attack with a larger budget would reveal the model's weakness.",
    "C": ("Gradient masking: a saturated softmax gives PGD a zero gradient, so the high robust accuracy is an "
          "illusion."),
    "D": "The test subset is too easy: on more test images, with the sampling error stated, the robust accuracy drops.",
}
SPOT_THE_FLAW_ANSWER = "C"
_SPOT_THE_FLAW_FEEDBACK = {
    "A": ("the wrapped model makes exactly the same predictions as the standard model on every input (multiplying "
          "the logits by a positive number never changes the argmax), so it cannot be more robust. The failed "
          "checks say the *evaluation* is broken: a transfer attack beats the white-box one, random noise is as "
          "strong as the attack."),
    "B": ("eps is not the problem: the predictions are identical to the standard model's, which the same eps "
          "breaks easily. The failed checks point at the attack, not at the budget."),
    "C": ("with logits x 1e4 the softmax is exactly one-hot in float32, so the cross-entropy gradient underflows "
          "to zero and PGD only keeps its random start: it is no stronger than random noise, and examples made on "
          "the unwrapped model transfer better than the 'white-box' attack. This is the signature of gradient "
          "masking (Carlini & Wagner 2016 on defensive distillation; Athalye et al. 2018). The fix: a loss that "
          "does not saturate (the CW margin on the logits), transfer and gradient-free attacks, AutoAttack."),
    "D": ("more images make the estimate tighter, but a check that fails by tens of percentage points is not noise: "
          "the attack itself is not working."),
}


def spot_the_flaw() -> str:
    """The reference answer."""
    return SPOT_THE_FLAW_ANSWER


@exercise("clead_lite.exercises.nb06_evaluation:spot_the_flaw")
def check_spot_the_flaw(answer) -> bool:
    """Check the letter chosen for the broken-evaluation question of notebook 06 (a model whose logits are scaled
    by 1e4, attacked with cross-entropy PGD; options in SPOT_THE_FLAW_OPTIONS). answer: a letter, or a function
    returning one."""
    letter, err = _letter(answer, SPOT_THE_FLAW_OPTIONS)
    if err:
        return _say(False, err)
    return _say(letter == SPOT_THE_FLAW_ANSWER, _SPOT_THE_FLAW_FEEDBACK[letter])
