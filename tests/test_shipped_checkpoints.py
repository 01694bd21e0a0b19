"""The checkpoints shipped in data/checkpoints/ are what their manifest says: the file exists, its sha256
matches, it loads with weights_only=True into the named architecture, and it reproduces the clean and FGSM
accuracies recorded in the manifest (the first n test images, deterministic attacks)."""
import pytest
import torch

from clead_lite.attacks import fgsm
from clead_lite.course.checkpoints import checkpoint_dir, load_pretrained, read_manifest, verify_checkpoint
from clead_lite.course.datasets import test_images as first_test_images
from clead_lite.evaluation import accuracy, robust_accuracy
from clead_lite.course.profiles import DATASETS

ENTRIES = read_manifest(checkpoint_dir() / "manifest.json")["checkpoints"]
METHODS = {"standard", "pgd_at", "clead_online", "clead_faithful"}


def test_every_method_is_shipped_for_the_quick_profile():
    shipped = {(e["dataset"], e["method"], e["profile"]) for e in ENTRIES}
    assert {("mnist5k", m, "quick") for m in METHODS} <= shipped


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_shipped_checkpoint_matches_its_manifest(entry):
    path = checkpoint_dir() / entry["file"]
    assert path.stat().st_size < 5_000_000, "shipped checkpoints must stay small"
    assert verify_checkpoint(path)["sha256"] == entry["sha256"]
    assert entry["command"].startswith("python -m clead_lite train")
    model, _ = load_pretrained(entry["dataset"], entry["method"], entry["profile"], entry["model"])
    m = entry["metrics"]
    x, y = first_test_images(entry["dataset"], m["n"])   # the first n: the images the notebooks score
    torch.manual_seed(0)
    tol = 2 / m["n"]   # a borderline image may flip with another BLAS / thread count
    assert abs(accuracy(model, x, y) - m["clean"]) <= tol
    eps = DATASETS[entry["dataset"]].eps
    assert m["eps"] == pytest.approx(eps)
    assert abs(robust_accuracy(model, x, y, lambda mod, a, b: fgsm(mod, a, b, eps)) - m["fgsm"]) <= tol
