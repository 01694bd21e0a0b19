"""Notebook 05's loop exercises: the reference and the right variants pass; each typical wrong answer is rejected
with a message that names that mistake."""
import pytest
import torch

from clead_lite.exercises import check_autocast_dtype, check_epoch_loop, check_keep_best
from clead_lite.exercises import nb05_loop as L


def verdict(check, fn, capsys):
    ok = check(fn)
    return ok, capsys.readouterr().out


def rejected(check, fn, phrases, capsys):
    ok, out = verdict(check, fn, capsys)
    assert ok is False and "❌" in out and "✅" not in out, out
    for phrase in phrases:
        assert phrase in out, f"{phrase!r} not in:\n{out}"


# ------------------------------------------------------------------------------------------ the epoch loop
def loop_item_every_step(step, batches, log_every):
    total, correct, seen, logged = 0.0, 0.0, 0, []
    for i, (x, y) in enumerate(batches):
        loss, c = step(x, y)
        total += loss.item() * len(y)             # a sync at every step
        correct += c.item()
        seen += len(y)
        if (i + 1) % log_every == 0:
            logged.append(total / seen)
    return total / seen, correct / seen, logged


def loop_print_every_step(step, batches, log_every):
    out = L.run_epoch(step, batches, log_every)
    return out


def loop_mean_of_means(step, batches, log_every):
    losses, correct, seen, logged = [], 0.0, 0, []
    for i, (x, y) in enumerate(batches):
        loss, c = step(x, y)
        losses.append(loss)
        correct = correct + c
        seen += len(y)
        if (i + 1) % log_every == 0:
            logged.append(float(sum(losses) / len(losses)))
    return float(sum(losses) / len(losses)), float(correct) / seen, logged


def loop_unweighted_sum(step, batches, log_every):
    total, correct, seen, logged = 0.0, 0.0, 0, []
    for i, (x, y) in enumerate(batches):
        loss, c = step(x, y)
        total = total + loss                      # not weighted by the batch size, divided by images
        correct = correct + c
        seen += len(y)
        if (i + 1) % log_every == 0:
            logged.append(float(total) / seen)
    return float(total) / seen, float(correct) / seen, logged


def loop_accuracy_per_batch(step, batches, log_every):
    total, acc, seen, logged, n = 0.0, 0.0, 0, [], 0
    for i, (x, y) in enumerate(batches):
        loss, c = step(x, y)
        total = total + loss * len(y)
        acc = acc + c / len(y)
        seen, n = seen + len(y), n + 1
        if (i + 1) % log_every == 0:
            logged.append(float(total) / seen)
    return float(total) / seen, float(acc) / n, logged


def loop_logs_every_step(step, batches, log_every):
    total, correct, seen, logged = 0.0, 0.0, 0, []
    for i, (x, y) in enumerate(batches):
        loss, c = step(x, y)
        total, correct, seen = total + loss * len(y), correct + c, seen + len(y)
        if i % log_every == 0:                    # off by one: logs after batches 1, 4, 7
            logged.append(float(total) / seen)
    return float(total) / seen, float(correct) / seen, logged


def loop_with_tensors_started_on_device(step, batches, log_every):   # right: sums start as tensors
    total, correct, seen, logged = torch.zeros(()), torch.zeros(()), 0, []
    for i, (x, y) in enumerate(batches):
        loss, c = step(x, y)
        total += loss * y.shape[0]
        correct += c
        seen += y.shape[0]
        if (i + 1) % log_every == 0:
            logged.append((total / seen).item())
    return (total / seen).item(), (correct / seen).item(), logged


@pytest.mark.parametrize("fn, phrases", [
    (loop_item_every_step, ["read a value from the device", "times in 7 steps"]),
    (loop_mean_of_means, ["mean of the batch means"]),
    (loop_unweighted_sum, ["mean loss over the epoch should be"]),
    (loop_accuracy_per_batch, ["mean of per-batch accuracies"]),
    (loop_logs_every_step, ["log the running mean loss after batches [3, 6]"]),
], ids=lambda v: getattr(v, "__name__", ""))
def test_epoch_loop_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_epoch_loop, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [L.run_epoch, loop_with_tensors_started_on_device])
def test_epoch_loop_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_epoch_loop, fn, capsys)
    assert ok, out


def test_the_read_counter_sees_every_way_of_reading():
    t = torch.tensor(1.5).as_subclass(L._Counted)
    L._Counted.reads = 0
    float(t), t.item(), bool(t), t.tolist(), f"{t}"
    assert L._Counted.reads == 5
    L._Counted.reads = 0
    _ = (t * 2 + t) / 3                               # arithmetic stays on the device: no read
    assert L._Counted.reads == 0


# ------------------------------------------------------------------------------------------ the autocast dtype
@pytest.mark.parametrize("fn, phrases", [
    (lambda cap: torch.bfloat16, ["bf16 everywhere", "emulated"]),
    (lambda cap: torch.float16, ["wrong for", "A100"]),
    (lambda cap: torch.bfloat16 if cap[0] >= 7 else torch.float16, ["Tesla T4"]),
    (lambda cap: torch.bfloat16 if cap[1] >= 0 and cap[0] > 8 else torch.float16, ["A100", "RTX 3090"]),
    (lambda cap: "bf16", ["return torch.float16 or torch.bfloat16"]),
])
def test_autocast_dtype_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_autocast_dtype, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [L.autocast_dtype, lambda cap: torch.float16 if cap[0] < 8 else torch.bfloat16])
def test_autocast_dtype_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_autocast_dtype, fn, capsys)
    assert ok, out


# ------------------------------------------------------------------------------------------ keep-best
def best_live_state(model, val_acc, epoch, best):
    if best is None or val_acc > best["acc"]:
        best = {"acc": val_acc, "epoch": epoch, "state": model.state_dict()}     # the live tensors
    return best


def best_last_epoch(model, val_acc, epoch, best):
    return {"acc": val_acc, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def best_tie_replaces(model, val_acc, epoch, best):
    if best is None or val_acc >= best["acc"]:
        best = {"acc": val_acc, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    return best


def best_lowest(model, val_acc, epoch, best):
    if best is None or val_acc < best["acc"]:
        best = {"acc": val_acc, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    return best


def best_deepcopy(model, val_acc, epoch, best):   # right: a deep copy
    import copy
    if best is None or val_acc > best["acc"]:
        best = {"acc": val_acc, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
    return best


@pytest.mark.parametrize("fn, phrases", [
    (best_live_state, ["live tensors", "clone()"]),
    (best_last_epoch, ["kept epoch 5"]),
    (best_tie_replaces, ["a tie", "strictly higher"]),
    (best_lowest, ["kept epoch 5", "0.55 at epoch 2"]),
], ids=lambda v: getattr(v, "__name__", ""))
def test_keep_best_rejects_each_mistake_by_name(fn, phrases, capsys):
    rejected(check_keep_best, fn, phrases, capsys)


@pytest.mark.parametrize("fn", [L.keep_best, best_deepcopy])
def test_keep_best_accepts_correct_variants(fn, capsys):
    ok, out = verdict(check_keep_best, fn, capsys)
    assert ok, out
