"""Structure of the course notebooks (their execution is nbval's job: `CLEAD_PROFILE=smoke pytest --nbval-lax
notebooks/`), and the headless course runner `clead_lite.course.runner.run_course` on a tiny notebook.

Every notebook, student (notebooks/) and solved (notebooks/solutions/): nbformat-valid, kernel python3; cell 1 a
header (title, Colab badge for its own file, goals, prerequisites, one line of expected time; no timing tables,
FLOP estimates or stale profile names); cell 2 the identical setup cell; from 01 on at least two exercises;
explicit `assert` checks that also run in the student version; a summary with pointers at the end; no absolute
paths, no 'cuda' literal, no hard-coded dataset; committed outputs from the quick profile and free of errors.
"""
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from clead_lite.course.runner import course_notebooks, format_table, run_course
from clead_lite.course.notebook_setup import REPO_URL, colab_setup_cell, colab_url

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["00_setup_and_data.ipynb", "01_adversarial_examples.ipynb", "02_stronger_attacks.ipynb",
            "03_adversarial_training.ipynb", "04_contrastive_learning.ipynb", "05_clead.ipynb",
            "06_honest_evaluation.ipynb", "07_embedding_separation.ipynb"]
SETUP = colab_setup_cell()   # written into every notebook by scripts/sync_repo_url.py
LOCAL_PATH = re.compile(r"/(home|work|Users|root)/")
ABSOLUTE_PATH = re.compile(r"""(['"])(/(home|work|tmp|Users|root|mnt|data)/|[A-Za-z]:\\)""")


EVERY = EXPECTED + [f"solutions/{name}" for name in EXPECTED]   # student notebooks, then the solved ones


def load(name):
    path = ROOT / "notebooks" / name
    assert path.exists(), f"notebooks/{name} is missing"
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_course_has_its_eight_notebooks_in_order():
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert names == EXPECTED
    assert sorted(p.name for p in (ROOT / "notebooks" / "solutions").glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EVERY)
def test_valid_notebook_with_python3_kernel(name):
    nb = load(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", EVERY)
def test_header_cell(name):
    first = load(name).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    assert f"]({colab_url(name)})" in first.source, "the Colab badge must link to this notebook"
    assert colab_url(name).startswith("https://colab.research.google.com/github/" + REPO_URL.split("github.com/")[1])
    assert ("/notebooks/solutions/" in colab_url(name)) == name.startswith("solutions/")
    assert "colab-badge.svg" in first.source
    for word in ("Goals", "Prerequisites"):
        assert word in first.source, f"the header lacks {word!r}"
    assert len(re.findall(r"^\*Time: .*\*$", first.source, re.M)) == 1, "one line of expected time"
    for machinery in ("| `smoke` |", "PFLOP", "TFLOP", "`full` (GPU)", "gpu-estimate", "sha256"):
        assert machinery not in first.source, f"{machinery!r} belongs in the README, not in the header"
    assert ("Instructor version" in first.source) == name.startswith("solutions/")


@pytest.mark.parametrize("name", EVERY)
def test_setup_cell_is_identical_everywhere(name):
    second = load(name).cells[1]
    assert second.cell_type == "code" and second.source == SETUP


@pytest.mark.parametrize("name", EXPECTED[1:])
def test_at_least_two_exercises_each_with_a_check(name):
    cells = code_cells(load(f"solutions/{name}"))
    exercises = [i for i, c in enumerate(cells) if "# BEGIN SOLUTION" in c.source]
    assert len(exercises) >= 2, f"{name} has {len(exercises)} exercise(s)"
    for i in exercises:
        assert i + 1 < len(cells) and re.search(r"\bcheck_\w+\(", cells[i + 1].source)


@pytest.mark.parametrize("name", EVERY)
def test_explicit_asserts_that_students_run_too(name):
    shared = [c for c in code_cells(load(name))
              if re.search(r"^\s*assert\b", c.source, re.MULTILINE) and "# test: instructor only" not in c.source]
    assert shared, f"{name} needs assert cells on what must hold (nbval --nbval-lax relies on them)"


@pytest.mark.parametrize("name", EVERY)
def test_summary_and_pointers_at_the_end(name):
    last = load(name).cells[-1]
    assert last.cell_type == "markdown" and "Summary" in last.source
    assert re.search(r"Pointers|References|Further reading", last.source)


@pytest.mark.parametrize("name", EVERY)
def test_no_absolute_paths_no_cuda_no_hard_coded_dataset(name):
    for cell in code_cells(load(name)):
        assert not ABSOLUTE_PATH.search(cell.source), f"absolute path in {cell.source[:80]!r}"
        assert not re.search(r"""['"]cuda(:\d+)?['"]""", cell.source), f"'cuda' literal in {cell.source[:80]!r}"
        assert not re.search(r"""['"]mnist5k['"]""", cell.source), f"use profile.dataset: {cell.source[:80]!r}"


@pytest.mark.parametrize("name", EVERY)
def test_committed_outputs_come_from_the_quick_profile_without_errors(name):
    nb = load(name)
    for cell in code_cells(nb):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{name}: committed output with an error: {output.get('ename')}"
            text = output.get("text", "") if output.output_type == "stream" else ""
            assert not LOCAL_PATH.search(text), f"{name}: a local path in the outputs: {text[:200]!r}"
    setup_out = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", []))
    assert "profile quick" in setup_out, f"{name}: committed outputs must come from the quick profile"


MACHINERY_IN_OUTPUTS = ("Styler at 0x", "Trained by:", "sha256 verified", "command_now", "seconds here",
                        "Other settings train a new model")


@pytest.mark.parametrize("name", EVERY)
def test_outputs_read_as_text_and_show_no_machinery(name):
    """Tables render as text too (no pandas Styler, whose text fallback is '<...Styler at 0x...>'); a model load
    prints one line, without provenance; no HTML-stripping chains in the code students read."""
    nb = load(name)
    for cell in code_cells(nb):
        assert ".style.format" not in cell.source, f"{name}: a Styler; format the DataFrame's values instead"
        assert '.replace("<' not in cell.source, f"{name}: HTML stripped by hand in {cell.source[:80]!r}"
        for output in cell.get("outputs", []):
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            for machinery in MACHINERY_IN_OUTPUTS:
                assert machinery not in text, f"{name}: {machinery!r} in an output: {text[:300]!r}"
            assert not re.search(r"\b\d\.\d{3}000\b", text), f"{name}: an unrounded float index: {text[:300]!r}"
    student = not name.startswith("solutions/")
    if student:
        assert not any("# test: instructor only" in c.source for c in code_cells(nb))


# ------------------------------------------------------------------------------------------------ course runner
def _tiny_notebook(path, fail=False):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        new_markdown_cell("# tiny"),
        new_code_cell("import os\nprint('profile', os.environ['CLEAD_PROFILE'])"),
        new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n_ = ax.plot([1, 2])"),
    ]
    if fail:
        nb.cells.append(new_code_cell("raise ValueError('broken on purpose')"))
    nbformat.write(nb, path)


def test_run_course_executes_saves_figures_and_times(tmp_path, capsys):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _tiny_notebook(nbdir / "00_tiny.ipynb")
    _tiny_notebook(nbdir / "01_broken.ipynb", fail=True)
    assert [p.name for p in course_notebooks(None, nbdir)] == ["00_tiny.ipynb", "01_broken.ipynb"]
    assert [p.name for p in course_notebooks(["01"], nbdir)] == ["01_broken.ipynb"]
    with pytest.raises(FileNotFoundError, match="available: 00_tiny.ipynb, 01_broken.ipynb"):
        course_notebooks(["07"], nbdir)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        run_course("fast", tmp_path / "out", notebook_dir=nbdir)
    out = tmp_path / "out"
    rows = run_course("smoke", out, notebook_dir=nbdir, inplace=True, timeout=120)
    assert [r["notebook"] for r in rows] == ["00_tiny.ipynb", "01_broken.ipynb"]
    assert rows[0]["status"] == "ok" and rows[0]["profile"] == "smoke" and rows[0]["figures"] == 1
    assert rows[1]["status"] == "error: ValueError: broken on purpose"
    executed = nbformat.read(out / "00_tiny.ipynb", as_version=4)
    assert "profile smoke" in executed.cells[1].outputs[0]["text"]
    assert (out / "figures" / "00_tiny_cell02_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "times.json").read_text()) == rows
    assert "| 00_tiny.ipynb | smoke |" in (out / "times.md").read_text()
    assert "| 00_tiny.ipynb | smoke |" in capsys.readouterr().out
    # inplace: the successful notebook gets its outputs, the failing one is left as it was
    assert nbformat.read(nbdir / "00_tiny.ipynb", as_version=4).cells[1].outputs
    assert not nbformat.read(nbdir / "01_broken.ipynb", as_version=4).cells[1].get("outputs")


def test_format_table_totals():
    rows = [{"notebook": "a", "profile": "quick", "seconds": 1.5, "status": "ok", "figures": 2},
            {"notebook": "b", "profile": "quick", "seconds": 2.0, "status": "error: x", "figures": 0}]
    table = format_table(rows)
    assert "| a | quick | 1.5 | ok | 2 |" in table and "| **total** | | 3.5 | 1/2 ok | |" in table


# ------------------------------------------------------------------------------------------------ notebook helpers
def test_setup_prints_one_line_and_returns_profile_and_device(capsys, monkeypatch):
    import matplotlib as mpl
    import torch

    from clead_lite.course.notebook_setup import PROJECTOR_RC, setup
    monkeypatch.setenv("CLEAD_PROFILE", "smoke")
    monkeypatch.delenv("CLEAD_DATASET", raising=False)
    profile, device = setup()
    line = capsys.readouterr().out.strip()
    assert profile.name == "smoke" and isinstance(device, torch.device)
    assert line.count("\n") == 0 and line.startswith("profile smoke: mnist5k, smallcnn, eps 0.3 | device ")
    assert "torch" not in line and "python" not in line      # library versions are not the lesson's
    assert mpl.rcParams["font.size"] == PROJECTOR_RC["font.size"]
    monkeypatch.setenv("CLEAD_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        setup()
    # colab states its cut of the published setting in the notebook, under the setup line
    monkeypatch.setenv("CLEAD_PROFILE", "colab")
    profile, _ = setup(device="cpu")
    out = capsys.readouterr().out
    assert f"colab: {profile.epochs} epochs of fast adversarial training on a seeded {profile.n_train:,}-image" in out
    assert "expect lower accuracy than published" in out


def _explorer():
    import torch

    from clead_lite.models import SmallCNN
    from clead_lite.widgets.viz import attack_explorer
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    return attack_explorer(SmallCNN(width=8, feature_dim=32), x, y, classes=[str(i) for i in range(10)],
                           eps_max=0.3, attacks=("fgsm", "pgd", "noise"), eps=0.1), x


def test_attack_explorer_updates_live_on_every_control():
    explorer, x = _explorer()
    classes = {"clead-attack-explorer"} <= set(explorer._dom_classes)
    assert classes and "clead-eps-slider" in explorer.eps_slider._dom_classes
    assert "clead-explorer-image" in explorer.image._dom_classes
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n" and explorer.render_count == 1
    seen = {explorer.image.value}
    for control, value in ((explorer.eps_slider, 0.2), (explorer.attack_dropdown, "pgd"),
                           (explorer.attack_dropdown, "noise"), (explorer.index_slider, 2)):
        before = explorer.render_count
        control.value = value
        assert explorer.render_count == before + 1, f"changing {control.description} did not redraw"
        seen.add(explorer.image.value)
    assert len(seen) == 5, "every change must produce a new picture"
    assert "NOISE at eps = 0.200" in explorer.text.value
    state = explorer.compute()
    assert float((state["x_adv"] - state["x"]).abs().max()) <= 0.2 + 1e-6
    assert torch_equal(state["x"], x[2])
    explorer.eps_slider.value = 0.0
    state = explorer.compute()
    assert torch_equal(state["x_adv"], state["x"])


def torch_equal(a, b):
    import torch
    return bool(torch.equal(a, b))


def test_attack_explorer_rejects_bad_arguments():
    import torch

    from clead_lite.models import SmallCNN
    from clead_lite.widgets.viz import attack_explorer
    model, x, y = SmallCNN(width=8, feature_dim=32), torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        attack_explorer(model, x, y, attacks=("fgsm", "cw"))
    with pytest.raises(ValueError, match="eps_max must be in \\[0, 1\\], got 8"):
        attack_explorer(model, x, y, eps_max=8)
    with pytest.raises(ValueError, match="disagree on the number of images: 2 vs 3"):
        attack_explorer(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        attack_explorer(model, x * 255, y)


def test_live_curves_and_plot_history_from_training_records(capsys):
    import matplotlib.pyplot as plt

    from clead_lite.training import History
    from clead_lite.widgets.viz import LiveCurves, plot_history
    records = [{"kind": "step", "epoch": 0.5, "loss": 2.0},
               {"kind": "epoch", "epoch": 1, "loss": 1.5, "acc": 0.4, "val_clean_acc": 0.6, "val_pgd_acc": 0.1},
               {"kind": "epoch", "epoch": 2, "loss": 1.0, "acc": 0.6, "val_clean_acc": 0.8, "val_pgd_acc": 0.3}]
    curves = LiveCurves()
    for r in records:
        assert curves(r, None) is None          # never asks train() to stop
    assert list(curves.frame()["epoch"]) == [1, 2]  # step records are ignored
    assert "'val_pgd_acc': 0.3" in capsys.readouterr().out  # outside IPython: printed
    fig = plot_history({"a": History(records), "b": History(records[:2])})
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "accuracy on training batches",
                                                  "held-out clean accuracy", "held-out PGD accuracy"]
    assert list(fig.axes[3].lines[0].get_ydata()) == [10.0, 30.0] and len(fig.axes[3].lines) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="no panel column"):
        plot_history([{"kind": "epoch", "epoch": 1, "other": 1}])


def test_plots_return_figures_and_check_inputs():
    import matplotlib.pyplot as plt
    import pandas as pd
    import torch

    from clead_lite.widgets.viz import plot_accuracy_vs_eps, plot_perturbation, plot_similarity_matrix, show_images
    x = torch.rand(5, 1, 28, 28)
    fig = show_images(x, labels=torch.arange(5), preds=torch.tensor([0, 1, 0, 3, 0]), ncols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["0 (0)", "1 (1)", "0 (2)", "3 (3)", "0 (4)"]
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        show_images(x * 2)
    fig2 = plot_perturbation(x[0], x[1:2], torch.full((10,), 0.1), torch.full((10,), 0.1))
    assert len(fig2.axes) == 4
    with pytest.raises(ValueError, match="must be one image"):
        plot_perturbation(x[:2], x[:2], torch.full((10,), 0.1), torch.full((10,), 0.1))
    frame = pd.DataFrame({"eps": [0, 0.1], "accuracy": [0.9, 0.2]})
    fig3 = plot_accuracy_vs_eps({"model": frame}, eps_mark=0.1)
    assert list(fig3.axes[0].lines[0].get_ydata()) == [90.0, 20.0]
    with pytest.raises(ValueError, match="lacks column"):
        plot_accuracy_vs_eps(pd.DataFrame({"eps": [0]}))
    fig4 = plot_similarity_matrix([torch.eye(3), torch.eye(3)], names=["clean", "adv"])
    mesh = fig4.axes[0].collections[0].get_array().reshape(6, 6)
    assert abs(float(mesh[0, 3]) - 1.0) < 1e-6 and abs(float(mesh[0, 1])) < 1e-6
    with pytest.raises(ValueError, match="views\\[1\\] must have shape \\(3, D\\)"):
        plot_similarity_matrix([torch.eye(3), torch.eye(2)])
    for f in (fig, fig2, fig3, fig4):
        plt.close(f)
