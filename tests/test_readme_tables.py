"""The README's and RESULTS.md's result tables are the committed JSON rows, regenerated: nothing typed in.

Each marked block (`<!-- results -->`, `<!-- budget -->`, `<!-- results-per-seed -->`) is rebuilt here from the
files in benchmarks/results/ with the functions the scripts use (`results.readme_table` of `run_results.py --summary --readme`,
`budget_curve.py --summary --readme`) and must equal the text on disk. A number edited by hand in a block, or a
row added without regenerating the tables, fails this test."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block(path: Path, marker: str) -> str:
    text = path.read_text()
    m = re.search(f"<!-- {re.escape(marker)}:start -->\n(.*?)<!-- {re.escape(marker)}:end -->", text, flags=re.S)
    assert m, f"{path.name} has no <!-- {marker} --> block"
    return m[1].rstrip("\n")


def test_results_blocks_are_the_rows_on_disk():
    from clead_lite.course.results import load_results, per_seed_markdown, readme_table
    folder = ROOT / "benchmarks" / "results" / "table"
    assert any(folder.glob("*_seed*.json")), f"no results rows in {folder}: they are committed with the README"
    frame = load_results(folder)
    assert _block(ROOT / "README.md", "results") == readme_table(frame).rstrip("\n"), \
        "README's results table differs from the rows: run benchmarks/run_results.py --summary --readme README.md"
    assert _block(ROOT / "benchmarks" / "RESULTS.md", "results-per-seed") == per_seed_markdown(frame).rstrip("\n"), \
        "RESULTS.md differs from the rows: run benchmarks/run_results.py --summary --details benchmarks/RESULTS.md"


def test_budget_block_is_the_points_on_disk():
    from clead_lite.course.budget import load_points, summary_markdown
    folder = ROOT / "benchmarks" / "results" / "budget"
    assert any(folder.glob("*.json")), f"no budget points in {folder}: they are committed with the README"
    assert _block(ROOT / "README.md", "budget") == summary_markdown(load_points(folder)).rstrip("\n"), \
        "README's budget tables differ from the points: run benchmarks/budget_curve.py --summary --readme README.md"


def test_verdict_block_is_the_points_on_disk():
    from clead_lite.course.budget import load_points, verdict_markdown
    folder = ROOT / "benchmarks" / "results" / "budget"
    assert _block(ROOT / "README.md", "verdict") == verdict_markdown(load_points(folder)).rstrip("\n"), \
        "README's verdict differs from the points: run benchmarks/budget_curve.py --summary --readme README.md"


def test_verdict_numbers_recomputed_from_the_json():
    """The verdict's numbers recomputed here from the JSON files alone (not through clead_lite.course.budget):
    the largest budget where PGD-AT and C-LEAD online (lambda 0.5) both have seeds 0, 1, 2 (and every further
    seed both have there), the two accuracies, the mean paired gap, its t-interval over seeds (scipy), its
    bootstrap interval (stats.paired_bootstrap on the raw outcomes), PGD-AT's change from the budget before on
    the seeds both budgets have, and the ±1-point reading. A number typed into the block, or a verdict that
    reads the wrong budget or the wrong seeds, fails here even if the block was regenerated."""
    import json

    import numpy as np
    from scipy import stats as st

    from clead_lite.course.stats import paired_bootstrap
    text = _block(ROOT / "README.md", "verdict")
    points: dict = {}
    for f in (ROOT / "benchmarks" / "results" / "budget").glob("mnist5k_*.json"):
        r = json.loads(f.read_text())
        k = r["key"]
        if k["method"] == "pgd_at" or (k["method"] == "clead_online" and k["lam"] == 0.5):
            points[(k["method"], k["epochs"], k["seed"])] = np.asarray(r["result"]["apgd_correct"], float)
    seeds_of = lambda m, e: {s for m_, e_, s in points if (m_, e_) == (m, e)}
    full = sorted(e for e in {e for _, e, _ in points}
                  if all((m, e, s) in points for m in ("pgd_at", "clead_online") for s in (0, 1, 2)))
    assert len(full) >= 2, "the verdict needs two budgets with three seeds"
    e, before = full[-1], full[-2]
    seeds = sorted(seeds_of("pgd_at", e) & seeds_of("clead_online", e))
    on = np.stack([points[("clead_online", e, s)] for s in seeds])
    at = np.stack([points[("pgd_at", e, s)] for s in seeds])
    diffs = on.mean(axis=1) - at.mean(axis=1)
    t_half = lambda d: st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))   # 95 % over seeds
    half = t_half(diffs)
    ci = paired_bootstrap(on, at, n_boot=10_000, seed=0)
    pct = lambda v: f"{100 * v:.1f}"
    pts = lambda v: f"{100 * v:+.1f}"
    assert f"At {e} epochs (" in text and f"the largest budget with {len(seeds)} seeds of both methods" in text
    assert f"C-LEAD online keeps {pct(on.mean())} % and PGD-AT {pct(at.mean())} %" in text
    assert f"a paired gap of {pts(diffs.mean())} points" in text
    assert f"[{pts(diffs.mean() - half)}, {pts(diffs.mean() + half)}] by the t-interval" in text
    assert f"(95 % interval [{pts(ci.low)}, {pts(ci.high)}] resampling seeds and images" in text
    inside = lambda lo, hi: -0.01 <= lo and hi <= 0.01
    t_low, t_high = diffs.mean() - half, diffs.mean() + half
    if inside(ci.low, ci.high) and inside(t_low, t_high):
        assert "within ±1 point of 0 by both intervals" in text
    elif min(ci.low, t_low) > 0.01 or max(ci.high, t_high) < -0.01:
        assert "**not within ±1 point of 0**" in text
    else:
        assert "cannot say whether it is within ±1 point of 0" in text
        one_sided = ("C-LEAD online" if max(ci.high, t_high) <= 0.01 else
                     "PGD-AT" if min(ci.low, t_low) >= -0.01 else None)
        assert ("rule out an advantage of" in text) == (one_sided is not None)
        assert one_sided is None or f"rule out an advantage of {one_sided} larger than 1 point" in text
    paired = sorted(seeds_of("pgd_at", e) & seeds_of("pgd_at", before))
    at_e = np.stack([points[("pgd_at", e, s)] for s in paired])
    at0 = np.stack([points[("pgd_at", before, s)] for s in paired])
    assert f"{pct(at0.mean())} % at {before} epochs, {pct(at_e.mean())} % at {e}: {pts(at_e.mean() - at0.mean())} points" in text
    rise = at_e.mean(axis=1) - at0.mean(axis=1)        # the head: 'not reached' only when the rise is shown
    r_half = t_half(rise)
    r_ci = paired_bootstrap(at_e, at0, n_boot=10_000, seed=0)
    if r_ci.low > 0 and rise.mean() - r_half > 0:
        assert text.startswith("**Verdict: convergence not reached yet.**")
    elif inside(r_ci.low, r_ci.high) and inside(rise.mean() - r_half, rise.mean() + r_half):
        assert text.startswith("**Verdict at convergence.**")
    else:
        assert text.startswith("**Verdict: convergence not established.**")
    three = sorted(x for x in {x for m, x, _ in points if m == "pgd_at"} if len(seeds_of("pgd_at", x)) >= 3)
    for e0, e1 in zip(three, three[1:]):           # PGD-AT's gain from each such budget to the next
        common = seeds_of("pgd_at", e0) & seeds_of("pgd_at", e1)
        gain = np.mean([points[("pgd_at", e1, s)].mean() - points[("pgd_at", e0, s)].mean() for s in common])
        assert f"{pts(gain)} ({e0} → {e1} epochs)" in text
    later = sorted({x for m, x, _ in points if x > e})
    for x in later:                                # the budgets with fewer seeds are shown as 'so far'
        assert f"So far at {x} epochs" in text
