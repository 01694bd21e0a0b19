"""The `colab` GPU profile: fast adversarial training (Wong, Rice & Kolter 2020) with its catastrophic-
overfitting stop, the `paper` profile (old name `full`), and the sampling error printed with accuracies."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clead_lite import attacks as A
from clead_lite.course import profiles as P
from clead_lite import training as T
from clead_lite.course.tables import format_table
from clead_lite.models import build_model
from clead_lite.course.stats import binomial_se, half_width_95, wilson_interval


def test_colab_is_the_default_on_cuda_and_quick_otherwise(monkeypatch):
    monkeypatch.delenv("CLEAD_PROFILE", raising=False)
    monkeypatch.delenv("CLEAD_DATASET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert P.default_profile_name() == "colab" and P.get_profile().name == "colab"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert P.get_profile().name == "quick"


def test_full_is_the_old_name_of_the_published_setting():
    paper = P.get_profile("full")
    assert paper is P.PROFILES["paper"] and P.get_profile("PAPER") is paper
    assert (paper.dataset, paper.model, paper.epochs, paper.train_steps) == ("cifar10", "preactresnet18", 30, 10)
    assert (paper.eval_steps, paper.eval_restarts, paper.n_eval, paper.n_autoattack) == (20, 5, 10000, 1000)
    with pytest.raises(ValueError, match="colab"):
        P.get_profile("gpu")


def test_colab_training_config_is_wongs_recipe():
    colab = P.PROFILES["colab"]
    # the recipe at a smaller budget (docs/COLAB.md): 5 epochs on a seeded 10,000-image subset instead of 15 on 50,000
    assert (colab.dataset, colab.model, colab.epochs, colab.batch_size, colab.lr) == ("cifar10", "preactresnet18", 5, 128, 0.2)
    assert colab.n_train == 10_000
    for method in ("pgd_at", "clead_online"):
        cfg = P.train_config(colab, method).resolved(colab.dataset)
        assert cfg.attack == "fgsm_rs" and cfg.attack_steps == 1 and cfg.schedule == "onecycle" and cfg.warmup == 0.5
        assert cfg.eps == pytest.approx(8 / 255) and cfg.alpha == pytest.approx(10 / 255)   # 1.25 eps
        assert cfg.co_drop == 0.2 and cfg.keep_best and cfg.n_val == 512
    quick = P.train_config(P.PROFILES["quick"], "pgd_at")
    assert quick.attack == "pgd" and quick.co_drop is None and quick.warmup == 0.4      # other profiles unchanged


@pytest.mark.parametrize("changes, match", [
    (dict(attack="fgsm_rs", attack_steps=2), "attack_steps=1"),
    (dict(attack="fgsm_rs", attack_steps=1, norm="l2"), "norm='linf'"),
    (dict(attack="bim"), "attack"),
    (dict(co_drop=0.2, keep_best=False), "keep_best"),
    (dict(co_drop=1.5), "co_drop"),
])
def test_bad_fast_training_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        T.TrainConfig(**changes)


def test_fgsm_rs_is_one_step_of_125_eps_from_a_random_start():
    torch.manual_seed(0)
    model = build_model("smallcnn").eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    cfg = T.TrainConfig(method="pgd_at", attack="fgsm_rs", attack_steps=1, eps=0.1, amp=False, seed=3).resolved()
    step = T.TrainStep(model, cfg, torch.device("cpu"), total_steps=10)
    x_adv = step.attack(x, y)
    # the same by hand: uniform start in the ball (same seeded stream), one signed step of 1.25 eps, projection
    start = A.random_in_ball(x, 0.1, "linf", torch.Generator().manual_seed(3)).requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)
    expected = torch.min(torch.max(start.detach() + 0.125 * grad.sign(), (x - 0.1).clamp(min=0)), (x + 0.1).clamp(max=1))
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6


def _scripted_validation(monkeypatch, pgd: list[float]):
    """Replace the held-out check by a scripted PGD accuracy per epoch (FGSM rising as PGD collapses)."""
    def fake(model, x_val, y_val, cfg, epoch, with_pgd=True):
        return {"val_clean_acc": 0.8, "val_pgd_acc": pgd[epoch], "val_fgsm_acc": 1.0 - pgd[epoch]}
    monkeypatch.setattr(T, "held_out_accuracy", fake)


def _train_tiny(**changes):
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    snapshots = {}

    def keep(record, model):
        if record["kind"] == "epoch":
            snapshots[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = T.TrainConfig(method="pgd_at", attack="fgsm_rs", attack_steps=1, epochs=5, batch_size=32, eps=0.1,
                        n_val=16, amp=False, **changes)
    result = T.train(build_model("smallcnn"), x, y, cfg, progress=False, callback=keep)
    return result, snapshots


def test_catastrophic_overfitting_stops_and_keeps_the_weights_before_the_collapse(monkeypatch):
    _scripted_validation(monkeypatch, [0.30, 0.40, 0.38, 0.05, 0.02])
    result, snapshots = _train_tiny(co_drop=0.2)
    epochs = result.history.epochs()
    assert result.stopped_early and result.epochs_run == 4 and result.best_epoch == 2
    assert [e["catastrophic_overfitting"] for e in epochs] == [False, False, False, True]
    assert epochs[-1]["val_fgsm_acc"] > epochs[-2]["val_fgsm_acc"]
    kept = result.model.state_dict()
    assert all(torch.equal(kept[k], snapshots[2][k]) for k in kept)
    assert not all(torch.equal(kept[k], snapshots[4][k]) for k in kept)


def test_without_co_drop_the_same_collapse_trains_on(monkeypatch):
    _scripted_validation(monkeypatch, [0.30, 0.40, 0.38, 0.05, 0.02])
    result, _ = _train_tiny()
    assert result.epochs_run == 5 and not result.stopped_early
    assert "catastrophic_overfitting" not in result.history.epochs()[-1]


def test_a_gradual_decline_is_not_catastrophic(monkeypatch):
    _scripted_validation(monkeypatch, [0.40, 0.35, 0.30, 0.25, 0.20])   # -0.05 per epoch: robust overfitting
    result, _ = _train_tiny(co_drop=0.2)
    assert result.epochs_run == 5 and result.best_epoch == 1


def test_binomial_sampling_error():
    assert binomial_se(0.5, 1000) == pytest.approx(math.sqrt(0.25 / 1000))
    assert half_width_95(0.5, 200) == pytest.approx(0.0693, abs=5e-4)
    assert half_width_95(0.5, 10000) == pytest.approx(0.0098, abs=5e-4)
    lo, hi = wilson_interval(0.0, 50)
    assert 0.0 <= lo < 1e-12 and 0.05 < hi < 0.08      # never below 0, not zero-width at p = 0
    lo, hi = wilson_interval(0.46, 1000)
    assert lo < 0.46 < hi and hi - lo == pytest.approx(2 * half_width_95(0.46, 1000), rel=0.01)
    for bad in (dict(p=0.5, n=0), dict(p=1.2, n=10), dict(p=0.5, n=2.5)):
        with pytest.raises(ValueError):
            binomial_se(**bad)


def test_format_table_prints_each_accuracy_with_its_interval():
    row = {"model": "m", "norm": "linf", "eps": 0.03, "alpha": 0.01, "steps": 20, "restarts": 1,
           "attack_source": "white-box", "n": 1000, "clean": 0.8, "fgsm": 0.5, "pgd": 0.46, "autoattack": 0.44,
           "n_autoattack": 200, "transfer": math.nan, "transfer_source": None}
    text = format_table([row])
    assert f"46.0% ±{100 * half_width_95(0.46, 1000):.1f}" in text
    assert f"44.0% ±{100 * half_width_95(0.44, 200):.1f}" in text      # AutoAttack: its own n
    assert "±" not in format_table([row], ci=False)
