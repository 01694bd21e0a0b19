"""Checks for notebook 05's "build the training loop" exercises: the epoch loop that never waits for the GPU, the
autocast dtype a GPU should get, and keep-best on held-out robust accuracy."""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ._common import _FAILED, _call, _fail, _model, _ok, exercise

__all__ = ["check_epoch_loop", "check_autocast_dtype", "check_keep_best"]


# ------------------------------------------------------------------------------------------ the epoch loop
def run_epoch(step: Callable, batches, log_every: int) -> tuple[float, float, list[float]]:
    """The reference: one pass over `batches`; step(x, y) -> (mean loss of the batch, number correct), both 0-dim
    device tensors. Sums stay on the device; a value is read (float()) only every `log_every` batches and at the
    end. Returns (mean loss per image, accuracy, the running mean losses read while logging)."""
    total_loss, total_correct, seen, logged = 0.0, 0.0, 0, []
    for i, (x, y) in enumerate(batches):
        loss, correct = step(x, y)
        total_loss = total_loss + loss * len(y)      # weighted by the batch size: the last batch may be smaller
        total_correct = total_correct + correct
        seen += len(y)
        if (i + 1) % log_every == 0:
            logged.append(float(total_loss) / seen)   # the one place the loop waits for the device
    return float(total_loss) / seen, float(total_correct) / seen, logged


class _Counted(torch.Tensor):
    """A tensor that counts every read of its value on the host (what would make the CPU wait for a GPU)."""
    reads = 0
    READS = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
             torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__format__,
             torch.Tensor.__repr__, torch.Tensor.__index__}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.READS:
            _Counted.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def _fake_epoch(n_batches: int = 7, last: int = 3, batch: int = 8):
    """Batches of unequal size (the last one smaller) and a step whose outputs count host reads."""
    g = torch.Generator().manual_seed(11)
    losses = torch.rand(n_batches, generator=g) * 2 + 0.1
    sizes = [batch] * (n_batches - 1) + [last]
    correct = [int(torch.randint(0, s + 1, (), generator=g)) for s in sizes]
    batches = [(torch.zeros(s, 1), torch.zeros(s, dtype=torch.int64)) for s in sizes]
    calls = iter(range(n_batches))

    def step(x, y):
        i = next(calls)
        return (losses[i].clone().as_subclass(_Counted),
                torch.tensor(float(correct[i])).as_subclass(_Counted))
    return step, batches, losses, sizes, correct


@exercise("clead_lite.exercises.nb05_loop:run_epoch")
def check_epoch_loop(student_fn: Callable) -> bool:
    """Exercise (05): `run_epoch(step, batches, log_every) -> (mean loss, accuracy, logged)` (see `run_epoch`).

    Runs it on batches of unequal size with a step whose outputs count every host read (float(), .item(), bool,
    print...). Detects: reading a value at every step (a GPU sync per step), the mean of the batch means (the
    last, smaller batch counted like the others), the loss not weighted by the batch size, logging at the wrong
    steps, the accuracy over batches instead of images.
    """
    name = "check_epoch_loop"
    n_batches, log_every = 7, 3
    step, batches, losses, sizes, correct = _fake_epoch(n_batches)
    _Counted.reads = 0
    out = _call(name, student_fn, step, batches, log_every)
    reads = _Counted.reads
    if out is _FAILED:
        return False
    if not (isinstance(out, tuple) and len(out) == 3):
        return _fail(name, f"return a tuple (mean loss, accuracy, logged), got {type(out).__name__}")
    mean_loss, acc, logged = out
    logged = list(logged) if isinstance(logged, (list, tuple)) else logged
    n = sum(sizes)
    want_loss = float(sum(l * s for l, s in zip(losses.tolist(), sizes)) / n)
    want_acc = sum(correct) / n
    lines = len(logged) if isinstance(logged, list) and len(logged) <= n_batches // 2 + 1 else n_batches // log_every
    budget = lines + 2                           # one read per log line, two at the end
    if reads > budget:
        return _fail(name, f"your loop read a value from the device {reads} times in {n_batches} steps (at most "
                           f"{budget}: one per log line and two at the end). On a GPU every float(), .item() or "
                           "print of a device tensor makes the CPU wait until the GPU has finished: keep the sums "
                           "as tensors and read them only when you log",
                     "total = total + loss * len(y) (a tensor); float(total) only every log_every steps")
    mean_of_means = float(losses.mean())
    if abs(float(mean_loss) - mean_of_means) < 1e-6 and abs(want_loss - mean_of_means) > 1e-4:
        return _fail(name, "your mean loss is the mean of the batch means: the last batch is smaller, so each of "
                           "its images counted more than the others'",
                     "weight each batch's loss by its size: total += loss * len(y), then divide by the images seen")
    if abs(float(mean_loss) - want_loss) > 1e-5:
        return _fail(name, f"the mean loss over the epoch should be {want_loss:.5f}, yours is {float(mean_loss):.5f}",
                     "sum loss * batch size over the batches, divide by the number of images")
    if abs(float(acc) - want_acc) > 1e-6:
        per_batch = sum(c / s for c, s in zip(correct, sizes)) / n_batches
        why = " (the mean of per-batch accuracies)" if abs(float(acc) - per_batch) < 1e-6 else ""
        return _fail(name, f"the accuracy should be {want_acc:.4f} (correct / images), yours is {float(acc):.4f}{why}")
    cumulative = [float(sum(l * s for l, s in zip(losses[:k].tolist(), sizes[:k])) / sum(sizes[:k]))
                  for k in range(log_every, n_batches + 1, log_every)]
    if len(logged) != len(cumulative) or any(abs(a - b) > 1e-5 for a, b in zip(logged, cumulative)):
        return _fail(name, f"log the running mean loss after batches {list(range(log_every, n_batches + 1, log_every))}"
                           f" ({len(cumulative)} values), got {len(logged)} value(s)",
                     "if (i + 1) % log_every == 0: logged.append(float(total_loss) / seen)")
    return _ok(name, f"one epoch, {reads} reads from the device in {n_batches} steps, the last smaller batch "
                     "weighted by its size. This is the shape of the library's train_epoch")


# ------------------------------------------------------------------------------------------ the autocast dtype
def autocast_dtype(capability: tuple[int, int]) -> torch.dtype:
    """The reference: bf16 on GPUs of compute capability >= 8.0 (A100, H100), fp16 with loss scaling below (T4,
    V100), where bf16 exists only by emulation and cuDNN has no bf16 convolutions."""
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


GPUS = {"Tesla T4 (Colab)": (7, 5), "P100": (6, 0), "V100": (7, 0), "RTX 3090": (8, 6), "A100": (8, 0), "H100": (9, 0)}


@exercise("clead_lite.exercises.nb05_loop:autocast_dtype")
def check_autocast_dtype(student_fn: Callable) -> bool:
    """Exercise (05): `autocast_dtype((major, minor)) -> torch.bfloat16 or torch.float16`. Detects: bf16
    everywhere (what `torch.cuda.is_bf16_supported()` suggests on a T4, by emulation), fp16 everywhere, the
    threshold at the wrong version, comparing the minor version alone."""
    name = "check_autocast_dtype"
    wrong = []
    for gpu, cap in GPUS.items():
        got = _call(name, student_fn, cap)
        if got is _FAILED:
            return False
        if got not in (torch.float16, torch.bfloat16):
            return _fail(name, f"return torch.float16 or torch.bfloat16, got {got!r} for {gpu} {cap}")
        if got is not autocast_dtype(cap):
            wrong.append(f"{gpu} {cap[0]}.{cap[1]} -> {str(got).replace('torch.', '')}")
    if wrong:
        if all(student_fn(c) is torch.bfloat16 for c in GPUS.values()):
            return _fail(name, "bf16 everywhere: a T4 (7.5) has no bf16 tensor cores, torch.cuda.is_bf16_supported() "
                               "says True there only because bf16 can be emulated, slowly, and cuDNN has no bf16 "
                               "convolutions below 8.0", "compare the whole version: tuple(capability) >= (8, 0)")
        return _fail(name, "wrong for " + "; ".join(wrong),
                     "bf16 from compute capability 8.0 (Ampere) on, fp16 with a GradScaler below")
    return _ok(name, "bf16 on Ampere and newer, fp16 (with loss scaling) on a Colab T4")


# ------------------------------------------------------------------------------------------ keep-best
def keep_best(model: torch.nn.Module, val_acc: float, epoch: int, best: dict | None) -> dict:
    """The reference: best = {'acc', 'epoch', 'state'}; replaced when val_acc is strictly higher (a tie keeps the
    earlier epoch). The state is a copy: model.state_dict() returns the live tensors, which the next epochs
    change in place."""
    if best is None or val_acc > best["acc"]:
        best = {"acc": val_acc, "epoch": epoch, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    return best


@exercise("clead_lite.exercises.nb05_loop:keep_best")
def check_keep_best(student_fn: Callable) -> bool:
    """Exercise (05): `keep_best(model, val_acc, epoch, best) -> best`. Replays five epochs whose held-out accuracy
    rises, falls (robust overfitting) and ties, changing the weights in place between epochs as an optimiser does.
    Detects: keeping model.state_dict() itself (its tensors are the live weights: the 'best' copy follows
    training), keeping the last epoch, keeping the lowest accuracy, a tie replacing the earlier epoch."""
    name = "check_keep_best"
    model = _model(seed=3)
    accs = [0.40, 0.55, 0.52, 0.55, 0.30]
    snapshots, best = [], None
    for epoch, acc in enumerate(accs, start=1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * epoch)              # training moves the weights in place
        snapshots.append(copy.deepcopy(model.state_dict()))
        best = _call(name, student_fn, model, acc, epoch, best)
        if best is _FAILED:
            return False
        if not isinstance(best, dict) or not {"acc", "epoch", "state"} <= set(best):
            return _fail(name, f"return a dict with 'acc', 'epoch' and 'state', got {best!r:.80}")
    if best["epoch"] == 4:
        return _fail(name, "a tie (0.55 at epochs 2 and 4) replaced the earlier epoch: keep the first best, "
                           "replace only when the accuracy is strictly higher", "if val_acc > best['acc']: ...")
    if best["epoch"] != 2 or abs(best["acc"] - 0.55) > 1e-12:
        return _fail(name, f"kept epoch {best['epoch']} (accuracy {best['acc']}); the best held-out accuracy was "
                           "0.55 at epoch 2")
    state = best["state"]
    if any(v is w for v, w in zip(state.values(), model.state_dict().values())) or all(
            torch.equal(state[k], model.state_dict()[k]) for k in state if state[k].is_floating_point()):
        return _fail(name, "your kept state holds the model's live tensors: they changed with every later epoch, "
                           "so the 'best' weights are the last ones",
                     "copy them: {k: v.detach().clone() for k, v in model.state_dict().items()}")
    if not all(torch.equal(state[k], snapshots[1][k]) for k in state):
        return _fail(name, "the kept state is not the weights of epoch 2")
    return _ok(name, "epoch 2 kept, a copy of its weights, untouched by the epochs after it")
