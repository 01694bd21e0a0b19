"""BatchNorm paths: lambda = 0 is PGD-AT on a model with BatchNorm; lambda > 0 goes through the general clean +
adversarial branch, checked against PGD-AT at lambda = 1e-12 (every weight and buffer the classifier uses bit
for bit: without BatchNorm in both forward modes, with BatchNorm when split_views=True); the linear-head stage
freezes the encoder's BatchNorm; BatchNorm buffers survive a resume bit for bit; DDP (2 gloo processes) ends
with the same buffers on both ranks, with one forward pass per step and with two.

Finding (measured here) and the decision it led to: by default `_clead_online` forwards clean and adversarial
images as ONE batch (the SimCLR way, and how the shipped models were trained). With BatchNorm the clean half
then changes the batch statistics that normalise the adversarial half and enters the running statistics, so
the general branch at a tiny lambda is NOT PGD-AT on a BatchNorm model
(test_general_branch_mixes_clean_images_into_batchnorm). `split_views=True` (CLI `--split-views`) forwards the
two views separately and keeps the clean pass out of the running statistics: then lambda -> 0 is PGD-AT on any
model, and DDP accepts the two forward passes before one backward (tested). The default stays joint: without
BatchNorm (the course's SmallCNN) the two modes agree to float rounding, and the shipped models keep the
settings they were trained with."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clead_lite import faithful as fa
from clead_lite.course.checkpoints import load_checkpoint
from clead_lite.models import SmallCNN
from clead_lite.course.runs import Checkpoint
from clead_lite.training import TrainConfig, train
from ddp_bn_worker import BNNet, bn_buffers

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(batch_size=32, lr=0.05, schedule="constant", eps=0.1, attack_steps=2, log_every=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(mnist5k_split):
    return mnist5k_split.x_train[:256], mnist5k_split.y_train[:256]


def bn_model(seed: int = 0) -> BNNet:
    torch.manual_seed(seed)
    return BNNet()


def fit(model, x, y, **changes):
    return train(model, x, y, TrainConfig(epochs=1, **{**BASE, **changes}), dataset="mnist5k", progress=False).model


def max_state_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def same_classifier(a, b) -> list[str]:
    """The state entries (weights and BatchNorm buffers) outside the projection head that are NOT bit-equal.
    The head is left out: PGD-AT never gives it a gradient, so SGD skips it, while at lambda = 1e-12 its
    gradient exists and weight decay moves it (about 2.5e-5 after 3 steps); the classifier never reads it."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not k.startswith("head.") and not torch.equal(sa[k], sb[k])]


def test_lambda_zero_is_pgd_at_bit_for_bit_with_batchnorm(digits):
    x, y = digits[0][:160], digits[1][:160]
    a = fit(bn_model(), x, y, method="pgd_at")
    b = fit(bn_model(), x, y, method="clead_online", contrastive_weight=0.0)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and any("running_mean" in k for k in sa)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert int(sa["conv.1.num_batches_tracked"]) == 5   # 160 / 32 steps, one forward pass each: no clean pass


def test_general_branch_at_tiny_lambda_is_pgd_at_without_batchnorm(digits):
    """lambda = 1e-12 takes the full clean + adversarial branch; without BatchNorm the adversarial half's
    cross-entropy is PGD-AT's, so the weights agree up to float rounding (the contrastive term is 1e-12)."""
    x, y = digits[0][:96], digits[1][:96]
    torch.manual_seed(0)
    init = SmallCNN(width=8, feature_dim=32, proj_dim=16)
    a = fit(copy.deepcopy(init), x, y, method="pgd_at")
    b = fit(copy.deepcopy(init), x, y, method="clead_online", contrastive_weight=1e-12)
    c = fit(copy.deepcopy(init), x, y, method="clead_online", contrastive_weight=0.5)
    assert not same_classifier(a, b), same_classifier(a, b)          # bit for bit
    assert max_state_diff(a, b) < 1e-4, max_state_diff(a, b)         # the head: weight decay only
    assert same_classifier(a, c)                                     # the comparison can fail


def test_general_branch_mixes_clean_images_into_batchnorm(digits):
    """The finding above, measured: at lambda = 1e-12 the BatchNorm running statistics also average the
    clean half of each batch (and its batch statistics normalise the adversarial half)."""
    x, y = digits[0][:96], digits[1][:96]
    a = fit(bn_model(), x, y, method="pgd_at")
    b = fit(bn_model(), x, y, method="clead_online", contrastive_weight=1e-12)
    diff = max((bn_buffers(a)[k] - bn_buffers(b)[k]).abs().max().item()
               for k in bn_buffers(a) if "running_" in k)
    assert diff > 1e-3, diff


def test_split_views_at_tiny_lambda_is_pgd_at_with_batchnorm(digits):
    """split_views=True forwards clean and adversarial images separately and keeps the running statistics of
    the clean pass out: through the FULL general branch (lambda = 1e-12, both passes, the contrastive term
    computed) a BatchNorm model then ends where PGD-AT ends, buffers and counters included; at lambda = 0.5 it
    does not (so the comparison can fail)."""
    x, y = digits[0][:96], digits[1][:96]
    a = fit(bn_model(), x, y, method="pgd_at")
    b = fit(bn_model(), x, y, method="clead_online", contrastive_weight=1e-12, split_views=True)
    c = fit(bn_model(), x, y, method="clead_online", contrastive_weight=0.5, split_views=True)
    assert not same_classifier(a, b), same_classifier(a, b)          # weights AND buffers, bit for bit
    assert int(bn_buffers(b)["conv.1.num_batches_tracked"]) == 3      # one counted pass per step
    assert max_state_diff(a, b) < 1e-4, max_state_diff(a, b)         # the head: weight decay only
    assert {k for k in same_classifier(a, c)} >= {"conv.1.running_mean", "classifier.weight"}


def test_split_views_changes_the_step_only_where_batchnorm_is(digits):
    """The option is not ignored: with BatchNorm, split and joint forwards train different models at lambda
    0.5; without BatchNorm they agree up to float rounding (per-sample layers see the same images)."""
    x, y = digits[0][:96], digits[1][:96]
    joint = fit(bn_model(), x, y, method="clead_online", contrastive_weight=0.5)
    split = fit(bn_model(), x, y, method="clead_online", contrastive_weight=0.5, split_views=True)
    assert max_state_diff(joint, split) > 1e-3
    torch.manual_seed(0)
    init = SmallCNN(width=8, feature_dim=32, proj_dim=16)
    joint = fit(copy.deepcopy(init), x, y, method="clead_online", contrastive_weight=0.5)
    split = fit(copy.deepcopy(init), x, y, method="clead_online", contrastive_weight=0.5, split_views=True)
    assert max_state_diff(joint, split) < 1e-4, max_state_diff(joint, split)


def test_split_views_is_an_online_option():
    with pytest.raises(ValueError, match="split_views=True only applies to method 'clead_online'"):
        TrainConfig(method="pgd_at", split_views=True)
    with pytest.raises(TypeError, match="split_views must be True or False"):
        TrainConfig(method="clead_online", split_views="yes")


def test_linear_head_stage_freezes_the_encoder_batchnorm(digits):
    x, y = digits[0][:128], digits[1][:128]
    model = fit(bn_model(), x, y, method="standard")      # running statistics away from their initial values
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    model.train()
    fa.train_linear_head(model, x, y, TrainConfig(epochs=1, **BASE), progress=False)
    after = model.state_dict()
    frozen = [k for k in before if not k.startswith("classifier.")]
    changed = [k for k in frozen if not torch.equal(before[k], after[k])]
    assert not changed, changed                          # weights AND running statistics, counters included
    assert not torch.equal(head_before, model.classifier.weight)
    assert all(p.requires_grad for p in model.parameters())     # unfrozen for whoever trains it next


class Killed(RuntimeError):
    pass


def test_batchnorm_buffers_resume_bit_for_bit(digits, tmp_path):
    x, y = digits[0][:96], digits[1][:96]
    cfg = TrainConfig(method="pgd_at", epochs=2, **BASE)
    straight = train(bn_model(), x, y, cfg, hook=Checkpoint(tmp_path / "a.pt"), dataset="mnist5k",
                     progress=False).model

    def kill(record, model):
        if record["kind"] == "epoch" and record["epoch"] == 1:
            raise Killed()

    path = str(tmp_path / "b.pt")
    with pytest.raises(Killed):
        train(bn_model(), x, y, cfg, hook=Checkpoint(path), dataset="mnist5k", progress=False, callback=kill)
    assert int(load_checkpoint(path)["model"]["conv.1.num_batches_tracked"]) == 3
    resumed = train(bn_model(seed=7), x, y, cfg, hook=Checkpoint(path, resume=True), dataset="mnist5k",
                    progress=False).model
    s1, s2 = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1), [k for k in s1 if not torch.equal(s1[k], s2[k])]
    assert int(s1["conv.1.num_batches_tracked"]) == 6


@pytest.mark.parametrize("split_views", [False, True], ids=["joint", "split"])
def test_ddp_two_processes_agree_on_batchnorm_buffers(tmp_path, digits, split_views):
    """Two gloo processes end with the same weights and BatchNorm buffers, with one forward pass per step
    (joint) and with two forward passes before one backward (split_views)."""
    torch.save({"x": digits[0][:160].clone(), "y": digits[1][:160].clone()}, tmp_path / "data.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "CUDA_VISIBLE_DEVICES": "", "BN_SPLIT_VIEWS": "1" if split_views else "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_bn_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"bn_rank{r}.pt", weights_only=True) for r in (0, 1))
    s0, s1 = r0["state"], r1["state"]
    differ = [k for k in s0 if not torch.equal(s0[k], s1[k])]
    assert not differ, differ                     # parameters and BatchNorm buffers alike
    assert s0["conv.1.running_mean"].abs().sum() > 0     # the statistics were actually updated
    assert [e["val_pgd_acc"] for e in r0["epochs"]] == [e["val_pgd_acc"] for e in r1["epochs"]]
    saved = load_checkpoint(tmp_path / "bn_ddp.pt")["model"]
    assert all(torch.equal(saved[k], s0[k]) for k in s0)
