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
    # the calibrated T4 training rate (docs/COLAB.md): Wong et al.'s 15 x 50,000 FGSM-RS image steps in 720 s on a
    # 2080 Ti, times a T4's 0.42-0.67 of that GPU
    rate = FLOPS["t4_rate"]
    assert rate["tflops"] == pytest.approx(B.t4_rate(per)["tflops"], rel=1e-12)
    assert rate["anchor_pflop"] == pytest.approx(15 * 50_000 * (per["input_grad"] + per["train"]) / 1e15)
    assert rate["rtx2080ti_tflops"] == pytest.approx(rate["anchor_pflop"] * 1e3 / 720)
    assert rate["tflops"] == pytest.approx(rate["rtx2080ti_tflops"] * (0.42 + 0.67) / 2)
    assert rate["tflops"] == pytest.approx(3.15, abs=0.005) and rate["range_tflops"] == pytest.approx([2.43, 3.87], abs=0.01)


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
    assert steps == [5 * ((10_000 - 512) // 128) * 128]      # 5 epochs on the 10,000-image subset less 512 held out


def test_fresh_runtime_retrains_what_each_notebook_loads_and_every_notebook_fits():
    """The fresh-runtime table: a new Colab runtime without a store retrains every model the notebook loads that
    an earlier notebook trained; every notebook <= 12 min of FLOPs, the course <= 90 with 3 min of setup each."""
    assert B.retrained("01_adversarial_examples") == () and B.retrained("02_stronger_attacks") == ("standard",)
    assert B.retrained("05_clead") == ("standard", "pgd_at")
    assert B.retrained("07_embedding_separation") == ("standard", "pgd_at", "clead_online", "clead_faithful")
    per = FLOPS["per_image_flops"]["preactresnet18@3x32x32"]
    rate = FLOPS["t4_rate"]["tflops"]
    table = B.fresh_table(PROFILES["colab"], per, rate, aa_upper=False)
    stored = FLOPS["colab_fresh_runtime"]
    for now, then in zip(table["notebooks"], stored["notebooks"]):
        assert now["fresh_t4_minutes"] == pytest.approx(then["fresh_t4_minutes"], rel=1e-9), now["notebook"]
    minutes = {m: sum(per[k] * c for _, k, c in B.training_work(PROFILES["colab"], m)) / rate / 1e12 / 60
               for m in B.TRAINED_IN}
    for row in table["notebooks"]:
        extra = sum(minutes[m] for m in row["retrains"])
        assert row["fresh_t4_minutes"] == pytest.approx(row["t4_minutes"] + extra, rel=1e-9), row["notebook"]
        assert row["fresh_t4_minutes"] <= B.NOTEBOOK_COMPUTE_MIN == 12.0, row["notebook"]
    assert table["within_budget"] and table["total_fresh_t4_minutes"] + 7 * 3.0 <= 90
    # the old colab sizing (15 epochs on all 50,000 images, 1,000 / 200 evaluation images) does not fit
    old = PROFILES["colab"].replace(n_train=None, epochs=15, n_eval=1000, n_autoattack=200)
    assert not B.fresh_table(old, per, rate, aa_upper=False)["within_budget"]


def test_loads_match_the_notebooks_code():
    """bench_flops.LOADS is read off the notebooks: every load_or_train / load_or_train_faithful call of each
    instructor notebook (TRADES, only ever loaded from a store on the GPU profiles, aside)."""
    import re
    for name, loads in B.LOADS.items():
        cells = json.loads((ROOT / "notebooks" / "solutions" / f"{name}.ipynb").read_text())["cells"]
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        found = set(re.findall(r'load_or_train\("(\w+)"', code)) - {"trades"}
        if "load_or_train_faithful(" in code:
            found.add("clead_faithful")
        assert found == set(loads), name


def test_headers_and_readme_carry_the_current_estimates():
    assert W.main(["--check"]) == 0, "run: python scripts/write_gpu_estimates.py"
    row = next(r for r in FLOPS["profiles"]["colab"]["notebooks"] if r["notebook"] == "05_clead")
    for path in (ROOT / "notebooks" / "05_clead.ipynb", ROOT / "notebooks" / "solutions" / "05_clead.ipynb"):
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert f"about {round(row['t4_minutes'])} min on a Colab T4 (`colab`, estimated" in header
        assert len(W.TIME_LINE.findall(header)) == 1, "one line of expected time"
        assert "PFLOP" not in header and "| `smoke` |" not in header, "the tables live in the README"
    readme = (ROOT / "README.md").read_text()
    assert "3.15 TFLOP/s" in readme and "9.8 TFLOP/s" not in readme and "<!-- distance:start -->" in readme
    assert "too optimistic" not in readme
    docs = (ROOT / "docs" / "COLAB.md").read_text()
    assert "<!-- fresh:start -->" in docs and W.fresh_table(FLOPS) in docs


def test_time_line_and_its_update():
    assert W.time_line(95, 4.4) == ("*Time: about 2 min on a laptop CPU (`quick`), about 4 min on a Colab T4 "
                                    "(`colab`, estimated).*")
    assert W.time_line(20, 0.0) == "*Time: under a minute on a laptop CPU (`quick`), under a minute on a Colab T4 (`colab`, estimated).*"
    assert W.time_line(None, None) == "*Time: not measured yet.*"
    assert W.time_line(95, 4.6, 11.8) == ("*Time: about 2 min on a laptop CPU (`quick`), about 5 min on a Colab T4 "
                                          "(`colab`, estimated; about 12 min without the models earlier "
                                          "notebooks saved).*")
    assert W.time_line(20, 1.1, 1.1).endswith("about 1 min on a Colab T4 (`colab`, estimated).*")
    source = "# 01\n\n**Goals.**\n"
    once = W.update_time_line(source, "*Time: a.*")
    assert once == "# 01\n\n**Goals.**\n\n*Time: a.*"
    assert W.update_time_line(once, "*Time: b.*") == "# 01\n\n**Goals.**\n\n*Time: b.*"
