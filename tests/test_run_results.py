"""benchmarks/run_results.py end to end on a tiny configuration: it trains and evaluates through the CLI,
writes one JSON row per (dataset, method, seed) with the commands that reproduce it, skips rows already on
disk, and writes the summary table into a README block."""
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_run_results_tiny(tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    runs.mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_results.py"), "--datasets", "mnist5k", "--methods",
           "standard", "pgd_at", "--seeds", "0", "--profile", "smoke", "--n-train", "160", "--epochs", "1",
           "--attack-steps", "2", "--n-test", "32", "--steps", "3", "--restarts", "1", "--n-autoattack", "0",
           "--n-score", "12", "--score-columns", "apgd", "eps_curve", "--device", "cpu", "--out", str(out), "--runs", str(runs), "--readme", str(readme)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(rows) == {"mnist5k_standard_seed0.json", "mnist5k_pgd_at_seed0.json"}
    at = rows["mnist5k_pgd_at_seed0.json"]
    assert at["method"] == "pgd_at" and at["row"]["n"] == 32 and at["row"]["steps"] == 3
    assert "--method pgd_at" in at["train_command"] and "--n-train 160" in at["train_command"]
    assert at["evaluate_command"].startswith("python -m clead_lite evaluate")
    assert at["row"]["transfer_source"], "PGD-AT rows are also attacked by transfer from the standard model"
    assert at["sanity"] is not None and len(at["sanity"]["checks"]) >= 5
    # the extra columns: APGD-CE + APGD-T with per-image correctness on the first 12 images, an eps curve
    assert at["scores"]["n_scored"] == 12 and len(at["scores"]["apgd_correct"]) == 12
    assert [round(p["eps"], 3) for p in at["scores"]["eps_curve"]] == [0.075, 0.15, 0.225, 0.3, 0.375]
    assert at["training"] == {"n_train": 160, "n_val": 64, "epochs": 1, "best_epoch": 1}
    table = readme.read_text()
    assert "old" not in table and "| mnist5k (0.3) | pgd_at | 0 |" in table
    assert "the first ones of each test split" in table and "64 are held out" in table
    # the scores are on the first n_score of the evaluated images, which are the first n_test of the test split
    assert at["test_images"] == "the first 32 of the mnist5k test split"
    assert at["scores"]["images"].startswith("the first 12 images of the test split")
    from clead_lite.course.datasets import test_images
    from clead_lite.course.scoring import load_for_scoring
    _, x, y, _ = load_for_scoring(str(runs / "mnist5k_pgd_at_seed0.pt"), 32)
    x_first, y_first = test_images("mnist5k", 32)
    assert torch.equal(x.cpu(), x_first) and torch.equal(y.cpu(), y_first)
    # a second run finds every row on disk and only prints the table
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "$ " not in again.stdout
    # --redo evaluates a row again (here with AutoAttack) and replaces the file only once the new row is complete
    redo = [c for c in cmd if c != "pgd_at"]
    redo[redo.index("--n-autoattack") + 1] = "4"
    third = subprocess.run(redo + ["--redo"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert third.stdout.count("$ ") == 1 and "evaluate" in third.stdout   # no retraining
    row = json.loads((out / "mnist5k_standard_seed0.json").read_text())
    assert row["row"]["n_autoattack"] == 4 and 0.0 <= row["row"]["autoattack"] <= 1.0
    assert row["evaluate_command"].endswith("--json " + str(out / "mnist5k_standard_seed0.json"))
    assert "--n-autoattack 4" in row["evaluate_command"] and not list(out.glob("*.partial"))
    # --add-autoattack fills the standard AutoAttack into a row evaluated without it, for the seeds asked
    # only, and leaves every other column as it was
    before = json.loads((out / "mnist5k_pgd_at_seed0.json").read_text())
    assert before["row"]["autoattack"] is None
    add = [c for c in cmd if c not in ("--readme", str(readme))] + ["--add-autoattack", "--autoattack-seeds", "0"]
    add[add.index("--n-autoattack") + 1] = "6"
    fourth = subprocess.run(add, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert fourth.returncode == 0, fourth.stdout[-2000:] + fourth.stderr[-2000:]
    assert "$ " not in fourth.stdout       # nothing trained or evaluated again
    after = json.loads((out / "mnist5k_pgd_at_seed0.json").read_text())
    assert after["row"]["n_autoattack"] == 6 and 0.0 <= after["row"]["autoattack"] <= after["row"]["clean"]
    assert len(after["autoattack_correct"]) == 6 and "--add-autoattack" in after["autoattack_command"]
    assert {k: v for k, v in after["row"].items() if k not in ("autoattack", "n_autoattack")} == \
        {k: v for k, v in before["row"].items() if k not in ("autoattack", "n_autoattack")}
    assert after["scores"] == before["scores"] and not list(out.glob("*.partial"))
    # a run with one more score column (Square, for seed 0) adds it to the rows on disk and keeps the others
    more = [c for c in cmd if c not in ("--readme", str(readme))]
    i = more.index("--score-columns")
    more[i:i + 3] = ["--score-columns", "apgd", "square", "eps_curve", "--square-seeds", "0"]
    fifth = subprocess.run(more, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert fifth.returncode == 0, fifth.stdout[-2000:] + fifth.stderr[-2000:]
    assert "$ " not in fifth.stdout and fifth.stdout.count("scored ") == 2
    squared = json.loads((out / "mnist5k_pgd_at_seed0.json").read_text())
    assert len(squared["scores"]["square_correct"]) == 12 and 0.0 <= squared["scores"]["square"] <= 1.0
    assert {k: v for k, v in squared["scores"].items() if not k.startswith("square") and k != "seconds"} == \
        {k: v for k, v in after["scores"].items() if k != "seconds"}
    assert set(squared["scores"]["seconds"]) == {"apgd", "square", "eps_curve"}
    after = squared
    # a seed not in --autoattack-seeds is left alone
    other = [c for c in add if c != "--add-autoattack"][:-2] + ["--add-autoattack", "--autoattack-seeds", "1"]
    assert subprocess.run(other, cwd=ROOT, capture_output=True, text=True, timeout=300).returncode == 0
    assert json.loads((out / "mnist5k_pgd_at_seed0.json").read_text()) == after
