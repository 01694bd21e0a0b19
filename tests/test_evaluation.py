"""Evaluation on real trained models (fixtures in conftest.py): robust vs standard, the sanity checks
(passing on honest evaluations, failing on broken attacks and on a gradient-masked model), AutoAttack,
transfer, eps sweeps, and the argument errors."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn

from clead_lite import evaluation as E
from clead_lite.attacks import make_attack
from clead_lite.course import autoattack as AA
from clead_lite.course.tables import TABLE_COLUMNS, format_table, results_table

EPS = 0.3           # the MNIST L-inf threat model
N_EVAL = 200        # test images for the PGD-20 comparisons
N_SANITY = 64       # test images for the sanity suites
N_AA = 64           # AutoAttack subset


def pgd20(seed: int = 0):
    return make_attack("pgd", eps=EPS, alpha=E.default_alpha(EPS, 20), steps=20,
                       generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def evalset(mnist5k_split):
    return mnist5k_split.x_test[:N_EVAL], mnist5k_split.y_test[:N_EVAL]


@pytest.fixture(scope="module")
def pgd_results(standard_model, robust_model, evalset):
    """name -> (PGD-20 accuracy, (N_EVAL,) per-example correctness), white-box, eps 0.3."""
    x, y = evalset
    return {name: E.robust_accuracy(m, x, y, pgd20(), return_correct=True)
            for name, m in (("standard", standard_model), ("robust", robust_model))}


# ----------------------------------------------------------------------------------------------------------
# Robust vs standard

def test_robust_model_beats_standard_under_pgd20(standard_model, robust_model, evalset, pgd_results):
    # Measured (first 200 mnist5k test images, PGD-20, eps 0.3, alpha 0.0375, 1 restart):
    #   standard: clean 94.0 %, PGD-20 0.0 %;  robust: clean 97.5 %, PGD-20 56.5 %.
    # On all 1,000 test images: standard clean 95.8 %, FGSM 14.9 %, PGD-20 0.1 %;
    #                           robust   clean 97.5 %, FGSM 77.0 %, PGD-20 57.7 %.
    x, y = evalset
    std, rob = pgd_results["standard"][0], pgd_results["robust"][0]
    assert std <= 0.02, f"the standard model should be broken by PGD-20 at eps 0.3, got {std:.1%}"
    assert rob - std >= 0.35, f"robust {rob:.1%} vs standard {std:.1%}: PGD-AT gave too little robustness"
    assert E.accuracy(robust_model, x, y) >= 0.93 and E.accuracy(standard_model, x, y) >= 0.9


def test_transfer_is_weaker_than_whitebox(standard_model, robust_model, evalset, pgd_results):
    # Measured on 200 images: PGD-20 made on the standard model and scored on the robust one: 76.0 %
    # (white-box 56.5 %); made on the robust model and scored on the standard one: 45.5 % (white-box 0.0 %).
    # (All 1,000 test images: 79.4 % and 44.7 %.) Here on the first 100 images.
    x, y = evalset[0][:100], evalset[1][:100]
    whitebox = {name: correct[:100].float().mean().item() for name, (_, correct) in pgd_results.items()}
    onto_robust = E.transfer_accuracy(standard_model, robust_model, x, y, pgd20())
    onto_standard = E.transfer_accuracy(robust_model, standard_model, x, y, pgd20())
    assert onto_robust >= whitebox["robust"] + 0.1
    assert onto_standard >= whitebox["standard"] + 0.2


def test_robust_accuracy_per_example_and_batching(robust_model, evalset, pgd_results):
    x, y = evalset
    acc, correct = pgd_results["robust"]
    assert correct.shape == (N_EVAL,) and correct.dtype == torch.bool
    assert correct.float().mean().item() == pytest.approx(acc)
    # a deterministic attack gives the same per-example result in any batch size
    fgsm, x, y = make_attack("fgsm", eps=EPS), x[:64], y[:64]
    a512, c512 = E.robust_accuracy(robust_model, x, y, fgsm, return_correct=True)
    a7, c7 = E.robust_accuracy(robust_model, x, y, fgsm, batch_size=7, return_correct=True)
    assert a7 == a512 and torch.equal(c7, c512)
    # an attack that returns x unchanged gives exactly the clean accuracy
    assert E.robust_accuracy(robust_model, x, y, lambda m, xb, yb: xb) == E.accuracy(robust_model, x, y)


def test_predict_and_accuracy_match_a_plain_forward(standard_model, evalset):
    x, y = evalset
    with torch.no_grad():
        expected = standard_model(x).argmax(1)
    standard_model.train()        # predict must use eval mode and give the mode back
    try:
        assert torch.equal(E.predict(standard_model, x, batch_size=7), expected)
        assert standard_model.training
    finally:
        standard_model.eval()
    assert E.predict(standard_model, x).dtype == torch.int64
    assert E.accuracy(standard_model, x, y) == pytest.approx((expected == y).float().mean().item())


# ----------------------------------------------------------------------------------------------------------
# eps sweeps

def test_eps_sweep_is_monotone_and_starts_at_clean(standard_model, evalset):
    x, y = evalset[0][:64], evalset[1][:64]
    eps_values = [0.0, 0.05, 0.1, 0.2, 0.3]
    clean = E.accuracy(standard_model, x, y)
    sweeps = {attack: E.eps_sweep(standard_model, x, y, eps_values, attack, **kwargs)
              for attack, kwargs in (("pgd", {"steps": 5}), ("fgsm", {}), ("noise", {}))}
    for attack, frame in sweeps.items():
        assert list(frame.columns[:2]) == ["eps", "accuracy"] and list(frame.eps) == eps_values
        assert frame.accuracy.iloc[0] == clean
        assert (frame.accuracy.diff().dropna() <= 2 / 64).all(), f"{attack} sweep not monotone:\n{frame}"
    # measured at eps 0.3 on these 64 images: PGD-5 0 %, FGSM ~10-15 %, random sign noise ~90 %
    assert sweeps["pgd"].accuracy.iloc[-1] <= 0.05
    assert sweeps["pgd"].accuracy.iloc[-1] <= sweeps["fgsm"].accuracy.iloc[-1] < sweeps["noise"].accuracy.iloc[-1] - 0.3
    l2 = E.eps_sweep(standard_model, x, y, [0.0, 1.0, 3.0], "pgd_l2", steps=5)   # L2 budgets above 1
    assert l2.accuracy.iloc[0] == clean and l2.accuracy.iloc[-1] < l2.accuracy.iloc[1] < clean


# ----------------------------------------------------------------------------------------------------------
# The sanity suites: pass on honest evaluations ...

@pytest.fixture(scope="module")
def sanity_reports(standard_model, robust_model, evalset):
    x, y = evalset[0][:N_SANITY], evalset[1][:N_SANITY]
    return {
        "standard": E.sanity_checks(standard_model, x, y, EPS, steps=10, undefended=True, source=robust_model),
        "robust": E.sanity_checks(robust_model, x, y, EPS, steps=10, source=standard_model),
    }


ALL_CHECKS = ["eps0_equals_clean", "monotone_in_eps", "large_eps_breaks", "more_steps_not_weaker",
              "more_restarts_not_weaker", "attack_beats_single_step", "whitebox_le_transfer", "noise_much_weaker",
              "within_ball", "undefended_near_zero"]


def test_sanity_suite_passes_on_the_standard_model(sanity_reports):
    report = sanity_reports["standard"]
    assert report.passed, str(report)
    assert [c.name for c in report.checks] == ALL_CHECKS
    assert all(c.passed is True for c in report.checks)          # flagged undefended: every check applies


def test_sanity_suite_passes_on_the_robust_model(sanity_reports):
    report = sanity_reports["robust"]
    assert report.passed, str(report)
    assert report["undefended_near_zero"].passed is None          # not applicable, never a fake pass
    assert report["undefended_near_zero"].status == "n/a"
    assert report.settings["accuracy"] >= 0.3                     # PGD-10 accuracy: really robust


def test_sanity_suite_l2(standard_model, evalset):
    x, y = evalset[0][:48], evalset[1][:48]
    report = E.sanity_checks(standard_model, x, y, 2.0, norm="l2", steps=5, more_restarts=2)
    assert report.passed, str(report)
    assert report["large_eps_breaks"].numbers["large_eps"] == pytest.approx(28.0)   # sqrt(784): any image
    assert "FGM-L2" in report["attack_beats_single_step"].detail


def test_sanity_report_renders(sanity_reports):
    report = sanity_reports["robust"]
    text = str(report)
    assert "ALL PASSED" in text and "eps 0.3" in text and "n/a" in text
    assert all(name in text for name in ALL_CHECKS)
    frame = report.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.check) == ALL_CHECKS
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is True and len(data["checks"]) == len(ALL_CHECKS)
    assert report["large_eps_breaks"].numbers["accuracy"] <= 0.05
    with pytest.raises(KeyError, match="no check named"):
        report["nonsense"]


# ... and fail on broken attacks (proof that each check can fail)

def _failed(report) -> set[str]:
    return {c.name for c in report.failed}


@pytest.fixture(scope="module")
def small(evalset):
    return evalset[0][:64], evalset[1][:64]


def test_identity_attack_fails_the_strength_checks(standard_model, small):
    x, y = small
    report = E.sanity_checks(standard_model, x, y, EPS, steps=5, undefended=True,
                             attack=lambda eps, steps, restarts: (lambda m, xb, yb: xb.clone()))
    assert not report.passed
    assert {"large_eps_breaks", "attack_beats_single_step", "noise_much_weaker",
            "undefended_near_zero"} <= _failed(report), str(report)
    assert report["within_ball"].passed and report["eps0_equals_clean"].passed


def test_attacks_that_leave_the_ball_or_the_image_range_fail(standard_model, small):
    x, y = small
    too_far = E.sanity_checks(standard_model, x, y, EPS, steps=5,
                              attack=lambda eps, steps, restarts: make_attack("fgsm", eps=min(1.0, 2 * eps)))
    assert "within_ball" in _failed(too_far), str(too_far)
    unclipped = E.sanity_checks(standard_model, x, y, EPS, steps=5,
                                attack=lambda eps, steps, restarts: (lambda m, xb, yb: xb + eps))
    assert "within_ball" in _failed(unclipped) and "values in" in unclipped["within_ball"].detail


def test_reversed_and_perverse_attacks_fail_the_monotonicity_checks(standard_model, small):
    x, y = small[0][:32], small[1][:32]

    def reversed_eps(eps, steps, restarts):      # stronger at small eps: accuracy rises with eps
        return make_attack("pgd", eps=EPS - eps if eps <= EPS else eps, alpha=0.1, steps=3)

    report = E.sanity_checks(standard_model, x, y, EPS, steps=3, more_restarts=2, attack=reversed_eps)
    assert {"eps0_equals_clean", "monotone_in_eps"} <= _failed(report), str(report)

    def perverse(eps, steps, restarts):          # more steps or more restarts -> does nothing
        if steps > 3 or restarts > 1:
            return lambda m, xb, yb: xb.clone()
        return make_attack("pgd", eps=eps, alpha=E.default_alpha(eps, 3), steps=3)

    report = E.sanity_checks(standard_model, x, y, EPS, steps=3, more_restarts=2, attack=perverse)
    assert {"more_steps_not_weaker", "more_restarts_not_weaker"} <= _failed(report), str(report)


def test_whitebox_weaker_than_transfer_fails(standard_model, robust_model, small):
    x, y = small

    def only_on_source(eps, steps, restarts):    # a "white-box" attack that does nothing on the target
        pgd = make_attack("pgd", eps=eps, alpha=E.default_alpha(eps, 5), steps=5)
        return lambda m, xb, yb: xb.clone() if m is robust_model else pgd(m, xb, yb)

    report = E.sanity_checks(robust_model, x, y, EPS, steps=5, source=standard_model, attack=only_on_source)
    assert "whitebox_le_transfer" in _failed(report), str(report)


class ScaledLogits(nn.Module):
    """Gradient masking by logit scaling: the same predictions, but softmax saturates in float32, so the
    cross-entropy gradient is exactly 0 on confidently classified inputs and PGD cannot move."""

    def __init__(self, base: nn.Module, scale: float = 1e4):
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        return self.base(x) * self.scale


def test_gradient_masked_model_is_caught(standard_model, small):
    x, y = small[0][:48], small[1][:48]
    masked = ScaledLogits(standard_model)
    assert torch.equal(E.predict(masked, x), E.predict(standard_model, x))
    report = E.sanity_checks(masked, x, y, EPS, steps=3, more_restarts=2, undefended=True)
    # PGD on the masked model looks "robust" (measured: 97.9 % at eps 0.3, 60.4 % even at eps 1, where
    # any image is reachable), but the suite says why not to believe it
    assert report.settings["accuracy"] > 0.5
    assert not report.passed
    assert {"large_eps_breaks", "noise_much_weaker", "undefended_near_zero"} <= _failed(report), str(report)


# ----------------------------------------------------------------------------------------------------------
# AutoAttack (the original, package pyautoattack)

@pytest.fixture(scope="module")
def autoattack_results(standard_model, robust_model, evalset):
    # Measured with the full standard version on the same 64 images (seed 0): standard 0.0 % (clean 93.8 %);
    # robust 45.3 % (clean 98.4 %, PGD-20 54.7 %), every point broken by APGD-CE, none by APGD-T, FAB-T or
    # Square; ~800 CPU seconds. APGD-CE + APGD-DLR below: robust 45.3 % as well.
    x, y = evalset
    return {
        "standard": AA.autoattack_accuracy(standard_model, x, y, EPS, n=N_AA, seed=0, return_details=True),
        # the full standard version costs many CPU minutes on this model (APGD-T, FAB-T with 9 target
        # classes and Square with 5000 queries on every still-robust point): the test runs APGD-CE and
        # APGD-DLR (100 iterations each), the untargeted gradient core of AutoAttack
        "robust": AA.autoattack_accuracy(robust_model, x, y, EPS, n=N_AA, seed=0, version="custom",
                                         attacks=["apgd-ce", "apgd-dlr"], return_details=True),
    }


def test_autoattack_robust_beats_standard_and_is_at_least_as_strong_as_pgd(autoattack_results, pgd_results):
    std, rob = autoattack_results["standard"], autoattack_results["robust"]
    assert std.n == rob.n == N_AA and torch.equal(std.indices, rob.indices)
    assert std.accuracy <= 0.02 < 0.3 <= rob.accuracy
    for name, result in autoattack_results.items():
        pgd_on_subset = pgd_results[name][1][result.indices].float().mean().item()
        assert result.accuracy <= pgd_on_subset + 2 / N_AA, (name, result.accuracy, pgd_on_subset)
        assert result.max_perturbation <= EPS + 1e-6
        assert result.correct.float().mean().item() == result.accuracy


def test_autoattack_records_what_ran(autoattack_results):
    std, rob = autoattack_results["standard"], autoattack_results["robust"]
    assert std.version == "standard" and std.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std.attacks_run[0] == "apgd-ce" and std.accuracy_after["apgd-ce"] == pytest.approx(std.accuracy, abs=1e-4)
    assert rob.attacks_run == ["apgd-ce", "apgd-dlr"]
    assert rob.accuracy_after["apgd-dlr"] <= rob.accuracy_after["apgd-ce"]
    assert rob.accuracy_after["apgd-dlr"] == pytest.approx(rob.accuracy, abs=1e-4)   # logged as 45.31 %


def test_autoattack_float_result_and_global_rng_untouched(standard_model, evalset):
    x, y = evalset
    state = torch.get_rng_state()
    acc = AA.autoattack_accuracy(standard_model, x, y, EPS, version="custom", attacks=["apgd-ce"], n=4, seed=3)
    assert isinstance(acc, float) and 0.0 <= acc <= 0.25
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------------------------------------
# evaluate / results_table / format_table

def test_evaluate_row_states_the_threat_model_and_matches_the_parts(standard_model, robust_model, small):
    x, y = small
    row = E.evaluate(robust_model, x, y, EPS, steps=5, source=standard_model, name="pgd-at",
                     source_name="standard")
    assert row["model"] == "pgd-at" and row["norm"] == "linf" and row["eps"] == EPS
    assert row["steps"] == 5 and row["restarts"] == 1 and row["alpha"] == pytest.approx(E.default_alpha(EPS, 5))
    assert row["attack_source"].startswith("white-box") and row["transfer_source"] == "standard"
    assert "autoattack" not in row and row["n"] == 64       # the course adds AutoAttack's column (cli, aa_cache)
    attack = make_attack("pgd", eps=EPS, alpha=row["alpha"], steps=5, generator=torch.Generator().manual_seed(0))
    assert row["pgd"] == E.robust_accuracy(robust_model, x, y, attack)     # seeded: reproducible
    assert row["clean"] == E.accuracy(robust_model, x, y)
    assert row["fgsm"] == E.robust_accuracy(robust_model, x, y, make_attack("fgsm", eps=EPS))
    assert row["pgd"] <= row["fgsm"] <= row["clean"] and row["pgd"] <= row["transfer"]
    assert "pgd_correct" not in row
    per = E.evaluate(robust_model, x, y, EPS, steps=5, per_image=True)      # the same run, its outcomes kept
    assert per["pgd_correct"].dtype == torch.bool and per["pgd_correct"].shape == (64,)
    assert per["pgd"] == row["pgd"] == per["pgd_correct"].float().mean().item()
    fresh = make_attack("pgd", eps=EPS, alpha=row["alpha"], steps=5, generator=torch.Generator().manual_seed(0))
    _, correct = E.robust_accuracy(robust_model, x, y, fresh, return_correct=True)
    assert torch.equal(per["pgd_correct"], correct)
    with pytest.raises(TypeError, match="per_image must be True or False"):
        E.evaluate(robust_model, x, y, EPS, steps=5, per_image="yes")

    other = E.evaluate(standard_model, x, y, EPS, steps=5, name="standard")
    table = results_table([row, other])
    assert list(table.columns) == [c for c in TABLE_COLUMNS if c in row] and list(table.model) == ["pgd-at", "standard"]
    text = format_table([row, other])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].split()[0] == "model"
    assert f"{100 * row['pgd']:.1f}%" in lines[2] and lines[3].split()[-2:] == ["-", "-"]


def test_channels_last_changes_the_layout_only_and_restores_it(robust_model, evalset):
    """evaluate / sanity_checks / autoattack_accuracy run with the weights in channels_last (faster on the
    CPU): the outputs must agree to float rounding, and the model must come back exactly as it was."""
    x, y = evalset
    params = list(robust_model.parameters())
    before = [(p.data_ptr(), p.detach().clone(), p.stride()) for p in params]
    with torch.no_grad():
        plain = robust_model.eval()(x)
    with E.channels_last_weights(robust_model):
        conv = [p for p in params if p.dim() == 4]
        assert conv and all(p.stride() == torch.empty_like(p, memory_format=torch.channels_last).stride()
                            for p in conv)             # every kernel, the (32, 1, 3, 3) one of conv 1 too
        strides = [p.stride() for p in conv]
        with E.channels_last_weights(robust_model):                  # nested (evaluate -> autoattack_accuracy)
            pass
        assert [p.stride() for p in conv] == strides          # the inner one neither converted nor restored
        with torch.no_grad():
            fast = robust_model(x)
    assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast.argmax(1), plain.argmax(1))
    for p, (ptr, value, stride) in zip(params, before):
        assert p.data_ptr() == ptr and p.stride() == stride and torch.equal(p, value)

    # the whole evaluation, in channels_last, agrees with the parts measured in the default layout
    attack = make_attack("pgd", eps=EPS, alpha=E.default_alpha(EPS, 5), steps=5,
                         generator=torch.Generator().manual_seed(0))
    row = E.evaluate(robust_model, x, y, EPS, steps=5)
    plain_pgd = E.robust_accuracy(robust_model, x, y, attack)
    assert abs(row["pgd"] - plain_pgd) <= 1 / len(y) + 1e-9     # at most one example flips on rounding
    assert all(p.is_contiguous() for p in params)


# ----------------------------------------------------------------------------------------------------------
# Bad input: clear errors

def test_bad_images_and_labels(standard_model, small):
    x, y = small
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        E.accuracy(standard_model, x * 255, y)
    with pytest.raises(TypeError, match="int64"):
        E.accuracy(standard_model, x, y.float())
    with pytest.raises(ValueError, match="batch size"):
        E.robust_accuracy(standard_model, x, y[:10], pgd20())
    with pytest.raises(ValueError, match="channels"):
        E.predict(standard_model, x.repeat(1, 3, 1, 1))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        E.predict(standard_model, x[0])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        E.accuracy("model", x, y)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        E.predict(standard_model, x, batch_size=0)


def test_bad_attacks(standard_model, small):
    x, y = small
    with pytest.raises(TypeError, match="callable attack"):
        E.robust_accuracy(standard_model, x, y, "pgd")
    with pytest.raises(ValueError, match="shape of its input"):
        E.robust_accuracy(standard_model, x, y, lambda m, xb, yb: xb[:1])
    with pytest.raises(TypeError, match="target"):
        E.transfer_accuracy(standard_model, None, x, y, pgd20())


def test_bad_eps_and_settings(standard_model, small):
    x, y = small
    with pytest.raises(ValueError, match="8/255"):
        E.evaluate(standard_model, x, y, 8)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        E.evaluate(standard_model, x, y, EPS, steps=0)
    with pytest.raises(ValueError, match="unknown norm"):
        E.evaluate(standard_model, x, y, EPS, norm="l3")
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        E.eps_sweep(standard_model, x, y, [0.1], "cw")
    with pytest.raises(ValueError, match="eps_values is empty"):
        E.eps_sweep(standard_model, x, y, [])
    with pytest.raises(TypeError, match="sequence of budgets"):
        E.eps_sweep(standard_model, x, y, 0.3)
    with pytest.raises(ValueError, match=r"eps_values\[1\] must be in \[0, 1\]"):
        E.eps_sweep(standard_model, x, y, [0.1, 2.0], "pgd")
    with pytest.raises(ValueError, match="eps must be > 0"):
        E.sanity_checks(standard_model, x, y, 0.0)
    with pytest.raises(ValueError, match="large_eps must be > eps"):
        E.sanity_checks(standard_model, x, y, EPS, large_eps=0.2)
    with pytest.raises(ValueError, match="more_restarts must be > restarts"):
        E.sanity_checks(standard_model, x, y, EPS, restarts=2, more_restarts=2)
    with pytest.raises(TypeError, match="undefended must be True or False"):
        E.sanity_checks(standard_model, x, y, EPS, undefended="yes")
    with pytest.raises(TypeError, match="factory"):
        E.sanity_checks(standard_model, x, y, EPS, attack="pgd")


def test_bad_autoattack_arguments(standard_model, small):
    x, y = small
    with pytest.raises(ValueError, match="unknown norm 'Lfoo'"):
        AA.autoattack_accuracy(standard_model, x, y, EPS, norm="Lfoo")
    with pytest.raises(ValueError, match="eps must be > 0"):
        AA.autoattack_accuracy(standard_model, x, y, 0.0)
    with pytest.raises(ValueError, match="unknown version"):
        AA.autoattack_accuracy(standard_model, x, y, EPS, version="fast")
    with pytest.raises(ValueError, match="exactly when version='custom'"):
        AA.autoattack_accuracy(standard_model, x, y, EPS, version="custom")
    with pytest.raises(ValueError, match="unknown AutoAttack attack 'pgd'"):
        AA.autoattack_accuracy(standard_model, x, y, EPS, version="custom", attacks=["apgd-ce", "pgd"])
    with pytest.raises(ValueError, match="n must be at most the number of examples"):
        AA.autoattack_accuracy(standard_model, x, y, EPS, n=65)


def test_bad_tables():
    with pytest.raises(TypeError, match="non-empty list of dicts"):
        results_table([])
    with pytest.raises(TypeError, match="non-empty list of dicts"):
        format_table([1, 2])
