"""Shared fixtures: the offline mnist5k split and two trained SmallCNNs.

- `standard_model`: standard training, 2 epochs on the 4,000 mnist5k training images.
- `robust_model`: PGD adversarial training (Madry et al. 2018) at eps 0.3, fine-tuned from the standard
  model for 3 epochs with PGD-5 (alpha 0.05, random start; eps ramped up over the first 20 % of the steps).

Measured on the 1,000 mnist5k test images (L-inf eps 0.3, PGD-20 with alpha 0.0375):
  standard: clean 95.8 %, FGSM 14.9 %, PGD-20  0.1 %
  robust:   clean 97.5 %, FGSM 77.0 %, PGD-20 57.7 %  (AutoAttack, standard version, 64 images: 45.3 %)
Training cost measured on a shared, oversubscribed 2-core machine: standard ~24 CPU-s, robust ~200 CPU-s
(wall time when the two cores are free: not measured, estimated at 1.5-2 minutes for both).

The small training loop lives here on purpose (tests must not depend on the course's training module).
The trained weights are cached between pytest runs in a temporary folder, keyed by a hash of everything
that determines them (the training code and settings here, the model, attack and data code, the torch
version); set
CLEAD_TEST_CACHE=0 to always retrain, or CLEAD_TEST_CACHE=/some/dir to choose the folder.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

import clead_lite
from clead_lite.attacks import pgd
from clead_lite.course.datasets import load_dataset
from clead_lite.models import SmallCNN
from clead_lite.course.profiles import seed_everything

STANDARD = dict(epochs=2, batch_size=64, lr=0.05, seed=0)
ROBUST = dict(epochs=3, batch_size=64, lr=0.05, seed=1, eps=0.3, alpha=0.05, steps=5, ramp=0.2)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`): the tests' tiny
    models train several times faster on one thread, and two shared cores stay responsive."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _private_model_store(tmp_path_factory, monkeypatch):
    """Every test gets its own empty model store (CLEAD_STORE): no test reads or fills the repository's
    data/store, and no model stored by one test is found by another. Tests of the default location unset it."""
    monkeypatch.setenv("CLEAD_STORE", str(tmp_path_factory.mktemp("store")))


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """An empty model-store folder and an empty shipped-checkpoint folder, so nothing shipped or stored elsewhere
    interferes (the store and fault tests)."""
    d = tmp_path / "store"
    monkeypatch.setenv("CLEAD_STORE", str(d))
    monkeypatch.setenv("CLEAD_CHECKPOINT_DIR", str(tmp_path / "shipped"))
    return d


class Split(NamedTuple):
    """mnist5k: x (N, 1, 28, 28) float32 in [0, 1], y (N,) int64; 4,000 train and 1,000 test images."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def train_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
                lr: float, seed: int, eps: float = 0.0, alpha: float = 0.0, steps: int = 0,
                ramp: float = 0.0) -> torch.nn.Module:
    """SGD (Nesterov momentum 0.9, weight decay 5e-4) with a one-cycle learning rate.

    eps > 0: PGD adversarial training, each batch replaced by PGD-`steps` examples (random start) made
    against the current model; eps and alpha grow linearly over the first `ramp` fraction of the steps.
    """
    generator = seed_everything(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    per_epoch = len(y) // batch_size
    total = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.25)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if eps > 0:
                scale = min(1.0, (step + 1) / (ramp * total)) if ramp > 0 else 1.0
                xb = pgd(model, xb, yb, eps * scale, alpha * scale, steps, generator=generator)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    return model.eval()


def build_standard(split: Split) -> SmallCNN:
    torch.manual_seed(STANDARD["seed"])
    return train_model(SmallCNN(), split.x_train, split.y_train, **STANDARD)


def build_robust(split: Split, standard: SmallCNN) -> SmallCNN:
    return train_model(copy.deepcopy(standard), split.x_train, split.y_train, **ROBUST)


def _cache_key() -> str:
    """Hash of everything that determines the trained weights: the training code and settings here, the
    package's model, attack, data and seeding code, and the torch version (comments here do not count)."""
    package = Path(clead_lite.__file__).parent
    h = hashlib.sha256(torch.__version__.encode())
    for code in (train_model, build_standard, build_robust, Split):
        h.update(inspect.getsource(code).encode())
    h.update(repr((STANDARD, ROBUST)).encode())
    for name in ("models.py", "attacks.py", "losses.py", "data.py", "config.py", "training.py", "evaluation.py",
                 "validate.py", "course/profiles.py", "course/datasets.py"):
        h.update((package / name).read_bytes())
    return h.hexdigest()[:16]


def _cache_dir() -> Path | None:
    setting = os.environ.get("CLEAD_TEST_CACHE", "")
    if setting.lower() in ("0", "no", "false", "off"):
        return None
    return Path(setting) if setting else Path(tempfile.gettempdir()) / "clead_lite_test_models"


def cached_model(name: str, build) -> torch.nn.Module:
    """build() -> trained model, or its weights from the cache (saved atomically, loaded weights_only)."""
    folder = _cache_dir()
    path = None if folder is None else folder / f"{name}-{_cache_key()}.pt"
    if path is not None and path.is_file():
        model = SmallCNN()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception:  # noqa: BLE001 - a damaged cache file: train again
            path.unlink(missing_ok=True)
    model = build()
    if path is not None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return model


@pytest.fixture(scope="session")
def mnist5k_split() -> Split:
    x_train, y_train = load_dataset("mnist5k", "train")
    x_test, y_test = load_dataset("mnist5k", "test")
    return Split(x_train, y_train, x_test, y_test)


@pytest.fixture(scope="session")
def standard_model(mnist5k_split: Split) -> SmallCNN:
    """SmallCNN, standard training (no defence)."""
    return cached_model("standard", lambda: build_standard(mnist5k_split))


@pytest.fixture(scope="session")
def robust_model(mnist5k_split: Split, standard_model: SmallCNN) -> SmallCNN:
    """SmallCNN, PGD adversarial training at eps 0.3, fine-tuned from the standard model."""
    return cached_model("robust", lambda: build_robust(mnist5k_split, standard_model))
