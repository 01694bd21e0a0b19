"""scripts/record_times.py: measured times go into the header tables and the README block, nothing else changes."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("record_times", ROOT / "scripts" / "record_times.py")
record_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_times)

HEADER = ("# 01 · Title\n\n| profile | what it runs | time |\n|---|---|---|\n"
          "| `smoke` | tiny | measured: see README |\n| `quick` (CPU) | lesson | measured: see README |\n"
          "| `full` (GPU) | paper | measured: see README |\n\nText | with a bar.")


def test_fmt():
    assert record_times.fmt(41.4) == "41 s"
    assert record_times.fmt(312) == "5 min 12 s"


def test_header_and_readme(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": HEADER.splitlines(True)}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (nbdir / "01_x.ipynb").write_text(json.dumps(nb))
    (tmp_path / "smoke.json").write_text(json.dumps([{"notebook": "01_x.ipynb", "seconds": 41.2, "status": "ok"}]))
    (tmp_path / "quick.json").write_text(json.dumps([{"notebook": "01_x.ipynb", "seconds": 312, "status": "ok"}]))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- times:start -->\nold\n<!-- times:end -->\nend\n")
    record_times.main(["--smoke", str(tmp_path / "smoke.json"), "--quick", str(tmp_path / "quick.json"),
                       "--quick-machine", "2 cores", "--notebooks", str(nbdir), "--readme", str(readme)])
    header = "".join(json.loads((nbdir / "01_x.ipynb").read_text())["cells"][0]["source"])
    assert "| `smoke` | tiny | 41 s () |" in header
    assert "| `quick` (CPU) | lesson | 5 min 12 s (2 cores) |" in header
    assert "| `full` (GPU) | paper | not measured |" in header
    assert header.endswith("Text | with a bar.")
    text = readme.read_text()
    assert "| `01_x` | 41 s | 5 min 12 s |" in text and "old" not in text
    assert text.startswith("intro\n") and text.endswith("<!-- times:end -->\nend\n")


def test_readme_without_block_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("no block\n")
    (tmp_path / "nb").mkdir()
    with pytest.raises(SystemExit, match="times:start"):
        record_times.main(["--notebooks", str(tmp_path / "nb"), "--readme", str(tmp_path / "README.md")])


def test_keep_re_measures_one_notebook_only(tmp_path):
    """--keep: the notebook in the file gets its new time; the other keeps its header and README figure."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("01_x", "02_y"):
        nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": HEADER.replace(
            "| `quick` (CPU) | lesson | measured: see README |", "| `quick` (CPU) | lesson | 9 s (old machine) |"
        ).splitlines(True)}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        (nbdir / f"{name}.ipynb").write_text(json.dumps(nb))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- times:start -->\n| notebook | `quick` |\n|---|---|\n| `01_x` | 9 s |\n| `02_y` | 2 min 05 s |\n"
                      "| **all** | **2 min 14 s** |\n\n- `quick`: old machine\n<!-- times:end -->\n")
    assert record_times.kept_times(readme.read_text())["quick"]["02_y.ipynb"]["seconds"] == 125
    (tmp_path / "quick.json").write_text(json.dumps([{"notebook": "02_y.ipynb", "seconds": 61, "status": "ok"}]))
    record_times.main(["--quick", str(tmp_path / "quick.json"), "--quick-machine", "new", "--keep",
                       "--notebooks", str(nbdir), "--readme", str(readme)])
    header = lambda n: "".join(json.loads((nbdir / f"{n}.ipynb").read_text())["cells"][0]["source"])
    assert "| `quick` (CPU) | lesson | 9 s (old machine) |" in header("01_x")
    assert "| `quick` (CPU) | lesson | 1 min 01 s (new) |" in header("02_y")
    assert "| `smoke` | tiny | measured: see README |" in header("01_x")     # no smoke file: untouched
    text = readme.read_text()
    assert "| `01_x` | 9 s |" in text and "| `02_y` | 1 min 01 s |" in text and "**1 min 10 s**" in text
    assert "- `quick`: new" in text
