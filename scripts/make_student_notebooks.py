#!/usr/bin/env python
"""Write the student notebooks (notebooks/NN_*.ipynb) from the instructor versions (notebooks/solutions/NN_*.ipynb).

    python scripts/make_student_notebooks.py            # rewrite every student notebook
    python scripts/make_student_notebooks.py --check    # exit 1 if a committed student notebook has drifted

Edit the solutions, never the student notebooks: this script makes each student notebook from its solution.
- every block of whole lines from `# BEGIN SOLUTION` to `# END SOLUTION` (markers included) becomes
  `raise NotImplementedError("Exercise N: <what to do>")` at the marker's indentation; the text after
  `# BEGIN SOLUTION` (e.g. `# BEGIN SOLUTION Exercise 1: compute the FGSM step`) is the message, else
  "Exercise: complete this code";
- code cells containing the line `# test: instructor only` are removed, and so are the header's lines that
  start with `> **Instructor version**`;
- the header's "Open in Colab" badge points to the student notebook;
- a cell that is unchanged keeps its executed outputs (the reference solution stands in for an unsolved
  exercise, so the rest of the notebook prints what the solution printed); an exercise cell and the check cell
  right after it lose theirs (the student runs them).
Unbalanced or nested markers are an error that names the file, the cell and the line; nothing is written then.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clead_lite.course.notebook_setup import colab_badge  # noqa: E402

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\b[ \t:]*(?P<msg>.*)$")
END = re.compile(r"^[ \t]*# END SOLUTION\b")
INSTRUCTOR_ONLY = re.compile(r"^[ \t]*# test: instructor only\b", re.MULTILINE)
INSTRUCTOR_LINE = "> **Instructor version**"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
DEFAULT_MESSAGE = "Exercise: complete this code"
SOLUTIONS = ROOT / "notebooks" / "solutions"
STUDENTS = ROOT / "notebooks"


class MarkerError(ValueError):
    """Unbalanced or nested solution markers."""


def strip_solutions(source: str, where: str = "<cell>") -> tuple[str, int]:
    """Replace each solution block of `source` by a stub; returns (new source, number of blocks).

    where: "file, cell N" for error messages.
    """
    out: list[str] = []
    blocks = 0
    open_at: int | None = None
    for lineno, line in enumerate(source.split("\n"), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if open_at is not None:
                raise MarkerError(f"{where}, line {lineno}: '# BEGIN SOLUTION' inside the block opened at line "
                                  f"{open_at} (nested or missing '# END SOLUTION')")
            open_at = lineno
            msg = begin.group("msg").strip() or DEFAULT_MESSAGE
            out.append(f"{begin.group('indent')}raise NotImplementedError({msg!r})")
            blocks += 1
        elif end:
            if open_at is None:
                raise MarkerError(f"{where}, line {lineno}: '# END SOLUTION' without a '# BEGIN SOLUTION' before it")
            open_at = None
        elif open_at is None:
            out.append(line)
    if open_at is not None:
        raise MarkerError(f"{where}, line {open_at}: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'")
    return "\n".join(out), blocks


def student_header(source: str, name: str) -> str:
    """The solution's header cell for the student: its badge points to the student notebook `name`, the
    instructor-only lines are gone."""
    lines = [line for line in source.split("\n") if not line.startswith(INSTRUCTOR_LINE)]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return BADGE.sub(lambda _: colab_badge(name), text)


def _clear(cell) -> None:
    cell.outputs = []
    cell.execution_count = None


def student_notebook(nb: nbformat.NotebookNode, name: str = "<notebook>") -> tuple[nbformat.NotebookNode, int]:
    """The student version of `nb` (a copy) and its number of exercises (solution blocks)."""
    nb = nbformat.from_dict(nb)  # deep copy
    cells, blocks, clear_next_code = [], 0, False
    first_markdown = True
    for index, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "markdown" and first_markdown:
            cell.source = student_header(cell.source, Path(name).name)
            first_markdown = False
        if cell.cell_type == "code":
            if INSTRUCTOR_ONLY.search(cell.source):
                continue
            source, n = strip_solutions(cell.source, f"{name}, cell {index}")
            cell.metadata.pop("execution", None)
            if n or clear_next_code:
                cell.source = source
                _clear(cell)
            blocks += n
            clear_next_code = bool(n)
        cells.append(cell)
    nb.cells = cells
    return nb, blocks


def solution_notebooks(folder: Path | str = SOLUTIONS) -> list[Path]:
    paths = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no notebooks (NN_*.ipynb) in {folder}")
    return paths


def make_student_notebooks(notebooks: list[Path] | None = None, out_dir: Path | str = STUDENTS,
                           quiet: bool = False, check: bool = False) -> list[Path]:
    """Write the student version of each solution notebook (default: notebooks/solutions/NN_*.ipynb) into
    `out_dir` (default: notebooks/). check: write nothing; return the student notebooks that differ from what
    would be written (missing ones included). Otherwise returns the paths written."""
    notebooks = solution_notebooks() if notebooks is None else [Path(p) for p in notebooks]
    if not notebooks:
        raise FileNotFoundError("no notebooks to convert")
    out_dir = Path(out_dir)
    converted = []
    for path in notebooks:  # convert everything first: a marker error writes nothing
        nb = nbformat.read(path, as_version=4)
        converted.append((path, *student_notebook(nb, path.name)))
    if check:
        drifted = []
        for path, nb, _ in converted:
            target = out_dir / path.name
            if not target.exists() or nbformat.read(target, as_version=4) != nb:
                drifted.append(target)
        return drifted
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb, blocks in converted:
        target = out_dir / path.name
        nbformat.write(nb, target)
        written.append(target)
        if not quiet:
            print(f"{path.name}: {blocks} exercise stub(s) -> {target}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/solutions/NN_*.ipynb")
    parser.add_argument("--out", type=Path, default=STUDENTS, help="default: notebooks/")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a student notebook drifted")
    args = parser.parse_args(argv)
    try:
        result = make_student_notebooks(args.notebooks or None, args.out, check=args.check)
    except MarkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if result:
            print("out of date (run python scripts/make_student_notebooks.py): "
                  + ", ".join(p.name for p in result))
            return 1
        print("the student notebooks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
