"""benchmarks/budget_curve.py end to end on a tiny grid (1 epoch, 160 images, 16 scored): one JSON per point
keyed by method / epochs / seed / lambda, the lambda sweep shares the budget curve's point, a second run does
nothing, a run with other settings refuses to mix into the directory, and the summary tables and plot."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clead_lite.course.budget import budget_markdown, lambda_markdown, load_points, plot_budget_curve, point_name

ROOT = Path(__file__).resolve().parents[1]


def test_point_names_hold_every_key():
    names = {point_name("mnist5k", m, e, s, lam) for m in ("pgd_at", "clead_online") for e in (5, 10)
             for s in (0, 1) for lam in (None, 0.5, 0.1)}
    assert len(names) == 2 * 2 * 2 * 3
    assert point_name("mnist5k", "clead_online", 10, 0, 0.5) == "mnist5k_clead_online_e10_s0_lam0.5.json"


def test_budget_curve_tiny_end_to_end(tmp_path):
    out, runs = tmp_path / "points", tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "budget_curve.py"), "--epochs", "1", "--seeds", "0",
           "--n-train", "160", "--n-val", "32", "--attack-steps", "1", "--n-score", "16", "--sweep-lambdas", "0",
           "0.5", "--sweep-epochs", "1", "--device", "cpu", "--out", str(out), "--runs", str(runs)]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    files = sorted(f.name for f in out.glob("*.json"))
    assert files == ["mnist5k_clead_online_e1_s0_lam0.5.json", "mnist5k_clead_online_e1_s0_lam0.json",
                     "mnist5k_pgd_at_e1_s0_lam-.json", "mnist5k_trades_e1_s0_lam-.json"]
    point = json.loads((out / "mnist5k_trades_e1_s0_lam-.json").read_text())
    assert point["key"] == {"dataset": "mnist5k", "method": "trades", "epochs": 1, "seed": 0, "lam": None}
    res = point["result"]
    assert res["n_scored"] == 16 and len(res["apgd_correct"]) == 16 and 0 <= res["apgd"] <= res["clean"] + 1e-9
    assert res["config"]["method"] == "trades" and res["config"]["n_val"] == 32 and res["config"]["attack_steps"] == 1
    assert point["settings"]["n_score"] == 16 and "4 point(s) to run" in done.stdout
    lam = json.loads((out / "mnist5k_clead_online_e1_s0_lam0.5.json").read_text())["result"]["config"]
    assert lam["contrastive_weight"] == 0.5
    # resumable: a second run finds every point and runs nothing
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "0 point(s) to run" in again.stdout
    # other settings into the same directory: refused, nothing written
    other = [c if c != "16" else "8" for c in cmd]
    mixed = subprocess.run(other, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert mixed.returncode == 2 and "other settings" in mixed.stderr
    assert sorted(f.name for f in out.glob("*.json")) == files and not list(out.glob("*.partial"))
    # the summary and its plot
    plot = tmp_path / "curve.png"
    summary = subprocess.run(cmd + ["--summary", "--plot", str(plot)], cwd=ROOT, capture_output=True, text=True,
                             timeout=300, env=env)
    assert summary.returncode == 0 and plot.stat().st_size > 1000
    assert "| TRADES | 1 | 1 | 0 |" in summary.stdout and "| 0 | 1 | 0 |" in summary.stdout   # (160 - 32) // 128 steps
    # every new point records its code version and its training images' fingerprint, the same for every method
    results = [json.loads((out / f).read_text())["result"] for f in files]
    assert all(len(r["code_version"].removesuffix("-dirty")) == 40 for r in results)
    assert len({r["train_images_sha256"] for r in results}) == 1


def test_tables_and_plot_from_points(tmp_path):
    for method, seed, apgd, lam in (("pgd_at", 0, 0.5, None), ("pgd_at", 1, 0.6, None), ("clead_online", 0, 0.55, 0.5),
                                    ("clead_online", 0, 0.52, 0.0), ("trades", 0, 0.58, None)):
        key = {"dataset": "mnist5k", "method": method, "epochs": 5, "seed": seed, "lam": lam}
        (tmp_path / point_name(**key)).write_text(json.dumps(
            {"key": key, "result": {"clean": 0.9, "apgd": apgd, "n_scored": 500}}))
    frame = load_points(tmp_path)
    assert len(frame) == 5
    table = budget_markdown(frame, provenance=True)
    assert "| PGD-AT | 5 | - | 0,1 | 90.0 ± 0.0 | 55.0 ± 7.1 (500) | -, - | not recorded | 88.5" in table   # sample SD of 50, 60
    # a notebook's table (the default) is the same without the code version: provenance stays in the README
    assert budget_markdown(frame) == table.replace(" code version |", "").replace("|---|---|---|---|---|---|---|---|---|",
                                                                                  "|---|---|---|---|---|---|---|---|"
                                                                                  ).replace(" not recorded |", "")
    assert "| C-LEAD online | 5 | - | 0 |" in table and table.count("C-LEAD online") == 1   # lambda 0 is the sweep's
    sweep = lambda_markdown(frame)
    assert "| 0 | 5 | 0 | 90.0 | 52.0 (500) |" in sweep and "| 0.5 | 5 | 0 | 90.0 | 55.0 (500) |" in sweep
    key = {"dataset": "mnist5k", "method": "clead_online", "epochs": 5, "seed": 0, "lam": 1.0}
    (tmp_path / point_name(**key)).write_text(json.dumps({"key": key, "result": {"clean": 0.9, "apgd": 0.5, "n_scored": 500}}))
    (tmp_path / point_name("mnist5k", "clead_online", 5, 0, 0.0)).unlink()   # no lambda-0 run: PGD-AT's point
    sweep = lambda_markdown(load_points(tmp_path))
    assert sweep.splitlines()[2] == "| 0 (the PGD-AT point) | 5 | 0 | 90.0 | 50.0 (500) |", sweep
    (tmp_path / point_name(**key)).unlink()                                 # one lambda left: no sweep to show
    assert lambda_markdown(load_points(tmp_path)).startswith("No lambda sweep yet")
    import matplotlib
    matplotlib.use("Agg")
    ax = plot_budget_curve(frame)
    assert len(ax.get_legend().get_texts()) == 3


def _write_point(directory, method, epochs, seed, correct, lam=None):
    key = {"dataset": "mnist5k", "method": method, "epochs": epochs, "seed": seed, "lam": lam}
    (directory / point_name(**key)).write_text(json.dumps({"key": key, "result": {
        "clean": 0.9, "apgd": sum(correct) / len(correct), "apgd_correct": correct, "n_scored": len(correct)}}))


def test_paired_gaps_by_seed_and_image(tmp_path):
    """Per-seed differences are the accuracy differences of the same seed; identical outcomes give a zero
    interval and McNemar p = 1; a gap on every seed gives an interval that excludes 0; a seed that only one
    method has is left out; the lambda sweep's points never enter."""
    from clead_lite.course.budget import gap_markdown, paired_gaps, plot_gaps
    n = 100
    base = [[1] * 50 + [0] * 50, [1] * 55 + [0] * 45, [1] * 60 + [0] * 40]
    for s, c in enumerate(base):
        _write_point(tmp_path, "pgd_at", 4, s, c)
        _write_point(tmp_path, "trades", 4, s, c)                       # identical to PGD-AT
        _write_point(tmp_path, "clead_online", 4, s, c[:40] + [1] * 20 + c[60:] if s < 2 else c, lam=0.5)
    _write_point(tmp_path, "clead_online", 4, 0, [0] * n, lam=2.0)       # a sweep point: not on the curve
    _write_point(tmp_path, "pgd_at", 4, 7, [1] * n)                      # no partner
    frame = load_points(tmp_path)
    gaps = paired_gaps(frame, "clead_online", "pgd_at", n_boot=2000).iloc[0]
    assert gaps.seeds == [0, 1, 2] and gaps.n_images == n
    assert [round(d, 6) for d in gaps.diffs] == [0.1, 0.05, 0.0]     # images 40-59 flipped right on seeds 0, 1
    assert abs(gaps["mean"] - 0.05) < 1e-9 and abs(gaps.sd - 0.05) < 1e-9
    assert gaps.low <= gaps["mean"] <= gaps.high and gaps.mcnemar_p[2] == 1.0 and gaps.mcnemar_p[0] < 0.01
    same = paired_gaps(frame, "trades", "pgd_at", n_boot=500).iloc[0]
    assert same["mean"] == same.low == same.high == 0.0 and same.mcnemar_p == [1.0, 1.0, 1.0]
    for s in range(3):                                                   # a clear gap on every seed
        _write_point(tmp_path, "clead_online", 4, s, [1] * n, lam=0.5)
    strong = paired_gaps(load_points(tmp_path), "clead_online", "pgd_at", n_boot=2000).iloc[0]
    assert 0.3 < strong.low < strong["mean"] < strong.high < 0.6     # far from 0: images resampled too
    table = gap_markdown(load_points(tmp_path))
    assert "| C-LEAD online | 4 | +50.0, +45.0, +40.0 | +45.0 ± 5.0 |" in table and "| TRADES | 4 | +0.0, +0.0, +0.0 |" in table
    import matplotlib
    matplotlib.use("Agg")
    ax = plot_gaps(load_points(tmp_path))
    assert len(ax.get_legend().get_texts()) == 2


def test_standard_check_and_readme_block(tmp_path):
    """The standard-AutoAttack column sits beside the custom score on the same images, and --summary --readme
    rewrites only the README's budget block."""
    from clead_lite.course.budget import standard_check_markdown, summary_markdown
    key = {"dataset": "mnist5k", "method": "pgd_at", "epochs": 16, "seed": 0, "lam": None}
    (tmp_path / point_name(**key)).write_text(json.dumps({"key": key, "result": {
        "clean": 0.97, "apgd": 0.70, "n_scored": 500, "autoattack": 0.69, "autoattack_n": 200,
        "apgd_on_autoattack_images": 0.705}}))
    frame = load_points(tmp_path)
    assert "| PGD-AT | 16 | 0 | the first 200 scored | 70.5 | 69.0 | -1.5 |" in standard_check_markdown(frame)
    assert "same 500 test images" in summary_markdown(frame)
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- budget:start -->\nold\n<!-- budget:end -->\nafter\n"
                      "<!-- verdict:start -->\n<!-- verdict:end -->\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "budget_curve.py"), "--summary", "--out", str(tmp_path),
           "--runs", str(tmp_path / "runs"), "--readme", str(readme)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr[-2000:]
    text = readme.read_text()
    assert text.startswith("before\n<!-- budget:start -->\nRobust accuracy")
    assert "<!-- budget:end -->\nafter\n<!-- verdict:start -->\n**Verdict**: no budget has 3 paired seeds" in text
    assert "old" not in text and "| PGD-AT | 16 | 0 |" in text


def test_steps_and_what_the_points_record(tmp_path):
    """Steps are epochs x (n_train - n_val) // batch; the config note treats a setting that old points lack as
    its TrainConfig default and says so, flags a real difference, and counts the points with a code version."""
    from clead_lite.course.budget import config_note, optimizer_steps
    from clead_lite.training import TrainConfig
    assert [optimizer_steps(3500, 128, e) for e in (4, 8, 16, 32, 64)] == [108, 216, 432, 864, 1728]
    assert optimizer_steps(9500, 128, 4) == 296 and optimizer_steps(100, 128, 3) == 3 and optimizer_steps(None, 128, 4) is None
    base = TrainConfig().to_dict()
    old = {k: v for k, v in base.items() if k != "split_views"}
    for epochs, seed, config, extra in ((4, 0, old, {}), (16, 0, dict(base), {}),
                                        (32, 0, dict(base), {"code_version": "a" * 40, "train_images_sha256": "b" * 64}),
                                        (32, 1, dict(base), {"code_version": "c" * 40, "train_images_sha256": "d" * 64})):
        key = {"dataset": "mnist5k", "method": "pgd_at", "epochs": epochs, "seed": seed, "lam": None}
        (tmp_path / point_name(**key)).write_text(json.dumps({
            "key": key, "settings": {"n_train": 4000, "n_val": 500},
            "result": {"clean": 0.9, "apgd": 0.5, "n_scored": 500, "best_epoch": epochs,
                       "config": {**config, "epochs": epochs, "seed": seed}, **extra}}))
    frame = load_points(tmp_path)
    note = config_note(frame)
    assert "1 points (at 4 epochs) were written before the setting `split_views` existed" in note
    assert "`split_views = False`" in note and "every other recorded training setting is the same" in note
    assert "2 of 4 points record the code version" in note and "seed 0: aaaa" not in note
    assert "one training-image fingerprint per seed" in note and "seed 1: dddddddddddd" in note
    table = budget_markdown(frame, provenance=True)
    assert "| PGD-AT | 32 | 864 | 0,1 | 90.0 ± 0.0 | 50.0 ± 0.0 (500) | 32, 32 | aaaaaaa, ccccccc |" in table
    assert "| PGD-AT | 4 | 108 | 0 |" in table and "| 4 | not recorded |" in table
    cfg = json.loads((tmp_path / point_name("mnist5k", "pgd_at", 16, 0, None)).read_text())
    cfg["result"]["config"]["lr"] = 0.1                                    # a real difference is named
    (tmp_path / point_name("mnist5k", "pgd_at", 16, 0, None)).write_text(json.dumps(cfg))
    assert "Settings that differ within a method: PGD-AT `lr`: 0.05, 0.1." in config_note(load_points(tmp_path))


def _gap_grid(directory, gaps_by_epochs, base_by_epochs, seeds=(0, 1, 2), n=500):
    """PGD-AT and C-LEAD online points whose per-image outcomes give exactly the accuracies asked for: PGD-AT
    right on its first k images, C-LEAD online on the first k + gap (or k - |gap|) images of each seed."""
    for epochs, base in base_by_epochs.items():
        for i, s in enumerate(seeds):
            if base[i] is None:
                continue
            k = int(round(base[i] * n))
            _write_point(directory, "pgd_at", epochs, s, [1] * k + [0] * (n - k))
            g = gaps_by_epochs.get(epochs)
            if g is not None and g[i] is not None:
                k2 = k + int(round(g[i] * n))
                _write_point(directory, "clead_online", epochs, s, [1] * k2 + [0] * (n - k2), lam=0.5)


def test_verdict_reads_the_rows(tmp_path):
    """The verdict takes the largest budget with three paired seeds, states both intervals and Holm's p from
    the rows, says whether the gap is within ±1 point, whether PGD-AT still rises (so: not converged), shows a
    budget with fewer seeds as 'so far' and names the planned points that are not on disk."""
    from clead_lite.course.budget import PLANNED_COMMANDS, paired_gaps, verdict, verdict_markdown
    from clead_lite.course.stats import holm, t_interval
    _gap_grid(tmp_path, {8: [0.07, 0.07, 0.08], 16: [0.032, 0.04, 0.036], 32: [-0.012, None, None]},
              {8: [0.59, 0.61, 0.56], 16: [0.776, 0.778, 0.766], 32: [0.854, 0.856, None], 64: [None, None, 0.86]})
    frame = load_points(tmp_path)
    v = verdict(frame, n_boot=2000)
    assert v["last"]["epochs"] == 16 and v["state"] == "above" and v["rise_state"] == "rising"
    t = t_interval([0.032, 0.04, 0.036])
    gaps = paired_gaps(frame, n_boot=2000)
    assert v["last"]["t_low"] == pytest.approx(t.low) and v["holm_p"] == pytest.approx(holm(gaps["t_p"][:2].tolist())[1])
    text = verdict_markdown(frame)
    assert text.startswith("**Verdict: convergence not reached yet.** At 16 epochs")
    assert f"[{100 * t.low:+.1f}, {100 * t.high:+.1f}] by the t-interval over the seeds" in text
    assert "**not within ±1 point of 0**: both intervals lie above +1 point" in text
    assert "PGD-AT is still rising between the last two such budgets (58.7 % at 8 epochs, 77.3 % at 16" in text
    assert ("So far at 32 epochs: PGD-AT 85.4 % (seed 0), 85.6 % (seed 1), +7.8, +7.8 points since 16 epochs on "
            "the same seeds; C-LEAD online 84.2 % (seed 0); a gap of -1.2 points (seed 0): too few seeds") in text
    assert "So far at 64 epochs: PGD-AT 86.0 % (seed 2), +9.4 points since 16 epochs on the same seed; " \
           "no C-LEAD online point yet: too few seeds" in text
    # online's 32 and 64; at 64 PGD-AT's seeds 0, 1, 3, 4 too (FIVE_SEEDS: its change 64 -> 128 on 5 seeds)
    assert "32 epochs, seeds 1, 2; 64 epochs, seeds 0, 1, 2, 3, 4" in text
    assert " and ".join(f"`{c}`" for c in PLANNED_COMMANDS) in text
    assert "Holm over the 2 budgets tested" in text


def test_verdict_gains_and_nothing_left_to_run(tmp_path, monkeypatch):
    """The base method's mean gain from each budget with three seeds to the next (a budget with fewer seeds left
    out), from the per-image outcomes; with every planned point on disk and the last change unclear, the verdict
    says why no plateau can be shown (the intervals' widths against the 2-point band) instead of asking for
    longer budgets."""
    from clead_lite.course import budget
    monkeypatch.setattr(budget, "PLANNED", {"pgd_at": (8, 16, 32), "clead_online": (8, 16, 32)})
    monkeypatch.setattr(budget, "FIVE_SEEDS", {})
    _gap_grid(tmp_path, {8: [0.0, 0.0, 0.0], 16: [0.0, 0.0, 0.0], 32: [0.01, -0.02, 0.0]},
              {8: [0.59, 0.61, 0.56], 16: [0.776, 0.778, 0.766], 32: [0.80, 0.77, 0.78], 64: [0.85, None, None]})
    frame = load_points(tmp_path)
    v = budget.verdict(frame, n_boot=2000)
    assert v["rise_state"] == "unclear" and v["missing"] == []
    assert [(e0, e1) for e0, e1, _ in v["gains"]] == [(8, 16), (16, 32)]
    assert v["gains"][0][2] == pytest.approx((0.186 + 0.168 + 0.206) / 3) and v["gains"][1][2] == pytest.approx(0.01)
    text = budget.verdict_markdown(frame)
    assert "PGD-AT's mean gain from each budget to the next, on the seeds both have: +18.7 (8 → 16 epochs), +1.0 " \
           "(16 → 32 epochs) points." in text
    r = v["rise"]
    assert (f"No further points are planned: PGD-AT's last change has intervals {100 * (r['high'] - r['low']):.1f} "
            f"and {100 * (r['t_high'] - r['t_low']):.1f} points wide") in text
    assert "the grid must be extended" not in text and "The next points are running" not in text
    assert text.startswith("**Verdict: convergence not established.**")     # not shown to rise: not 'not reached'


@pytest.mark.parametrize("gaps, rise, state, rstate, head, side", [
    ([0.002, -0.004, 0.0], [0.001, 0.0, -0.001], "within", "flat", "**Verdict at convergence.**", None),
    ([0.03, -0.02, 0.0], [0.001, 0.0, -0.001], "undecided", "flat", "**Verdict at convergence.**", None),
    ([-0.006, -0.012, -0.008], [0.001, 0.0, -0.001], "undecided", "flat", "**Verdict at convergence.**",
     "rule out an advantage of C-LEAD online larger than 1 point"),
    ([0.006, 0.012, 0.008], [0.001, 0.0, -0.001], "undecided", "flat", "**Verdict at convergence.**",
     "rule out an advantage of PGD-AT larger than 1 point"),
    ([-0.05, -0.06, -0.04], [0.03, -0.02, 0.04], "below", "unclear", "**Verdict: convergence not established.**", None)])
def test_verdict_states(tmp_path, gaps, rise, state, rstate, head, side):
    """Within ±1 point only when both intervals are; 'undecided' when one reaches past it, with the one-sided
    answer when both intervals stay on one side of the band (and only then); PGD-AT flat between the last two
    budgets (both intervals within ±1 point of no change) is what 'at convergence' means."""
    from clead_lite.course.budget import verdict, verdict_markdown
    base = [0.80, 0.82, 0.81]
    _gap_grid(tmp_path, {32: [0.0, 0.0, 0.0], 64: gaps}, {32: base, 64: [b + r for b, r in zip(base, rise)]})
    frame = load_points(tmp_path)
    v = verdict(frame, n_boot=2000)
    assert (v["state"], v["rise_state"]) == (state, rstate)
    text = verdict_markdown(frame)
    assert text.startswith(head) and "At 64 epochs" in text
    if state == "within":
        assert "within ±1 point of 0 by both intervals" in text
    if state == "undecided":
        assert "cannot say whether it is within ±1 point of 0" in text
    assert ("rule out an advantage of" in text) == (side is not None) and (side is None or side in text)
    assert v["ruled_out"] == (None if side is None else "clead_online" if "C-LEAD" in side else "pgd_at")
