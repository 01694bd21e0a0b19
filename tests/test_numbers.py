"""One set of numbers and honest settings for the shipped checkpoints (issue 10, items 2 and 3).

- Every accuracy on "n test images" uses the first n test images: the manifest's metrics, the load message of
  `load_or_train`, the notebooks' `x_test[:profile.n_eval]` (from `load_data`) and the command line agree.
- The manifest stores each checkpoint's full training config; it equals the quick profile's, and the model
  store key the notebooks compute finds the shipped file.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from clead_lite.course._cli_common import _test_split
from clead_lite.course.profiles import faithful_config, train_config
from clead_lite.faithful import FaithfulConfig
from clead_lite.attacks import fgsm
from clead_lite.course.checkpoints import checkpoint_dir, read_manifest
from clead_lite.course.datasets import test_images as first_test_images
from clead_lite.evaluation import accuracy, evaluate, robust_accuracy
from clead_lite.course.notebook_setup import load_data, load_or_train, train_config_used
from clead_lite.course.profiles import get_profile
from clead_lite.course.store import find, model_key
from clead_lite.training import TrainConfig

ENTRIES = {e["method"]: e for e in read_manifest(checkpoint_dir() / "manifest.json")["checkpoints"]}
QUICK = get_profile("quick", dataset="mnist5k")


@pytest.fixture(scope="module")
def quick_data():
    torch.set_num_threads(1)
    return load_data(QUICK)


@pytest.fixture(autouse=True)
def no_store_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CLEAD_STORE", str(tmp_path / "store"))   # only the shipped checkpoints can match


def _settings(config: dict, faithful: bool = False) -> dict:
    """A manifest config's training settings: the TrainConfig fields, and with `faithful` the FaithfulConfig's (the
    manifest's config holds both)."""
    fields = set(TrainConfig().to_dict()) | (set(FaithfulConfig().to_dict()) if faithful else set())
    return {k: v for k, v in config.items() if k in fields}


@pytest.mark.parametrize("method", sorted(ENTRIES))
def test_manifest_config_is_the_quick_profile(method):
    entry = dict(ENTRIES[method], config=_settings(ENTRIES[method]["config"], faithful=True))
    want = train_config(QUICK, method).resolved(QUICK.dataset).to_dict()
    faithful = faithful_config(QUICK) if method == "clead_faithful" else None
    want.update(faithful.resolved().to_dict() if faithful else FaithfulConfig().to_dict())
    assert entry["config"] == want, {k: (entry["config"].get(k), v) for k, v in want.items()
                                     if entry["config"].get(k) != v}
    assert entry["config"]["attack_steps"] == QUICK.train_steps


@pytest.mark.parametrize("method", ["standard", "pgd_at", "clead_online"])
def test_the_notebooks_key_finds_the_shipped_checkpoint(method, quick_data):
    x_train, y_train, _, _ = quick_data
    cfg = train_config(QUICK, method)
    hit = find(model_key(method, QUICK.dataset, QUICK.model, QUICK.name, cfg, x_train, y_train))
    assert hit is not None and hit.source == "shipped" and hit.path.name == ENTRIES[method]["file"]
    used = train_config_used(method, QUICK, x_train, y_train)
    assert used.to_dict() == _settings(ENTRIES[method]["config"])
    assert find(model_key(method, QUICK.dataset, QUICK.model, QUICK.name, cfg.replace(epochs=cfg.epochs + 1),
                          x_train, y_train)) is None


def test_the_faithful_key_finds_the_shipped_checkpoint_and_only_for_its_settings(quick_data):
    """load_or_train_faithful finds the shipped model by its key, like every other model: another faithful
    setting (here the course's first recipe) is another model, trained rather than loaded."""
    x_train, y_train, _, _ = quick_data
    cfg = train_config(QUICK, "clead_faithful").resolved(QUICK.dataset)
    key = lambda faithful: model_key("clead_faithful", QUICK.dataset, QUICK.model, QUICK.name, cfg, x_train, y_train,
                                     faithful)
    hit = find(key(faithful_config(QUICK)))
    assert hit is not None and hit.source == "shipped" and hit.path.name == ENTRIES["clead_faithful"]["file"]
    assert find(key(faithful_config(QUICK, faithful_recipe="course-v1"))) is None


def test_every_place_scores_the_first_n_test_images(quick_data):
    _, _, x_test, y_test = quick_data
    n = QUICK.n_eval
    xf, yf = first_test_images(QUICK.dataset, n)
    xc, yc = _test_split(QUICK.dataset, n)
    assert torch.equal(x_test[:n], xf) and torch.equal(y_test[:n], yf)
    assert torch.equal(xc, xf) and torch.equal(yc, yf)
    for entry in ENTRIES.values():
        assert entry["metrics"]["n"] == n and entry["metrics"]["images"].startswith(f"the first {n} ")


def _printed(text: str) -> tuple[float, float]:
    m = re.search(r"first (\d+) test images: clean ([\d.]+)%, robust ([\d.]+)% \(eps 0.3; attack: PGD-20 x 2 "
                  r"restarts", text)
    assert m, text
    assert text.strip().count("\n") == 0, f"a model's provenance is one line: {text!r}"
    return float(m.group(2)), float(m.group(3))


@pytest.mark.parametrize("method", ["standard", "pgd_at", "clead_online", "clead_faithful"])
def test_load_message_notebook_cells_and_manifest_agree(method, quick_data, capsys):
    x_train, y_train, x_test, y_test = quick_data
    entry = ENTRIES[method]
    m = entry["metrics"]
    x, y = x_test[:QUICK.n_eval], y_test[:QUICK.n_eval]          # the notebooks' cells
    if method == "clead_faithful":                                # 05-07 load it with load_pretrained
        from clead_lite.course.checkpoints import load_pretrained
        model, _ = load_pretrained(QUICK.dataset, method, QUICK.name, QUICK.model)
    else:
        loaded = load_or_train(method, QUICK, x_train, y_train, torch.device("cpu"), live=False)
        assert loaded.source == "shipped" and capsys.readouterr().out == ""    # a load prints nothing
        clean_printed, pgd_printed = _printed(loaded.provenance)
        assert clean_printed == round(100 * m["clean"], 1) and pgd_printed == round(100 * m["pgd"], 1)
        model = loaded.model
    tol = 2 / m["n"]   # a borderline image may flip with another BLAS / thread count
    assert abs(accuracy(model, x, y) - m["clean"]) <= tol
    assert abs(robust_accuracy(model, x, y, lambda mod, a, b: fgsm(mod, a, b, QUICK.eps)) - m["fgsm"]) <= tol


@pytest.mark.slow  # PGD-20 x 2 on 500 images: 71 s measured on the busy shared 2-core machine
def test_pgd_of_the_notebook_cell_equals_the_manifest(quick_data):
    """Notebook 03's evaluation call on the PGD-AT checkpoint gives the manifest's PGD-20 x 2 number."""
    x_train, y_train, x_test, y_test = quick_data
    model, _ = load_or_train("pgd_at", QUICK, x_train, y_train, torch.device("cpu"), live=False)
    x, y = x_test[:QUICK.n_eval], y_test[:QUICK.n_eval]
    row = evaluate(model, x, y, QUICK.eps, steps=QUICK.eval_steps, restarts=QUICK.eval_restarts, name="PGD-AT")
    m = ENTRIES["pgd_at"]["metrics"]
    assert (row["steps"], row["restarts"], row["n"]) == (m["steps"], m["restarts"], m["n"])
    assert abs(row["pgd"] - m["pgd"]) <= 2 / m["n"]


def test_a_load_prints_nothing_its_provenance_is_one_line_and_the_config_is_the_one_used(quick_data, capsys):
    x_train, y_train, _, _ = quick_data
    loaded = load_or_train("pgd_at", QUICK, x_train, y_train, torch.device("cpu"), live=False)
    assert capsys.readouterr().out == ""
    assert loaded.config.to_dict() == _settings(ENTRIES["pgd_at"]["config"])
    assert "\n" not in loaded.provenance
    assert loaded.provenance.startswith("pgd_at: shipped checkpoint mnist5k_pgd_at_quick.pt | ")


# ------------------------------------------------------------------------------------------------ across notebooks
NOTEBOOK_DIRS = [Path(__file__).resolve().parents[1] / "notebooks",
                 Path(__file__).resolve().parents[1] / "notebooks" / "solutions"]
TABLE_NAMES = {"standard": "standard", "PGD-AT": "pgd_at", "C-LEAD online": "clead_online",
               "C-LEAD faithful": "clead_faithful"}


def _outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text", "") or output.get("data", {}).get("text/plain", "")
            yield "".join(text) if isinstance(text, list) else text


@pytest.mark.parametrize("path", [p for d in NOTEBOOK_DIRS for p in sorted(d.glob("[0-9][0-9]_*.ipynb"))],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_notebook_prints_one_set_of_numbers(path):
    """Each shipped model has one clean and one robust figure (the manifest's: the first 500 test images, PGD-20 x 2
    restarts): every load line prints them, and every reference table (05 and 06: the same images and attack,
    columns steps / restarts / n stated) shows the same figures."""
    for text in _outputs(path):
        for m in re.finditer(r"^(\w+): (?:shipped checkpoint|model store) \S+ \| first (\d+) test images: clean "
                             r"([\d.]+)%, robust ([\d.]+)%", text, re.M):
            metrics = ENTRIES[m.group(1)]["metrics"]
            assert int(m.group(2)) == metrics["n"]
            assert (float(m.group(3)), float(m.group(4))) == (round(100 * metrics["clean"], 1),
                                                              round(100 * metrics["pgd"], 1)), m.group(0)
        header = text.splitlines()[0] if text.strip() else ""
        if re.search(r"\bn\b.*\bclean\b.*\bpgd\b", header) and "restarts" in header and "steps" in header:
            for line in text.splitlines()[2:]:
                name = next((n for n in TABLE_NAMES if line.startswith(n + " ")), None)
                if name is None or not re.search(r"\b20\s+2\s+500\b", line):
                    continue
                metrics = ENTRIES[TABLE_NAMES[name]]["metrics"]
                assert f"{100 * metrics['clean']:.1f}%" in line and f"{100 * metrics['pgd']:.1f}%" in line, (
                    f"{path.name}: {line!r} differs from the manifest's {metrics}")
