"""The student notebooks (notebooks/NN_*.ipynb) and their generator (scripts/make_student_notebooks.py), which
makes them from the instructor versions (notebooks/solutions/NN_*.ipynb): the committed student notebooks are
exactly what the generator makes from the committed solutions (no drift); solutions removed, stubs in place
(indentation kept), instructor-only cells dropped, the executed outputs of unchanged cells kept, the exercise and
check cells' outputs cleared, unbalanced markers rejected with file, cell and line; a student stub + its check
gives the "not implemented" feedback instead of a crash, and each student notebook runs top to bottom."""
import contextlib
import importlib.util
import io
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*.ipynb"))   # the instructor versions
STUDENT = ROOT / "notebooks"

_spec = importlib.util.spec_from_file_location("make_student_notebooks", ROOT / "scripts" / "make_student_notebooks.py")
msn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(msn)


def solution_blocks(source: str) -> list[list[str]]:
    blocks, current = [], None
    for line in source.split("\n"):
        if msn.BEGIN.match(line):
            current = []
        elif msn.END.match(line):
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


@pytest.fixture(scope="module")
def students():
    return {p.name: msn.student_notebook(nbformat.read(p, as_version=4), p.name)[0] for p in NOTEBOOKS}


def test_student_and_solution_notebooks_pair_up():
    assert [p.name for p in NOTEBOOKS] == sorted(p.name for p in STUDENT.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_student_notebook_is_what_the_generator_makes(path, students):
    """No drift: edit notebooks/solutions/, then run `python scripts/make_student_notebooks.py`."""
    committed = nbformat.read(STUDENT / path.name, as_version=4)
    assert committed == students[path.name], (
        f"notebooks/{path.name} differs from what scripts/make_student_notebooks.py makes from "
        f"notebooks/solutions/{path.name}: run python scripts/make_student_notebooks.py")


def test_check_mode_reports_drift(tmp_path):
    out = tmp_path / "students"
    msn.make_student_notebooks(NOTEBOOKS[:1], out, quiet=True)
    assert msn.make_student_notebooks(NOTEBOOKS[:1], out, check=True) == []
    nb = nbformat.read(out / NOTEBOOKS[0].name, as_version=4)
    nb.cells[-1].source += "\nedited by hand"
    nbformat.write(nb, out / NOTEBOOKS[0].name)
    assert msn.make_student_notebooks(NOTEBOOKS[:1], out, check=True) == [out / NOTEBOOKS[0].name]
    assert msn.main([str(NOTEBOOKS[0]), "--out", str(out), "--check"]) == 1


def test_there_are_notebooks_with_exercises():
    assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]
    n = sum(len(solution_blocks(c.source)) for p in NOTEBOOKS for c in nbformat.read(p, 4).cells
            if c.cell_type == "code")
    assert n >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_has_stubs_and_no_solutions(path, students):
    teacher = nbformat.read(path, as_version=4)
    student = students[path.name]
    teacher_code = [c for c in teacher.cells if c.cell_type == "code"]
    kept = [c for c in teacher_code if not msn.INSTRUCTOR_ONLY.search(c.source)]
    student_code = [c for c in student.cells if c.cell_type == "code"]
    assert len(student_code) == len(kept), "only instructor-only cells may be removed"
    n_blocks = 0
    for t, s in zip(kept, student_code):
        blocks = solution_blocks(t.source)
        n_blocks += len(blocks)
        assert "BEGIN SOLUTION" not in s.source and "END SOLUTION" not in s.source
        assert s.source.count("raise NotImplementedError(") == t.source.count("raise NotImplementedError(") + len(blocks)
        student_lines = {line.strip() for line in s.source.split("\n")}
        for block in blocks:
            for line in block:
                if line.strip() and not line.strip().startswith("#"):
                    assert line.strip() not in student_lines, f"solution line survived: {line!r}"
        if blocks:
            assert s.outputs == [] and s.execution_count is None
        else:
            assert s.source == t.source
    assert "# test: instructor only" not in "\n".join(c.source for c in student.cells if c.cell_type == "code")
    stubs = re.findall(r"raise NotImplementedError\((['\"])Exercise", "\n".join(c.source for c in student_code))
    assert len(stubs) == n_blocks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_is_followed_by_a_check(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    for i, cell in enumerate(cells):
        if solution_blocks(cell.source):
            following = cells[i + 1] if i + 1 < len(cells) else None
            assert following is not None and re.search(r"\bcheck_\w+\(", following.source), (
                f"{path.name}: the exercise cell {cell.source.splitlines()[0]!r} must be followed by a check_... call")


def _exercise_pairs(nb):
    cells = [c for c in nb.cells if c.cell_type == "code"]
    return [(c, cells[i + 1]) for i, c in enumerate(cells) if "raise NotImplementedError(\"Exercise" in c.source
            or "raise NotImplementedError('Exercise" in c.source]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_stub_and_check_give_not_implemented_feedback(path, students):
    """Run each stub cell and its check cell (self-contained: they import what they use, given torch, nn,
    F, np) and expect feedback that names the unfinished exercise (the stub's message) and no passing
    result (`ok...` variables False), not an exception."""
    pairs = _exercise_pairs(students[path.name])
    assert pairs or path.name.startswith("00") or not path.name[:2].isdigit(), "no exercise found"
    for stub, check in pairs:
        namespace: dict = {}
        exec("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nimport numpy as np", namespace)
        exec(compile(stub.source, f"{path.name}:stub", "exec"), namespace)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(check.source, f"{path.name}:check", "exec"), namespace)
        out = buffer.getvalue()
        message = re.search(r"raise NotImplementedError\((['\"])(.*?)\1\)", stub.source).group(2)
        assert message in out and re.search(r"not implemented|NotImplementedError", out), (
            f"{path.name}: {check.source!r} printed {out!r}; expected the stub's message {message!r}")
        results = [v for k, v in namespace.items() if k.startswith("ok") and isinstance(v, bool)]
        assert not any(results), (path.name, check.source, "a check passed on a stub")


# ------------------------------------------------------------------------------------------------ synthetic
def _nb(*sources, markdown=None):
    nb = new_notebook()
    nb.cells = [new_code_cell(s) for s in sources]
    if markdown:
        nb.cells.insert(0, new_markdown_cell(markdown))
    return nb


def test_stub_keeps_indentation_and_message():
    src = ("def f(x):\n    y = 1\n    # BEGIN SOLUTION Exercise 7: double x\n    y = 2 * x\n    # END SOLUTION\n"
           "    return y")
    out, n = msn.strip_solutions(src)
    assert n == 1
    assert out == "def f(x):\n    y = 1\n    raise NotImplementedError('Exercise 7: double x')\n    return y"
    out, _ = msn.strip_solutions("if True:\n\t# BEGIN SOLUTION\n\tz = 1\n\t# END SOLUTION")
    assert out == "if True:\n\traise NotImplementedError('Exercise: complete this code')"


def test_student_notebook_drops_instructor_cells_and_keeps_unchanged_outputs():
    nb = _nb("x = 1", "# test: instructor only\nassert x == 1", "print(x)",
             "def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION", "check_f(f)", "print(f())")
    for i, cell in enumerate(nb.cells):
        cell.outputs = [new_output("stream", text=f"{i}\n")]
        cell.execution_count = i + 1
    student, n = msn.student_notebook(nb, "demo.ipynb")
    assert n == 1 and [c.source for c in student.cells][:2] == ["x = 1", "print(x)"]
    assert [c.execution_count for c in student.cells] == [1, 3, None, None, 6]
    assert student.cells[1].outputs[0].text == "2\n" and student.cells[4].outputs[0].text == "5\n"
    assert student.cells[2].outputs == [] and student.cells[3].outputs == [], "the exercise and its check: cleared"
    assert len(nb.cells) == 6 and nb.cells[3].outputs, "the instructor notebook object is untouched"


def test_header_badge_points_to_the_student_notebook():
    from clead_lite.course.notebook_setup import colab_badge
    nb = _nb("x = 1", markdown=f"# 01 · T\n\n{colab_badge('solutions/01_t.ipynb')}\n\n"
                               f"{msn.INSTRUCTOR_LINE}: solved.\n\n**Goals.**")
    student, _ = msn.student_notebook(nb, "01_t.ipynb")
    assert student.cells[0].source == f"# 01 · T\n\n{colab_badge('01_t.ipynb')}\n\n**Goals.**"


@pytest.mark.parametrize("source, phrase, line", [
    ("a = 1\n# BEGIN SOLUTION\nb = 2", "never closed", 2),
    ("a = 1\n# END SOLUTION", "without a '# BEGIN SOLUTION'", 2),
    ("# BEGIN SOLUTION\na = 1\n    # BEGIN SOLUTION\n# END SOLUTION", "nested", 3),
])
def test_unbalanced_markers_name_file_cell_and_line(source, phrase, line, tmp_path):
    path = tmp_path / "broken.ipynb"
    nbformat.write(_nb("ok = 1", source, markdown="# title"), path)
    with pytest.raises(msn.MarkerError) as info:
        msn.make_student_notebooks([path], tmp_path / "out", quiet=True)
    message = str(info.value)
    assert "broken.ipynb" in message and "cell 3" in message and f"line {line}" in message and phrase in message
    assert not (tmp_path / "out" / "broken.ipynb").exists(), "nothing is written on a marker error"


def test_command_line_writes_and_reports_errors(tmp_path, capsys):
    good = tmp_path / "good.ipynb"
    nbformat.write(_nb("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION"), good)
    assert msn.main([str(good), "--out", str(tmp_path / "out")]) == 0
    written = nbformat.read(tmp_path / "out" / "good.ipynb", as_version=4)
    assert "raise NotImplementedError" in written.cells[0].source and "return 1" not in written.cells[0].source
    bad = tmp_path / "bad.ipynb"
    nbformat.write(_nb("# END SOLUTION"), bad)
    assert msn.main([str(bad), "--out", str(tmp_path / "out2")]) == 2
    assert "bad.ipynb, cell 1, line 1" in capsys.readouterr().err


def test_markers_in_markdown_are_left_alone():
    nb = _nb("x = 1", markdown="Solutions sit between `# BEGIN SOLUTION` and `# END SOLUTION`.")
    student, n = msn.student_notebook(nb, "m.ipynb")
    assert n == 0 and "BEGIN SOLUTION" in student.cells[0].source


STUB_FEEDBACK = "not implemented yet (Exercise"   # the checks' message for a stub (see clead_lite.exercises._common)
STAND_IN = "the rest of this notebook uses the reference solution"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_notebook_runs_top_to_bottom_unsolved(path, monkeypatch):
    """Each student version runs top to bottom in the smoke profile with every exercise unsolved: every exercise's
    check says 'not implemented yet', every function exercise hands the rest of the notebook the reference solution
    and says so, and no cell raises (the final checks cell included)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(STUDENT / path.name, as_version=4)   # the committed student notebook
    monkeypatch.setenv("CLEAD_PROFILE", "smoke")
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    except CellExecutionError as e:
        pytest.fail(f"student {path.name} stopped with an error:\n{str(e)[-3000:]}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    pairs = _exercise_pairs(nb)
    assert text.count(STUB_FEEDBACK) == len(pairs) >= 1, text[-2000:]
    fallbacks = sum("or_reference(" in check.source for _, check in pairs)
    assert text.count(STAND_IN) == fallbacks >= 1, text[-2000:]
    assert "all checks passed" in text
