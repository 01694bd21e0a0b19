"""scripts/record_times.py: measured times go into the header tables and the README block, nothing else changes."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("record_times", ROOT / "scripts" / "record_times.py")
record_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_times)

HEADER = "# 01 · Title\n\n**Goals.**\n- a goal\n\n*Time: not measured yet.*"
FLOPS = {"profiles": {"colab": {"notebooks": [{"notebook": "01_x", "t4_minutes": 4.4},
                                             {"notebook": "02_y", "t4_minutes": 0.2}]}}}


def _notebooks(tmp_path, names=("01_x",)):
    nbdir = tmp_path / "notebooks"
    (nbdir / "solutions").mkdir(parents=True)
    for name in names:
        nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": HEADER.splitlines(True)}],
              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        for folder in (nbdir, nbdir / "solutions"):
            (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    (tmp_path / "flops.json").write_text(json.dumps(FLOPS))
    return nbdir


def _header(path):
    return "".join(json.loads(path.read_text())["cells"][0]["source"])


def test_fmt():
    assert record_times.fmt(41.4) == "41 s"
    assert record_times.fmt(312) == "5 min 12 s"


def test_readme_table_and_the_one_time_line_of_each_header(tmp_path):
    nbdir = _notebooks(tmp_path)
    (tmp_path / "smoke.json").write_text(json.dumps([{"notebook": "01_x.ipynb", "seconds": 41.2, "status": "ok"}]))
    (tmp_path / "quick.json").write_text(json.dumps([{"notebook": "01_x.ipynb", "seconds": 112, "status": "ok"}]))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- times:start -->\nold\n<!-- times:end -->\nend\n")
    record_times.main(["--smoke", str(tmp_path / "smoke.json"), "--quick", str(tmp_path / "quick.json"),
                       "--quick-machine", "2 cores", "--notebooks", str(nbdir), "--readme", str(readme),
                       "--flops", str(tmp_path / "flops.json")])
    for path in (nbdir / "01_x.ipynb", nbdir / "solutions" / "01_x.ipynb"):
        header = _header(path)
        assert header == ("# 01 · Title\n\n**Goals.**\n- a goal\n\n*Time: about 2 min on a laptop CPU (`quick`), "
                          "about 4 min on a Colab T4 (`colab`, estimated).*"), header
    text = readme.read_text()
    assert "| `01_x` | 41 s | 1 min 52 s |" in text and "old" not in text and "- `quick`: 2 cores" in text
    assert text.startswith("intro\n") and text.endswith("<!-- times:end -->\nend\n")


def test_readme_without_block_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("no block\n")
    (tmp_path / "nb").mkdir()
    with pytest.raises(SystemExit, match="times:start"):
        record_times.main(["--notebooks", str(tmp_path / "nb"), "--readme", str(tmp_path / "README.md")])


def test_keep_re_measures_one_notebook_only(tmp_path):
    """--keep: the notebook in the file gets its new time; the other keeps its README figure."""
    nbdir = _notebooks(tmp_path, ("01_x", "02_y"))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- times:start -->\n| notebook | `quick` |\n|---|---|\n| `01_x` | 9 s |\n| `02_y` | 2 min 05 s |\n"
                      "| **all** | **2 min 14 s** |\n\n- `quick`: old machine\n<!-- times:end -->\n")
    assert record_times.kept_times(readme.read_text())["quick"]["02_y.ipynb"]["seconds"] == 125
    (tmp_path / "quick.json").write_text(json.dumps([{"notebook": "02_y.ipynb", "seconds": 150, "status": "ok"}]))
    record_times.main(["--quick", str(tmp_path / "quick.json"), "--quick-machine", "new", "--keep",
                       "--notebooks", str(nbdir), "--readme", str(readme), "--flops", str(tmp_path / "flops.json")])
    text = readme.read_text()
    assert "| `01_x` | 9 s |" in text and "| `02_y` | 2 min 30 s |" in text and "**2 min 39 s**" in text
    assert "- `quick`: new" in text
    assert "*Time: under a minute on a laptop CPU (`quick`), about 4 min" in _header(nbdir / "01_x.ipynb")
    assert ("*Time: about 2 min on a laptop CPU (`quick`), under a minute on a Colab T4 (`colab`, estimated).*"
            in _header(nbdir / "solutions" / "02_y.ipynb"))
