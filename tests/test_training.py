"""The training loop: every method learns, PGD-AT buys robustness, lambda = 0 is PGD-AT bit for bit, resume
is exact, early stopping keeps the best weights, the faithful stages, DDP under torchrun (gloo, CPU)."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clead_lite import faithful as fa
from clead_lite import training as tr
from clead_lite.course.runs import Checkpoint
from clead_lite.course.views_cache import ViewsCache
from clead_lite.course.profiles import train_config
from clead_lite.attacks import pgd
from clead_lite.course.checkpoints import CheckpointError, load_checkpoint
from clead_lite.losses import info_nce
from clead_lite.models import SmallCNN
from clead_lite.course.profiles import get_profile
from clead_lite.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
# small enough for 2 shared CPU cores: a narrow SmallCNN, a few hundred MNIST digits, 2-step PGD
BASE = dict(batch_size=32, lr=0.05, schedule="constant", eps=0.1, attack_steps=2, log_every=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(width=8, feature_dim=32, proj_dim=16)


@pytest.fixture(scope="module")
def digits(mnist5k_split):
    """1,024 mnist5k training digits (the session's split from conftest.py)."""
    return mnist5k_split.x_train[:1024], mnist5k_split.y_train[:1024]


@pytest.fixture(scope="module")
def test_digits(mnist5k_split):
    return mnist5k_split.x_test[:256], mnist5k_split.y_test[:256]


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def same_params(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(params_of(a), params_of(b)))


# ---------------------------------------------------------------------------------------------- methods
@pytest.mark.parametrize("method", ["standard", "pgd_at", "clead_online"])
def test_each_method_runs_and_the_loss_decreases(digits, method):
    x, y = digits[0][:256], digits[1][:256]
    result = train(tiny_model(), x, y, TrainConfig(method=method, epochs=3, **BASE), dataset="mnist5k",
                   progress=False)
    epochs = result.history.epochs()
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and result.epochs_run == 3
    assert epochs[-1]["loss"] < epochs[0]["loss"] - 0.05, [e["loss"] for e in epochs]
    steps = result.frame("step")
    assert len(steps) >= 3 and {"loss", "acc", "lr", "step", "epoch"} <= set(steps.columns)
    assert all(math.isfinite(v) for v in steps["loss"])
    if method == "clead_online":
        assert {"ce", "contrastive"} <= set(steps.columns)
        assert steps["contrastive"].iloc[-1] < steps["contrastive"].iloc[0]
    assert not result.model.training


def test_pgd_at_raises_pgd_accuracy_over_standard(digits, test_digits):
    """From the same standard-trained start, two more epochs of PGD-AT vs two more of standard training."""
    x, y = digits
    xt, yt = test_digits
    torch.manual_seed(0)
    start = SmallCNN(width=16, feature_dim=32, proj_dim=16)
    train(start, x, y, TrainConfig(method="standard", epochs=3, batch_size=64, lr=0.1, schedule="constant"),
          dataset="mnist5k", progress=False)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="onecycle", eps=0.15, attack_steps=3, log_every=50)
    std = train(copy.deepcopy(start), x, y, cfg.replace(method="standard"), dataset="mnist5k", progress=False).model
    rob = train(copy.deepcopy(start), x, y, cfg.replace(method="pgd_at"), dataset="mnist5k", progress=False).model

    def pgd_acc(model):
        x_adv = pgd(model, xt, yt, eps=0.15, alpha=0.025, steps=10, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return (model(x_adv).argmax(1) == yt).float().mean().item()

    a_std, a_rob = pgd_acc(std), pgd_acc(rob)
    assert a_rob > a_std + 0.2, (a_std, a_rob)


def test_lambda_zero_reproduces_pgd_at_exactly(digits):
    x, y = digits[0][:160], digits[1][:160]
    cfg = TrainConfig(epochs=1, **BASE)
    a = train(tiny_model(), x, y, cfg.replace(method="pgd_at"), dataset="mnist5k", progress=False).model
    b = train(tiny_model(), x, y, cfg.replace(method="clead_online", contrastive_weight=0.0), dataset="mnist5k",
              progress=False).model
    c = train(tiny_model(), x, y, cfg.replace(method="clead_online", contrastive_weight=0.5), dataset="mnist5k",
              progress=False).model
    assert same_params(a, b)
    assert not same_params(a, c)  # the comparison can fail: lambda > 0 changes the weights


class Killed(RuntimeError):
    pass


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(digits, tmp_path):
    x, y = digits[0][:128], digits[1][:128]
    cfg = TrainConfig(method="clead_online", epochs=2, batch_size=32, lr=0.05, schedule="onecycle", eps=0.1,
                      attack_steps=2, log_every=3, n_val=32, val_steps=2)
    straight = train(tiny_model(), x, y, cfg, hook=Checkpoint(tmp_path / "a.pt"), dataset="mnist5k",
                     progress=False)

    def kill_after_epoch_1(record, model):
        if record["kind"] == "epoch" and record["epoch"] == 1:
            raise Killed()

    path = str(tmp_path / "b.pt")
    with pytest.raises(Killed):
        train(tiny_model(), x, y, cfg, hook=Checkpoint(path), dataset="mnist5k", progress=False,
              callback=kill_after_epoch_1)
    saved = load_checkpoint(path)
    assert saved["epoch"] == 1 and not saved["finished"] and "train_state" in saved and "rng" in saved
    resumed = train(tiny_model(seed=99), x, y, cfg, hook=Checkpoint(path, resume=True), dataset="mnist5k",
                    progress=False)
    assert same_params(straight.model, resumed.model)
    drop = ("seconds", "images_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]
    assert strip(resumed.history) == strip(straight.history)
    assert resumed.best_epoch == straight.best_epoch
    final = load_checkpoint(path)
    assert final["finished"] and "train_state" not in final  # a finished checkpoint is slim
    # resuming a finished run trains nothing more and returns the same model
    again = train(tiny_model(seed=5), x, y, cfg, hook=Checkpoint(path, resume=True), dataset="mnist5k",
                  progress=False)
    assert same_params(again.model, straight.model)
    with pytest.raises(CheckpointError, match=r"other settings \(lr: checkpoint 0.05 vs now 0.1"):
        train(tiny_model(), x, y, cfg.replace(lr=0.1), hook=Checkpoint(path, resume=True), dataset="mnist5k",
              progress=False)


def test_early_stopping_keeps_the_best_weights(digits):
    x, y = digits[0][:320], digits[1][:320]
    snapshot = {}

    def spoil_after_epoch_1(record, model):
        if record["kind"] == "epoch" and record["epoch"] == 1:
            snapshot["params"] = params_of(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()  # from now on the model predicts one class: held-out accuracy drops

    cfg = TrainConfig(method="pgd_at", epochs=6, n_val=64, val_steps=3, early_stop_patience=1,
                      **{**BASE, "eps": 0.05})
    result = train(tiny_model(), x, y, cfg, dataset="mnist5k", progress=False, callback=spoil_after_epoch_1)
    epochs = result.history.epochs()
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1
    assert epochs[1]["val_pgd_acc"] <= epochs[0]["val_pgd_acc"]
    assert result.best_val_acc == epochs[0]["val_pgd_acc"]
    assert all(torch.equal(p, q) for p, q in zip(snapshot["params"], params_of(result.model)))


def test_amp_bf16_path_runs_on_cpu(digits):
    x, y = digits[0][:64], digits[1][:64]
    model = tiny_model()
    before = params_of(model)
    cfg = TrainConfig(method="clead_online", epochs=1, amp=True, **BASE)
    step = tr.TrainStep(tiny_model(), cfg.resolved(), torch.device("cpu"), total_steps=2)
    assert step.amp_dtype == torch.bfloat16 and not step.scaler.is_enabled()
    result = train(model, x, y, cfg, progress=False)
    assert all(math.isfinite(r["loss"]) for r in result.history)
    assert not all(torch.equal(p, q) for p, q in zip(before, params_of(result.model)))
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.parametrize("options", [dict(attack_loss="contrastive"), dict(supervised_contrastive=True),
                                     dict(clean_ce=True), dict(clean_ce=True, contrastive_weight=0.0)])
def test_clead_online_options_run(digits, options):
    x, y = digits[0][:96], digits[1][:96]
    result = train(tiny_model(), x, y, TrainConfig(method="clead_online", epochs=1, **{**BASE, **options}),
                   dataset="mnist5k", progress=False)
    record = result.history.epochs()[0]
    assert math.isfinite(record["loss"]) and "ce" in record
    assert ("contrastive" in record) == (options.get("contrastive_weight", 0.5) > 0)


def test_contrastive_attack_loss_is_per_example_info_nce():
    torch.manual_seed(0)
    za, zv = torch.randn(12, 5), torch.randn(12, 5)
    per = info_nce(za, zv, temperature=0.2, reduction="none")
    assert per.shape == (12,)
    torch.testing.assert_close(per.mean(), info_nce(za, zv, temperature=0.2))


def test_learning_rate_schedules():
    total = 100
    one = [tr.lr_factor(i, total, "onecycle", warmup=0.4) for i in range(total)]
    assert max(one) == pytest.approx(1.0, abs=0.02) and one.index(max(one)) in (39, 40)
    assert one[0] < 0.02 and one[-1] < 0.02 and all(v > 0 for v in one)
    piece = [tr.lr_factor(i, total, "piecewise") for i in range(total)]
    assert piece[0] == 1.0 and piece[60] == 0.1 and piece[90] == 0.01
    assert {tr.lr_factor(i, total, "constant") for i in range(total)} == {1.0}


def test_config_validation_errors():
    with pytest.raises(ValueError, match=r"unknown method 'mart'; allowed: 'standard', 'pgd_at', 'trades', 'clead_online'"):
        TrainConfig(method="mart")
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\], got 8.*8/255"):
        TrainConfig(eps=8)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match=r"contrastive_weight \(lambda\) must be (a finite number )?>= 0, got -1"):
        TrainConfig(method="clead_online", contrastive_weight=-1.0)
    with pytest.raises(ValueError, match="attack_loss='contrastive' only applies to method 'clead_online'"):
        TrainConfig(method="pgd_at", attack_loss="contrastive")
    with pytest.raises(TypeError, match="unknown TrainConfig field.*'lamda'"):
        TrainConfig().replace(lamda=0.5)
    with pytest.raises(TypeError, match="amp must be None"):
        TrainConfig(amp="yes")
    with pytest.raises(ValueError, match="eps is not set"):
        train(tiny_model(), torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64),
              TrainConfig(method="pgd_at"), progress=False)
    with pytest.raises(ValueError, match="train_faithful"):
        train(tiny_model(), torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64),
              TrainConfig(method="clead_faithful", eps=0.1), progress=False)
    with pytest.raises(ValueError, match=r"x_train must lie in \[0, 1\]"):
        train(tiny_model(), torch.rand(8, 1, 28, 28) * 255, torch.zeros(8, dtype=torch.int64),
              TrainConfig(method="standard"), progress=False)
    cfg = train_config(get_profile("smoke"), "clead_online")
    assert cfg.eps == 0.3 and cfg.contrastive_weight == 0.5 and cfg.resolved().alpha == pytest.approx(0.3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------- faithful
def test_faithful_views_are_uint8_and_cached(digits, tmp_path, monkeypatch):
    x, y = digits[0][:48], digits[1][:48]
    surrogate = tiny_model().eval()
    kw = dict(eps=0.3, kinds=("pgd_crop", "fgsm", "cw"), cw_steps=3, batch_size=32, cache=ViewsCache(tmp_path, progress=False), progress=False)
    views = fa.precompute_adversarial_views(surrogate, x, y, **kw)
    assert set(views) == {"pgd_crop", "fgsm", "cw"}
    for v in views.values():
        assert v.dtype == torch.uint8 and v.shape == x.shape
    x8 = fa.to_uint8(x).int()
    assert (views["fgsm"].int() - x8).abs().max() <= round(0.3 * 255) + 1       # in the eps ball (8-bit)
    assert (views["fgsm"] != fa.to_uint8(x)).float().mean() > 0.3                 # and actually perturbed
    assert not torch.equal(views["pgd_crop"], fa.to_uint8(x))
    files = list(tmp_path.glob("views-*.pt"))
    assert len(files) == 1

    def no_attacks(*a, **k):
        raise AssertionError("the cache should have been used")

    for name in ("pgd", "fgsm", "cw_l2"):
        monkeypatch.setattr(fa, name, no_attacks)
    again = fa.precompute_adversarial_views(surrogate, x, y, **kw)
    assert all(torch.equal(views[k], again[k]) for k in views)
    with pytest.raises(AssertionError, match="cache"):   # other settings: another key, attacks run again
        fa.precompute_adversarial_views(surrogate, x, y, **{**kw, "eps": 0.2})


def test_faithful_pipeline_stages(digits, tmp_path):
    x, y = digits[0][:128], digits[1][:128]
    cfg = TrainConfig(method="clead_faithful", epochs=1, batch_size=32, lr=0.05, eps=0.3,
                      log_every=2, n_val=32, val_steps=2, seed=0)
    res = fa.train_faithful(x, y, cfg, fa.FaithfulConfig(cw_steps=2), dataset="mnist5k", model_name="smallcnn", cache=ViewsCache(tmp_path, progress=False), progress=False)
    assert set(res.histories) == {"surrogate", "encoder", "head"}
    assert res.surrogate is not res.model and not res.model.training
    enc = res.histories["encoder"].epochs()[0]
    assert math.isfinite(enc["loss"]) and "acc" not in enc
    head = res.histories["head"].epochs()[0]
    assert "val_clean_acc" in head and 0.0 <= head["val_clean_acc"] <= 1.0   # the authors' recipe: clean selection
    assert all(p.requires_grad for p in res.model.parameters())
    assert "stage" in res.frame().columns and len(list(tmp_path.glob("views-*.pt"))) == 1
    # the linear head stage leaves the encoder untouched and trains only the classifier
    model = res.model
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    head_before = model.classifier.weight.detach().clone()
    x_fit, y_fit, _, _ = tr.split_validation(x, y, cfg.n_val, cfg.seed)   # the images the views were made of
    fa.train_linear_head(model, x_fit, y_fit, cfg.replace(n_val=0, seed=1), fgsm_view=res.views["fgsm"], progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())
    assert not torch.equal(head_before, model.classifier.weight)


# ---------------------------------------------------------------------------------------------- DDP
def test_ddp_two_processes_with_gloo_on_cpu(tmp_path, digits):
    torch.save({"x": digits[0][:256].clone(), "y": digits[1][:256].clone()}, tmp_path / "data.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    run = lambda: subprocess.run(cmd, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True,
                                 timeout=300)
    proc = run()
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        proc = run()   # a rank aborted at exit in gloo's teardown (seen once, under CI load): once more; twice fails
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["world_size"] == 2 and r["epochs_run"] == 3 and not r["is_initialized_after"]
        losses = [e["loss"] for e in r["epochs"]]
        assert losses[-1] < losses[0], losses
        assert all(e["images"] == 256 for e in r["epochs"])  # the two shards together: the whole set
    # the ranks agree: same reduced epoch losses and identical weights
    assert [e["loss"] for e in ranks[0]["epochs"]] == [e["loss"] for e in ranks[1]["epochs"]]
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"] and ranks[0]["param_abs_sum"] == ranks[1]["param_abs_sum"]
    # each rank took 256 / 2 / 32 = 4 steps per epoch: 4 step records per epoch with log_every=1
    assert ranks[0]["n_step_records"] == 12
    saved = load_checkpoint(tmp_path / "ddp.pt")
    assert saved["finished"] and saved["epoch"] == 3 and not any(k.startswith("module.") for k in saved["model"])
