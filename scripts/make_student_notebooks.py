#!/usr/bin/env python
"""Write the student versions of the course notebooks.

Reads notebooks/*.ipynb (the instructor versions, with solutions) and writes, by default, build/student/:
- every block of whole lines from `# BEGIN SOLUTION` to `# END SOLUTION` (markers included) becomes
  `raise NotImplementedError("Exercise N: <what to do>")` at the marker's indentation; the text after
  `# BEGIN SOLUTION` (e.g. `# BEGIN SOLUTION Exercise 1: compute the FGSM step`) is the message, else
  "Exercise: complete this code";
- code cells containing the line `# test: instructor only` are removed;
- all outputs and execution counts are cleared.
Unbalanced or nested markers are an error that names the file, the cell and the line.

    python scripts/make_student_notebooks.py [NOTEBOOK ...] [--out build/student]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\b[ \t:]*(?P<msg>.*)$")
END = re.compile(r"^[ \t]*# END SOLUTION\b")
INSTRUCTOR_ONLY = re.compile(r"^[ \t]*# test: instructor only\b", re.MULTILINE)
DEFAULT_MESSAGE = "Exercise: complete this code"
ROOT = Path(__file__).resolve().parents[1]


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


def student_notebook(nb: nbformat.NotebookNode, name: str = "<notebook>") -> tuple[nbformat.NotebookNode, int]:
    """The student version of `nb` (a copy) and its number of exercises (solution blocks)."""
    nb = nbformat.from_dict(nb)  # deep copy
    cells, blocks = [], 0
    for index, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "code":
            if INSTRUCTOR_ONLY.search(cell.source):
                continue
            cell.source, n = strip_solutions(cell.source, f"{name}, cell {index}")
            blocks += n
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    return nb, blocks


def make_student_notebooks(notebooks: list[Path] | None = None, out_dir: Path | str = ROOT / "build" / "student",
                           quiet: bool = False) -> list[Path]:
    """Write the student version of each notebook (default: notebooks/*.ipynb) into `out_dir`."""
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb")) if notebooks is None else [Path(p) for p in notebooks]
    if not notebooks:
        raise FileNotFoundError("no notebooks to convert")
    out_dir = Path(out_dir)
    converted = []
    for path in notebooks:  # convert everything first: a marker error writes nothing
        nb = nbformat.read(path, as_version=4)
        converted.append((path, *student_notebook(nb, path.name)))
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
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "student", help="default: build/student")
    args = parser.parse_args(argv)
    try:
        make_student_notebooks(args.notebooks or None, args.out)
    except MarkerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
