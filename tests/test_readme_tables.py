"""The README's and RESULTS.md's result tables are the committed JSON rows, regenerated: nothing typed in.

Each marked block (`<!-- results -->`, `<!-- budget -->`, `<!-- results-per-seed -->`) is rebuilt here from the
files in benchmarks/results/ with the functions the scripts use (`results.readme_table` of `run_results.py --summary --readme`,
`budget_curve.py --summary --readme`) and must equal the text on disk. A number edited by hand in a block, or a
row added without regenerating the tables, fails this test."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block(path: Path, marker: str) -> str:
    text = path.read_text()
    m = re.search(f"<!-- {re.escape(marker)}:start -->\n(.*?)<!-- {re.escape(marker)}:end -->", text, flags=re.S)
    assert m, f"{path.name} has no <!-- {marker} --> block"
    return m[1].rstrip("\n")


def test_results_blocks_are_the_rows_on_disk():
    from clead_lite.course.results import load_results, per_seed_markdown, readme_table
    folder = ROOT / "benchmarks" / "results" / "table"
    assert any(folder.glob("*_seed*.json")), f"no results rows in {folder}: they are committed with the README"
    frame = load_results(folder)
    assert _block(ROOT / "README.md", "results") == readme_table(frame).rstrip("\n"), \
        "README's results table differs from the rows: run benchmarks/run_results.py --summary --readme README.md"
    assert _block(ROOT / "benchmarks" / "RESULTS.md", "results-per-seed") == per_seed_markdown(frame).rstrip("\n"), \
        "RESULTS.md differs from the rows: run benchmarks/run_results.py --summary --details benchmarks/RESULTS.md"


def test_budget_block_is_the_points_on_disk():
    from clead_lite.course.budget import load_points, summary_markdown
    folder = ROOT / "benchmarks" / "results" / "budget"
    assert any(folder.glob("*.json")), f"no budget points in {folder}: they are committed with the README"
    assert _block(ROOT / "README.md", "budget") == summary_markdown(load_points(folder)).rstrip("\n"), \
        "README's budget tables differ from the points: run benchmarks/budget_curve.py --summary --readme README.md"
