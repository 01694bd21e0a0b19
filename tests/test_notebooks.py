"""Structure of the course notebooks (their execution is nbval's job: `CLEAD_PROFILE=smoke pytest --nbval-lax
notebooks/`), and the headless course runner `clead_lite.course.run_course` on a tiny notebook.

Every notebook: nbformat-valid, kernel python3; cell 1 a header (title, Colab badge for its own file, goals,
prerequisites, a run-time table per profile); cell 2 the identical setup cell; from 01 on at least two
exercises; explicit `assert` checks that also run in the student version; a summary with pointers at the end;
no absolute paths, no 'cuda' literal, no hard-coded dataset; committed outputs (if any) from the quick
profile and free of errors.
"""
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from clead_lite.course import course_notebooks, format_table, run_course
from clead_lite.notebook_setup import REPO_URL, colab_url

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ["00_setup_and_data.ipynb", "01_adversarial_examples.ipynb", "02_stronger_attacks.ipynb",
            "03_adversarial_training.ipynb", "04_contrastive_learning.ipynb", "05_clead.ipynb",
            "06_honest_evaluation.ipynb", "07_embedding_separation.ipynb"]
SETUP = '''# Setup: on Colab this installs clead_lite (keeping Colab's torch); locally it does nothing.
import sys
if "google.colab" in sys.modules:
    !pip -q install "clead_lite @ git+https://github.com/clead-course/clead-course" && pip -q install --no-deps torchattacks==3.5.1
from clead_lite.notebook_setup import setup
profile, device = setup()     # prints profile, dataset, device, library versions'''
LOCAL_PATH = re.compile(r"/(home|work|Users|root)/")
ABSOLUTE_PATH = re.compile(r"""(['"])(/(home|work|tmp|Users|root|mnt|data)/|[A-Za-z]:\\)""")


def load(name):
    path = ROOT / "notebooks" / name
    assert path.exists(), f"notebooks/{name} is missing"
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_course_has_its_eight_notebooks_in_order():
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert names == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_valid_notebook_with_python3_kernel(name):
    nb = load(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", EXPECTED)
def test_header_cell(name):
    first = load(name).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    assert f"]({colab_url(name)})" in first.source, "the Colab badge must link to this notebook"
    assert colab_url(name).startswith("https://colab.research.google.com/github/" + REPO_URL.split("github.com/")[1])
    assert "colab-badge.svg" in first.source
    for word in ("Goals", "Prerequisites", "smoke", "quick", "full"):
        assert word in first.source, f"the header lacks {word!r}"
    assert re.search(r"\|\s*`?smoke`?\s*\|", first.source), "the header needs a run-time table per profile"


@pytest.mark.parametrize("name", EXPECTED)
def test_setup_cell_is_identical_everywhere(name):
    second = load(name).cells[1]
    assert second.cell_type == "code" and second.source == SETUP


@pytest.mark.parametrize("name", EXPECTED[1:])
def test_at_least_two_exercises_each_with_a_check(name):
    cells = code_cells(load(name))
    exercises = [i for i, c in enumerate(cells) if "# BEGIN SOLUTION" in c.source]
    assert len(exercises) >= 2, f"{name} has {len(exercises)} exercise(s)"
    for i in exercises:
        assert i + 1 < len(cells) and re.search(r"\bcheck_\w+\(", cells[i + 1].source)


@pytest.mark.parametrize("name", EXPECTED)
def test_explicit_asserts_that_students_run_too(name):
    shared = [c for c in code_cells(load(name))
              if re.search(r"^\s*assert\b", c.source, re.MULTILINE) and "# test: instructor only" not in c.source]
    assert shared, f"{name} needs assert cells on what must hold (nbval --nbval-lax relies on them)"


@pytest.mark.parametrize("name", EXPECTED)
def test_summary_and_pointers_at_the_end(name):
    last = load(name).cells[-1]
    assert last.cell_type == "markdown" and "Summary" in last.source
    assert re.search(r"Pointers|References|Further reading", last.source)


@pytest.mark.parametrize("name", EXPECTED)
def test_no_absolute_paths_no_cuda_no_hard_coded_dataset(name):
    for cell in code_cells(load(name)):
        assert not ABSOLUTE_PATH.search(cell.source), f"absolute path in {cell.source[:80]!r}"
        assert not re.search(r"""['"]cuda(:\d+)?['"]""", cell.source), f"'cuda' literal in {cell.source[:80]!r}"
        assert not re.search(r"""['"]mnist5k['"]""", cell.source), f"use profile.dataset: {cell.source[:80]!r}"


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_outputs_come_from_the_quick_profile_without_errors(name):
    nb = load(name)
    for cell in code_cells(nb):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{name}: committed output with an error: {output.get('ename')}"
            text = output.get("text", "") if output.output_type == "stream" else ""
            assert not LOCAL_PATH.search(text), f"{name}: a local path in the outputs: {text[:200]!r}"
    setup_out = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", []))
    if setup_out:
        assert "profile quick" in setup_out, f"{name}: committed outputs must come from the quick profile"


# ------------------------------------------------------------------------------------------------ course runner
def _tiny_notebook(path, fail=False):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        new_markdown_cell("# tiny"),
        new_code_cell("import os\nprint('profile', os.environ['CLEAD_PROFILE'])"),
        new_code_cell("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                      "from IPython.display import display\nfig, ax = plt.subplots()\nax.plot([1, 2])\n"
                      "display(fig)\nplt.close(fig)"),
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
    assert rows[1]["status"].startswith("error") and "broken on purpose" in rows[1]["status"]
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
