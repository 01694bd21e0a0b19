"""The results statistics: sample SD with ddof = 1, the paired bootstrap against closed forms, McNemar's exact
test against a hand-computed case, and the paired differences table built from JSON rows."""
import json
import math

import numpy as np
import pytest

from clead_lite.course.results import differences_markdown, load_results, paired_differences, protocol_note
from clead_lite.course.stats import holm, mcnemar_exact, paired_bootstrap, sample_sd, t_interval


def test_sample_sd_uses_ddof_1():
    assert sample_sd([0.98, 0.96]) == pytest.approx(0.02 / math.sqrt(2))   # 0.0141; ddof = 0 would give 0.01
    assert sample_sd([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(sample_sd([0.5])) and math.isnan(sample_sd([]))


def test_mcnemar_exact_known_case():
    # 9 images right only under a, 2 only under b, of 200: p = 2 * (1 + 11 + 55) / 2^11 = 0.0654
    a = np.zeros(200, int)
    b = np.zeros(200, int)
    a[:9] = 1
    b[9:11] = 1
    a[11:150] = b[11:150] = 1                       # concordant images do not matter
    t = mcnemar_exact(a, b)
    assert (t.a_only, t.b_only) == (9, 2) and t.p == pytest.approx(134 / 2048)
    assert mcnemar_exact(a, a).p == 1.0 and mcnemar_exact(b, a).p == pytest.approx(t.p)
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact(a, b[:10])


def test_paired_bootstrap_matches_the_normal_interval_for_one_seed():
    rng = np.random.default_rng(1)
    n = 2000
    b = rng.random(n) < 0.7
    a = b.copy()
    flip = rng.random(n) < 0.1                       # a differs on 10 % of the images, mostly better
    a[flip] = rng.random(flip.sum()) < 0.8
    d = a.astype(float) - b.astype(float)
    half = 1.959964 * d.std(ddof=1) / math.sqrt(n)   # the closed-form (normal) 95 % interval of a paired mean
    ci = paired_bootstrap(a, b, n_boot=4000)
    assert ci.mean == pytest.approx(d.mean())
    assert ci.low == pytest.approx(d.mean() - half, abs=0.25 * half)
    assert ci.high == pytest.approx(d.mean() + half, abs=0.25 * half)


def test_paired_bootstrap_resamples_seeds_too():
    # each seed's images agree exactly, seeds differ by a constant shift: the interval is the seed spread
    rng = np.random.default_rng(0)
    base = (rng.random((4, 500)) < 0.6).astype(float)
    shift = np.array([0.0, 0.02, 0.04, 0.06])       # a - b per seed, in accuracy
    a = base.copy()
    for s, k in enumerate((shift * 500).astype(int)):
        wrong = np.flatnonzero(base[s] == 0)[:k]
        a[s, wrong] = 1
    ci = paired_bootstrap(a, base, n_boot=2000)
    assert ci.mean == pytest.approx(shift.mean())
    assert ci.low >= 0.0 - 1e-12 and ci.high <= 0.06 + 1e-12 and ci.high - ci.low > 0.015
    same = paired_bootstrap(base, base, n_boot=200)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(a, base[:, :10])


def _row(tmp, method, seed, correct, n_train=4000):
    record = {"dataset": "mnist", "method": method, "seed": seed,
              "row": {"eps": 0.3, "n": len(correct), "clean": 0.9, "fgsm": 0.8, "steps": 20, "restarts": 1,
                      "pgd": 0.7, "autoattack": None, "n_autoattack": 0, "transfer": None},
              "scores": {"apgd": float(np.mean(correct)), "square": 0.8, "n_scored": len(correct),
                         "apgd_correct": list(map(int, correct)),
                         "eps_curve": [{"eps": 0.15, "accuracy": 0.9}, {"eps": 0.3, "accuracy": 0.7}]},
              "training": {"n_train": n_train, "n_val": 500, "epochs": 8, "best_epoch": 7}}
    (tmp / f"mnist_{method}_seed{seed}.json").write_text(json.dumps(record))


def test_differences_table_from_rows(tmp_path):
    rng = np.random.default_rng(0)
    pairs = []
    for seed in (0, 1, 2):
        base = rng.random(300) < 0.6
        better = base | (rng.random(300) < 0.1)
        pairs.append((base, better))
        _row(tmp_path, "pgd_at", seed, base)
        _row(tmp_path, "clead_online", seed, better)
        _row(tmp_path, "trades", seed, base)
    frame = load_results(tmp_path)
    diffs = paired_differences(frame, n_boot=500).set_index("method")
    assert set(diffs.index) == {"clead_online", "trades"}
    assert diffs.loc["trades", "diff"] == 0 and diffs.loc["trades", "low"] == diffs.loc["trades", "high"] == 0
    on = diffs.loc["clead_online"]
    assert on["seeds"] == [0, 1, 2] and on["n_images"] == 300 and 0 < on["low"] < on["diff"] < on["high"]
    assert all(b == 0 and p < 0.01 for _, a, b, p in on["mcnemar"])
    table = differences_markdown(frame)
    assert "| mnist | clead_online | 0,1,2 | 300 |" in table and "p = " in table
    t = t_interval([np.mean(better_) - np.mean(base_) for base_, better_ in pairs])
    assert on["t_low"] == pytest.approx(t.low) and on["t_high"] == pytest.approx(t.high)
    assert f"[{100 * t.low:+.1f}, {100 * t.high:+.1f}]" in table
    ps = [p for _, _, _, p in on["mcnemar"]]
    assert "over the table's 6 tests" in table                      # 2 methods x 3 seeds: the family
    assert all(f"(Holm {q:.2g})" in table for q in holm(ps + [1.0, 1.0, 1.0])[:3])
    note = protocol_note(frame)
    assert "seed 0 (not the first ones)" in note and "4000 training images" in note and "500 are held out" in note
    assert "ddof = 1" in note and "Square alone on the same images for seed(s) 0,1,2" in note


def test_protocol_note_says_which_images(tmp_path):
    """Rows scored on the first n test images say so; the standard AutoAttack's seeds and subset are named."""
    for seed in (0, 1):
        _row(tmp_path, "pgd_at", seed, [1, 0, 1, 1])
        f = tmp_path / f"mnist_pgd_at_seed{seed}.json"
        record = json.loads(f.read_text())
        record["test_images"] = "the first 4 of the mnist test split"
        if seed == 0:
            record["row"].update(autoattack=0.5, n_autoattack=4)
            record["scores"]["square"] = None
        f.write_text(json.dumps(record))
    note = protocol_note(load_results(tmp_path))
    assert "the first ones of each test split" in note and "not the first ones" not in note
    assert "The standard AutoAttack ran on all of them, for seed(s) 0." in note
    assert "Square alone on the same images for seed(s) 1" in note


def test_t_interval_against_the_closed_form():
    """mean +- t(0.975, n - 1) * SD / sqrt(n); t for 2 degrees of freedom is 4.3027 (a printed t table); the
    issue's case: per-seed gaps +4.6, +4.8, +2.0 points give [-0.1, +7.7]."""
    v = [0.046, 0.048, 0.020]
    t = t_interval(v)
    half = 4.302653 * np.std(v, ddof=1) / math.sqrt(3)
    assert t.mean == pytest.approx(np.mean(v)) and t.n == 3
    assert (t.low, t.high) == (pytest.approx(np.mean(v) - half, abs=1e-6), pytest.approx(np.mean(v) + half, abs=1e-6))
    assert (round(100 * t.low, 1), round(100 * t.high, 1)) == (-0.1, 7.7)
    # its p: P(|T_2| > mean / se), T_2 with cdf 1/2 + x / (2 sqrt(2 + x^2)) (closed form for 2 degrees of freedom)
    x = np.mean(v) / (np.std(v, ddof=1) / math.sqrt(3))
    assert t.p == pytest.approx(1 - x / math.sqrt(2 + x * x), rel=1e-6) and 0.05 < t.p < 0.06
    one = t_interval([0.03])
    assert one.mean == 0.03 and math.isnan(one.low) and math.isnan(one.p)
    same = t_interval([0.02, 0.02])
    assert (same.low, same.high) == (0.02, 0.02) and math.isnan(same.p)
    assert t_interval([0.01, 0.03], level=0.5).high < t_interval([0.01, 0.03]).high


def test_holm_by_hand():
    """Sorted 0.01, 0.03, 0.04 of m = 3: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 -> 0.06 (kept non-decreasing);
    returned in the input's order; NaN stays out of the family; capped at 1."""
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    out = holm([0.01, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == []
    # the 16-epoch budget point: McNemar 0.017, 0.00032, 0.0096 -> seeds 0 and 2 no longer below 0.05 alone
    assert holm([0.017, 0.00032, 0.0096]) == pytest.approx([0.0192, 0.00096, 0.0192])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([1.5])
