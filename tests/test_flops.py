"""benchmarks/bench_flops.py: measured per-pass FLOPs, each notebook's work per profile, the colab budget, and
the estimates written into the README and each notebook header's time line from benchmarks/results/flops.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_flops as B  # noqa: E402
import write_gpu_estimates as W  # noqa: E402
from clead_lite.course.profiles import PROFILES  # noqa: E402

FLOPS = json.loads((ROOT / "benchmarks" / "results" / "flops.json").read_text())


def test_pass_flops_are_measured_and_in_the_expected_ratios():
    per = B.pass_flops("smallcnn", 1, 28, batch=2)
    assert per["fwd"] > 1e6
    # a backward to the input costs about one forward; with the weight gradients about two
    assert per["input_grad"] == pytest.approx(2 * per["fwd"], rel=0.1)
    assert per["train"] == pytest.approx(3 * per["fwd"], rel=0.1)
    assert per["train_all"] >= per["train"]


def test_the_committed_preact_resnet_figures_are_the_known_ones():
    per = FLOPS["per_image_flops"]["preactresnet18@3x32x32"]
    assert per["fwd"] == pytest.approx(1.11e9, rel=0.02)        # 0.56 GMAC per 32x32 image
    assert 8.0e9 < FLOPS["t4_rate"]["resnet50_forward_gflop"] * 1e9 < 8.4e9
    assert FLOPS["t4_rate"]["tflops"] == pytest.approx(
        FLOPS["t4_rate"]["resnet50_forward_gflop"] * FLOPS["t4_rate"]["resnet50_t4_images_per_s"] / 1e3)


@pytest.mark.parametrize("name", ["colab", "paper", "quick"])
def test_flops_json_is_up_to_date_with_the_profiles_and_notebook_work(name):
    """Recomputed from the stored per-pass FLOPs and today's profiles: a changed profile needs a new JSON."""
    p = PROFILES[name]
    per = FLOPS["per_image_flops"][f"{p.model}@{p.info.channels}x{p.info.size}x{p.info.size}"]
    table = B.profile_table(p, per, FLOPS["t4_rate"]["tflops"], aa_upper=False)
    stored = FLOPS["profiles"][name]
    for now, then in zip(table["notebooks"], stored["notebooks"]):
        assert now["notebook"] == then["notebook"] and now["flops"] == pytest.approx(then["flops"], rel=1e-9)


def test_colab_fits_a_session_and_paper_does_not():
    colab, paper = FLOPS["profiles"]["colab"], FLOPS["profiles"]["paper"]
    assert colab["within_budget"] and not paper["within_budget"]
    assert all(r["t4_minutes"] <= 15 for r in colab["notebooks"]) and colab["total_t4_minutes"] <= 90
    # with AutoAttack counted on every image by every attack (an upper bound) 06 still fits
    per = FLOPS["per_image_flops"]["preactresnet18@3x32x32"]
    upper = B.profile_table(PROFILES["colab"], per, FLOPS["t4_rate"]["tflops"], aa_upper=True)
    assert upper["within_budget"]
    for a, b in zip(colab["notebooks"][1:], paper["notebooks"][1:]):
        assert a["flops"] < b["flops"], a["notebook"]


def test_each_model_is_trained_once_in_the_first_notebook_that_needs_it():
    work = B.notebook_work(PROFILES["colab"])
    trained = {name: [what for what, _, _ in items if "training" in what or what.startswith(("PGD-AT", "C-LEAD", "faithful"))]
               for name, items in work.items()}
    assert any("standard training" in w for w in trained["01_adversarial_examples"])
    assert any(w.startswith("PGD-AT") for w in trained["03_adversarial_training"])
    assert any(w.startswith("C-LEAD online") for w in trained["05_clead"])
    assert any(w.startswith("faithful") for w in trained["05_clead"])
    for name in ("02_stronger_attacks", "06_honest_evaluation", "07_embedding_separation"):
        assert trained[name] == [], name
    # FGSM-RS: one attack step per training image and epoch
    steps = [c for what, kind, c in B.training_work(PROFILES["colab"], "pgd_at") if kind == "input_grad" and what.startswith("PGD-AT")]
    assert steps == [15 * (49_488 // 128) * 128]


def test_headers_and_readme_carry_the_current_estimates():
    assert W.main(["--check"]) == 0, "run: python scripts/write_gpu_estimates.py"
    row = next(r for r in FLOPS["profiles"]["colab"]["notebooks"] if r["notebook"] == "05_clead")
    for path in (ROOT / "notebooks" / "05_clead.ipynb", ROOT / "notebooks" / "solutions" / "05_clead.ipynb"):
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert f"about {round(row['t4_minutes'])} min on a Colab T4 (`colab`, estimated)" in header
        assert len(W.TIME_LINE.findall(header)) == 1, "one line of expected time"
        assert "PFLOP" not in header and "| `smoke` |" not in header, "the tables live in the README"
    readme = (ROOT / "README.md").read_text()
    assert "9.8 TFLOP/s" in readme and "<!-- distance:start -->" in readme


def test_time_line_and_its_update():
    assert W.time_line(95, 4.4) == ("*Time: about 2 min on a laptop CPU (`quick`), about 4 min on a Colab T4 "
                                    "(`colab`, estimated).*")
    assert W.time_line(20, 0.0) == "*Time: under a minute on a laptop CPU (`quick`), under a minute on a Colab T4 (`colab`, estimated).*"
    assert W.time_line(None, None) == "*Time: not measured yet.*"
    source = "# 01\n\n**Goals.**\n"
    once = W.update_time_line(source, "*Time: a.*")
    assert once == "# 01\n\n**Goals.**\n\n*Time: a.*"
    assert W.update_time_line(once, "*Time: b.*") == "# 01\n\n**Goals.**\n\n*Time: b.*"
