"""Write every derived copy of the repository address from the one constant, `notebook_setup.REPO_URL`:
each notebook's "Open in Colab" badge (student notebooks and solutions) and first code cell (`colab_setup_cell()`), and the README's Colab badge.

    python scripts/sync_repo_url.py            # rewrite what differs
    python scripts/sync_repo_url.py --check    # exit 1 if anything differs (tests/test_colab_sim.py checks too)

Only the badge line and the setup cell's source change; outputs and every other cell stay as they are.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clead_lite.course.notebook_setup import colab_badge, colab_setup_cell  # noqa: E402

BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
README_MARK = ("<!-- colab:start -->", "<!-- colab:end -->")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def sync_notebook(path: Path, name: str | None = None) -> bool:
    """Rewrite the badge and the setup cell of one notebook; returns whether it changed. name: its path inside
    notebooks/ ('01_x.ipynb', 'solutions/01_x.ipynb'; default: from `path`)."""
    raw = path.read_text()
    nb = json.loads(raw)
    cells = nb["cells"]
    first_md = next(c for c in cells if c["cell_type"] == "markdown")
    md = "".join(first_md["source"])
    new_md = BADGE.sub(lambda _: colab_badge(name or path), md) if BADGE.search(md) else md
    if new_md != md:
        first_md["source"] = _lines(new_md)
    first_code = next(c for c in cells if c["cell_type"] == "code")
    if "".join(first_code["source"]) != colab_setup_cell():
        first_code["source"] = _lines(colab_setup_cell())
    out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if out != raw:
        path.write_text(out)
        return True
    return False


def notebooks() -> list[Path]:
    """The student notebooks (notebooks/) and their instructor versions (notebooks/solutions/)."""
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


def readme_block() -> str:
    return (f"{README_MARK[0]}\n{colab_badge('00_setup_and_data.ipynb')}\n{README_MARK[1]}")


def sync_readme(path: Path) -> bool:
    text = path.read_text()
    pattern = re.compile(re.escape(README_MARK[0]) + r".*?" + re.escape(README_MARK[1]), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no {README_MARK[0]} ... {README_MARK[1]} block for the Colab badge")
    new = pattern.sub(lambda _: readme_block(), text)
    if new != text:
        path.write_text(new)
        return True
    return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.check:
        import shutil
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            changed = []
            for nb in notebooks():
                copy = Path(tmp) / nb.name
                shutil.copy(nb, copy)
                if sync_notebook(copy, nb.relative_to(ROOT / "notebooks").as_posix()):
                    changed.append(nb.relative_to(ROOT).as_posix())
            copy = Path(tmp) / "README.md"
            shutil.copy(ROOT / "README.md", copy)
            if sync_readme(copy):
                changed.append("README.md")
        print("in sync" if not changed else f"out of sync: {', '.join(changed)}")
        return 1 if changed else 0
    for nb in notebooks():
        if sync_notebook(nb):
            print(f"updated {nb.relative_to(ROOT)}")
    if sync_readme(ROOT / "README.md"):
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
