"""Run the whole course headless: every notebook executed top to bottom in a fresh kernel, in order.

    run_course(profile="quick", out_dir="build/course")

writes the executed notebooks to `out_dir`, every figure found in their outputs as a PNG under
`out_dir/figures/`, and a per-notebook time table (`out_dir/times.md`, `out_dir/times.json`: notebook,
profile, seconds, status, figures), which it also prints. `inplace=True` also writes the executed notebooks
back over the notebooks it ran. It runs the student notebooks (`notebooks/`); `--solutions` runs the instructor
versions (`notebooks/solutions/`) instead: the committed `quick` outputs are made by running the solutions with
`--inplace`, then `python scripts/make_student_notebooks.py`. The command line is `python -m clead_lite course`
(or `python -m clead_lite.course.runner`).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

from .profiles import PROFILE_NAMES

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOTEBOOK_DIR = ROOT / "notebooks"                     # the student notebooks: what the course runs
SOLUTIONS_DIR = NOTEBOOK_DIR / "solutions"            # the instructor versions (exercises solved)


def course_notebooks(notebooks=None, notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks to run, in order. notebooks: None (all `notebooks/*.ipynb`), or paths, file names or
    number prefixes ('01', '01_adversarial_examples')."""
    notebook_dir = Path(notebook_dir)
    every = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if notebooks is None:
        if not every:
            raise FileNotFoundError(f"no notebooks (NN_*.ipynb) in {notebook_dir}")
        return every
    if isinstance(notebooks, (str, os.PathLike)):
        notebooks = [notebooks]
    chosen = []
    for item in notebooks:
        path = Path(item)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path)
            continue
        matches = [p for p in every if p.name == str(item) or p.stem == str(item) or p.name.startswith(f"{item}_")]
        if len(matches) != 1:
            names = ", ".join(p.name for p in every) or "none"
            raise FileNotFoundError(f"notebook {str(item)!r} matches {len(matches)} notebooks in {notebook_dir}; "
                                    f"available: {names}")
        chosen.append(matches[0])
    return chosen


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables for the kernels started inside (they inherit the environment)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def save_figures(nb, folder: Path, stem: str) -> list[Path]:
    """Write every PNG in the notebook's outputs to folder/<stem>_cellNN_K.png; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, cell in enumerate(nb.cells):
        for k, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            if "image/png" in data:
                path = folder / f"{stem}_cell{index:02d}_{k}.png"
                path.write_bytes(base64.b64decode(data["image/png"]))
                paths.append(path)
    return paths


def run_notebook(path: Path, profile: str, timeout: int = 1800, kernel_name: str = "python3"):
    """Execute one notebook in a fresh kernel (cwd: its folder). Returns (executed notebook, seconds, status)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    status = "ok"
    # the inline backend even where MPLBACKEND=Agg is set (as in the tests): figures must land in the outputs
    with _environment(CLEAD_PROFILE=profile, MPLBACKEND="module://matplotlib_inline.backend_inline"):
        try:
            client.execute()
        except CellTimeoutError:
            status = f"timeout (a cell ran longer than {timeout} s)"
        except DeadKernelError as e:
            status = f"dead kernel: {str(e)[:200]}"
        except CellExecutionError as e:
            last = [line for line in str(e).strip().splitlines() if line.strip()]
            status = f"error: {ANSI.sub('', last[-1])[:300] if last else type(e).__name__}"
    return nb, time.perf_counter() - start, status


def format_table(rows: list[dict]) -> str:
    """The time table as markdown."""
    lines = ["| notebook | profile | seconds | status | figures |", "|---|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['notebook']} | {r['profile']} | {r['seconds']:.1f} | {r['status']} | {r['figures']} |")
    total = sum(r["seconds"] for r in rows)
    lines.append(f"| **total** | | {total:.1f} | {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} ok | |")
    return "\n".join(lines)


def run_course(profile: str = "quick", out_dir: str | os.PathLike = ROOT / "build" / "course", notebooks=None,
               inplace: bool = False, timeout: int = 1800, kernel_name: str = "python3",
               notebook_dir: str | os.PathLike = NOTEBOOK_DIR, quiet: bool = False) -> list[dict]:
    """Execute the course notebooks headless, in order, each in a fresh kernel with `CLEAD_PROFILE=profile`.

    profile: 'smoke' | 'quick' | 'colab' | 'paper' ('full' = 'paper').
    out_dir: where the executed notebooks, figures/ and the time table
    (times.md, times.json) go. notebooks: None for all, or names / number prefixes / paths. inplace: also
    write each successfully executed notebook back over its source (for committing outputs). timeout:
    seconds one cell may run. A failing notebook is recorded (status 'error: ...') and the run goes on.
    Returns the table rows: {notebook, profile, seconds, status, figures}.
    """
    import nbformat
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(map(repr, PROFILE_NAMES))}")
    paths = course_notebooks(notebooks, notebook_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in paths:
        if not quiet:
            print(f"[course] running {path.name} (profile {profile}) ...", flush=True)
        nb, seconds, status = run_notebook(path, profile, timeout, kernel_name)
        nbformat.write(nb, out_dir / path.name)
        if inplace and status == "ok":
            nbformat.write(nb, path)
        figures = save_figures(nb, out_dir / "figures", path.stem)
        rows.append({"notebook": path.name, "profile": profile, "seconds": round(seconds, 1), "status": status,
                     "figures": len(figures)})
        if not quiet:
            print(f"[course] {path.name}: {status} in {seconds:.1f} s, {len(figures)} figure(s)", flush=True)
    table = format_table(rows)
    (out_dir / "times.md").write_text(table + "\n")
    (out_dir / "times.json").write_text(json.dumps(rows, indent=2) + "\n")
    if not quiet:
        print(table)
        print(f"[course] executed notebooks, figures/ and times.md/json in {out_dir}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clead_lite.course.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="names or number prefixes (default: all)")
    parser.add_argument("--profile", default="quick", choices=PROFILE_NAMES)
    parser.add_argument("--out", default=str(ROOT / "build" / "course"), help="default: build/course")
    parser.add_argument("--inplace", action="store_true", help="write executed notebooks back over their sources")
    parser.add_argument("--solutions", action="store_true",
                        help="run the instructor versions (notebooks/solutions/) instead of the student notebooks")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = parser.parse_args(argv)
    rows = run_course(args.profile, args.out, args.notebooks or None, args.inplace, args.timeout,
                      notebook_dir=SOLUTIONS_DIR if args.solutions else NOTEBOOK_DIR)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
