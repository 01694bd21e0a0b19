"""Carlini-Wagner L2 with the search over c (Carlini and Wagner 2017): the update rule on hand-made cases,
then on a trained SmallCNN (conftest's `standard_model`) every run of the search recorded and checked: the c's
follow the rule, the kept example is the smallest over the runs, every returned success is misclassified,
and the search fools at least as many images as the fixed c it starts from (here: more). White-box: it wraps and
re-runs the private `attacks._cw_run` (one run of the search) to see every run."""
from __future__ import annotations

import math

import pytest
import torch

import clead_lite.attacks as A
from clead_lite.attacks import cw_l2, cw_search_update
from clead_lite.models import eval_mode

INF = math.inf
N, STEPS, LR, RUNS = 32, 20, 0.1, 4    # 32 test images, 20 Adam steps per run, 4 runs: a few seconds


pytestmark = pytest.mark.usefixtures("one_thread")


def test_search_update_rule_by_hand():
    c = torch.tensor([1.0, 1.0, 4.0, 4.0, 0.5])
    lower = torch.tensor([0.0, 0.0, 2.0, 2.0, 0.0])
    upper = torch.tensor([INF, INF, 8.0, 8.0, 1.0])
    success = torch.tensor([True, False, True, False, True])
    new_c, new_lower, new_upper = cw_search_update(c, lower, upper, success)
    # 0: first success -> upper 1, bisect [0, 1]; 1: failure, no success yet -> lower 1, c x 10;
    # 2: success -> upper 4, bisect [2, 4]; 3: failure -> lower 4, bisect [4, 8]; 4: success -> [0, 0.5]
    assert new_upper.tolist() == [1.0, INF, 4.0, 8.0, 0.5]
    assert new_lower.tolist() == [0.0, 1.0, 2.0, 4.0, 0.0]
    assert new_c.tolist() == [0.5, 10.0, 3.0, 6.0, 0.25]
    assert c.tolist() == [1.0, 1.0, 4.0, 4.0, 0.5]   # inputs untouched


def test_search_update_keeps_raising_until_the_first_success():
    c, lower, upper = torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([INF])
    seen = []
    for success in (False, False, True, False):
        c, lower, upper = cw_search_update(c, lower, upper, torch.tensor([success]))
        seen.append(c.item())
    # 1 fails -> 10 fails -> 100 succeeds -> bisect [10, 100] = 55 fails -> bisect [55, 100]
    assert seen == [10.0, 100.0, 55.0, 77.5]


def test_binary_search_steps_is_checked(standard_model, mnist5k_split):
    x, y = mnist5k_split.x_test[:4], mnist5k_split.y_test[:4]
    with pytest.raises(ValueError, match=r"binary_search_steps must be >= 1, got 0"):
        cw_l2(standard_model, x, y, binary_search_steps=0)


@pytest.fixture(scope="module")
def search(standard_model, mnist5k_split):
    """Fixed c = 1 and the 4-run search from c = 1 on 32 test images, every run of the search recorded."""
    model = standard_model
    x, y = mnist5k_split.x_test[:N], mnist5k_split.y_test[:N]
    runs = []
    original = A._cw_run

    def recording(model_, x_, y_, w0, c, *rest):
        out = original(model_, x_, y_, w0, c, *rest)
        c_vec = torch.full((len(y_),), c) if isinstance(c, float) else c.clone()
        runs.append(dict(c=c_vec, success=out[2].clone(), w0=w0))
        return out

    fixed = cw_l2(model, x, y, c=1.0, steps=STEPS, lr=LR)
    A._cw_run = recording
    try:
        found = cw_l2(model, x, y, c=1.0, steps=STEPS, lr=LR, binary_search_steps=RUNS)
    finally:
        A._cw_run = original
    return model, x, y, fixed, found, runs


def _fooled_and_l2(model, x, y, x_adv):
    with torch.no_grad():
        right = model(x).argmax(1) == y
        wrong = model(x_adv).argmax(1) != y
    return right & wrong, (x_adv - x).flatten(1).norm(dim=1)


def test_search_fools_at_least_as_many_as_fixed_c(search):
    model, x, y, fixed, found, _ = search
    fooled_fixed, l2_fixed = _fooled_and_l2(model, x, y, fixed)
    fooled_found, l2_found = _fooled_and_l2(model, x, y, found)
    assert (fooled_found | ~fooled_fixed).all(), "every image fixed c fools, the search fools too"
    assert fooled_found.sum() > fooled_fixed.sum() >= 1   # measured: the search adds images on this model
    assert (l2_found[fooled_fixed] <= l2_fixed[fooled_fixed] + 1e-6).all()


def test_every_returned_success_is_misclassified(search):
    model, x, y, _, found, _ = search
    changed = (found != x).flatten(1).any(1)
    with torch.no_grad():
        wrong = model(found).argmax(1) != y
    assert changed.any() and wrong[changed].all()
    assert found.min() >= 0 and found.max() <= 1


def test_c_moves_as_specified(search):
    _, x, _, _, _, runs = search
    assert len(runs) == RUNS
    assert torch.equal(runs[0]["c"], torch.ones(len(x)))
    lower, upper = torch.zeros(len(x)), torch.full((len(x),), INF)
    for before, after in zip(runs, runs[1:]):
        c, ok = before["c"], before["success"]
        # the rule written out again, example by example
        for i in range(len(x)):
            if ok[i]:
                upper[i] = min(upper[i].item(), c[i].item())
            else:
                lower[i] = max(lower[i].item(), c[i].item())
            expected = (lower[i] + upper[i]) / 2 if math.isfinite(upper[i]) else c[i] * 10
            assert after["c"][i].item() == pytest.approx(expected.item(), rel=1e-6)
    raised = torch.stack([r["c"] for r in runs]).amax(0) > 1
    lowered = torch.stack([r["c"] for r in runs]).amin(0) < 1
    assert raised.any() and lowered.any(), "the test should see c go both ways"


def test_kept_l2_is_the_minimum_over_the_runs(search):
    # Each run again on its own (same start, fresh Adam, its recorded c): the example the search returns
    # is, per image, the smallest misclassified one over all runs (x itself where no run succeeded).
    model, x, y, _, found, runs = search
    per_run = []
    with eval_mode(model), torch.enable_grad():
        for k, run in enumerate(runs):
            c = 1.0 if k == 0 else run["c"]   # the first run gets c as a float, as in cw_l2
            _, best_l2, success = A._cw_run(model, x, y, run["w0"], c, 0.0, STEPS, LR, x.clone(),
                                            torch.full((len(y),), INF))
            assert torch.equal(success, run["success"])
            per_run.append(best_l2)
    smallest = torch.stack(per_run).amin(0)            # squared L2, inf where no run succeeded
    returned = (found - x).pow(2).flatten(1).sum(1)
    hit = torch.isfinite(smallest)
    assert hit.any()
    assert torch.allclose(returned[hit], smallest[hit], rtol=1e-5, atol=1e-7)
    assert torch.equal(found[~hit], x[~hit])
