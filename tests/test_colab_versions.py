"""Colab's package versions (googlecolab/backend-info, 2026-08: numpy 2.1, pandas 2.2, ipywidgets 7.7.1,
ipykernel 6.17) in a fresh venv, running a tiny piece of the colab code path on synthetic CIFAR-10: FGSM-RS with the
cyclic (one-cycle) learning rate and the catastrophic-overfitting check, then importing the course's widgets.

torch is not installed in the fresh venv: this machine's torch (with its own dependencies: nvidia-*, triton,
sympy, networkx, jinja2, filelock, fsspec, typing-extensions, ...) is made visible through a `.pth` file that points
at a folder of symlinks to those distributions only. numpy, pandas, ipywidgets and ipykernel come from the
registry, at Colab's versions, or from pip's cache. Where neither is reachable the test is skipped with the reason.
Python stays this machine's 3.11 (Colab has 3.12-3.13: not simulated). Marked slow (about a minute after the first
download).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from _venv_site import venv_with_site

ROOT = Path(__file__).resolve().parents[1]
COLAB = ("numpy==2.1.*", "pandas==2.2.*", "ipywidgets==7.7.1", "ipykernel==6.17.*")
# the course's other pure dependencies, at whatever version pip picks next to Colab's numpy and pandas
OTHERS = ("matplotlib==3.10.*", "tqdm", "seaborn", "scikit-learn")
TORCH_ONLY = ("torch", "filelock", "typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "fsspec",
              "triton", "setuptools", "torchvision", "pillow", "cuda-bindings", "cuda-pathfinder", "cuda-toolkit")

SCRIPT = r'''
import json, sys, tempfile
import numpy, pandas, ipywidgets, ipykernel, torch
from clead_lite.course.datasets import write_synthetic_cifar10, load_dataset
from clead_lite.course.profiles import get_profile, train_config
from clead_lite.models import build_model
from clead_lite.training import train
import clead_lite.widgets.explorer, clead_lite.widgets.viz
torch.manual_seed(0)
root = write_synthetic_cifar10(tempfile.mkdtemp(), n_train=80, n_test=20)
x, y = load_dataset("cifar10", "train", root=root)
profile = get_profile("colab")
cfg = train_config(profile, "pgd_at", epochs=2, batch_size=16, n_val=16, val_steps=2)
result = train(build_model(profile.model), x, y, cfg, dataset="cifar10", device="cpu", progress=False)
epochs = result.history.epochs()
print(json.dumps({"numpy": numpy.__version__, "pandas": pandas.__version__, "ipywidgets": ipywidgets.__version__,
                  "ipykernel": ipykernel.__version__, "torch": torch.__version__, "attack": cfg.attack,
                  "warmup": cfg.warmup, "co_drop": cfg.co_drop, "epochs": len(epochs),
                  "co_checked": ["catastrophic_overfitting" in e for e in epochs],
                  "val_pgd": [e.get("val_pgd_acc") for e in epochs]}))
'''


@pytest.mark.slow
def test_colab_code_path_under_colabs_versions(tmp_path):
    py = venv_with_site(tmp_path, TORCH_ONLY, "zz_torch.pth")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *COLAB, *OTHERS],
                          env=env, capture_output=True, text=True, timeout=600)
    if inst.returncode != 0:
        pytest.skip(f"Colab's versions not installable here (registry or cache): {inst.stderr.strip()[-300:]}")
    run = subprocess.run([str(py), "-c", SCRIPT], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    import json
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["numpy"].startswith("2.1.") and got["pandas"].startswith("2.2.") and got["ipywidgets"] == "7.7.1"
    assert got["ipykernel"].startswith("6.17.")
    assert got["attack"] == "fgsm_rs" and got["warmup"] and got["co_drop"] is not None
    assert got["epochs"] == 2 and all(got["co_checked"]), got
