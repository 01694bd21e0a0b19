"""Per-cell run times of executed notebooks (from the timestamps nbclient records in each cell's metadata).

    python scripts/cell_times.py build/course/06_honest_evaluation.ipynb [--min 2]

Prints, per notebook, every code cell that took at least --min seconds (index, id, seconds, first line) and
the total. Use it on the notebooks `python -m clead_lite course` writes, to find what a notebook spends.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path


def cell_seconds(path: str | Path) -> list[tuple[int, str, float, str]]:
    """(index, id, seconds, first source line) of every executed code cell of the notebook at `path`."""
    out = []
    for k, cell in enumerate(json.loads(Path(path).read_text())["cells"]):
        t = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] != "code" or "iopub.execute_input" not in t or "shell.execute_reply" not in t:
            continue
        start, end = (dt.datetime.fromisoformat(t[key].replace("Z", "+00:00"))
                      for key in ("iopub.execute_input", "shell.execute_reply"))
        first = next((line.strip() for line in "".join(cell["source"]).splitlines() if line.strip()), "")
        out.append((k, cell.get("id", "?"), (end - start).total_seconds(), first))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--min", type=float, default=2.0, help="show cells of at least this many seconds")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not Path(path).is_file():
            print(f"cell_times: error: {path} does not exist", file=sys.stderr)
            return 2
        rows = cell_seconds(path)
        print(f"{Path(path).name}: {sum(r[2] for r in rows):.0f} s in {len(rows)} code cells")
        for k, cid, sec, first in rows:
            if sec >= args.min:
                print(f"  [{k:2d}] {cid:<10} {sec:6.1f} s  {first[:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
