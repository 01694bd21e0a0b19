"""Notebooks 01 and 05, whole, in the `colab` profile at tiny size, on synthetic CIFAR-10, in a kernel of a fresh venv
with Colab's versions (numpy 2.1, pandas 2.2, ipywidgets 7.7.1, ipykernel 6.17; issue 21 item 5).

The profile is `colab` by name and recipe (FGSM-RS, cyclic learning rate, catastrophic-overfitting check, the
model store, the faithful pipeline's CW views): an IPython startup file shrinks only its sizes (96 training images,
2 epochs, 16 test images) and PreAct ResNet-18's width (4 instead of 64), so that both notebooks run in about a
minute on this CPU. Afterwards the store the notebooks wrote is read back: every model they trained, with the
colab recipe. Python stays this machine's 3.11 and torch its torch (a .pth of symlinks, as in
test_colab_versions). Marked slow. Also here, fast: the views cache hashes a BatchNorm model (the faithful
pipeline on PreAct ResNet-18 failed on its 0-dim `num_batches_tracked` before).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _venv_site import venv_with_site
from test_colab_versions import COLAB, OTHERS, TORCH_ONLY

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_adversarial_examples.ipynb", "05_clead.ipynb")

TINY = '''# the colab profile at tiny size (the code path, not the sizes): few images, 2 epochs, a narrow PreAct ResNet-18
import clead_lite.course.profiles as _P
import clead_lite.models as _M


class _TinyPreActResNet18(_M.PreActResNet18):
    def __init__(self, num_classes: int = 10, proj_dim: int = 16, width: int = 4):
        super().__init__(num_classes=num_classes, proj_dim=proj_dim, width=width)


_M.MODELS["preactresnet18"] = _TinyPreActResNet18
_P.PROFILES["colab"] = _P.PROFILES["colab"].replace(n_train=96, epochs=2, batch_size=16, n_eval=16, n_autoattack=4,
                                                    n_embed=16, n_val=16, val_steps=2, eval_steps=3)
'''

RUN = r'''
import json, sys, nbformat
from nbclient import NotebookClient
out = {}
for path in sys.argv[2:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[1]}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    out[path.rsplit("/", 1)[-1]] = text
print(json.dumps(out))
'''

CHECK = r'''
import json, numpy, pandas, ipywidgets, ipykernel
from clead_lite.course.store import list_entries
rows = [{"method": e["method"], "profile": e["profile"], "attack": e["config"].get("attack"),
         "warmup": e["config"].get("warmup"), "co_drop": e["config"].get("co_drop"), "epochs": e["config"].get("epochs"),
         "n_train": e["n_train"]} for e in list_entries() if e["source"] == "store"]
print(json.dumps({"entries": rows, "numpy": numpy.__version__, "pandas": pandas.__version__,
                  "ipywidgets": ipywidgets.__version__, "ipykernel": ipykernel.__version__}))
'''


def test_views_cache_hashes_a_batchnorm_model():
    from clead_lite.course.views_cache import views_key
    from clead_lite.models import build_model
    model = build_model("preactresnet18", width=4)
    assert any(b.dim() == 0 for b in model.buffers()), "BatchNorm's num_batches_tracked is 0-dim"
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    key = views_key(model, x, y, {"eps": 0.03})
    assert key == views_key(model, x, y, {"eps": 0.03}) != views_key(model, x, y, {"eps": 0.02})


@pytest.mark.slow
def test_notebooks_01_and_05_in_colab_at_tiny_size_under_colabs_versions(tmp_path):
    py = venv_with_site(tmp_path, TORCH_ONLY, "zz_torch.pth")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("CLEAD_")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *COLAB, *OTHERS,
                           "nbclient", "nbformat"], env=env, capture_output=True, text=True, timeout=600)
    if inst.returncode != 0:
        pytest.skip(f"Colab's versions not installable here (registry or cache): {inst.stderr.strip()[-300:]}")
    from clead_lite.course.datasets import write_synthetic_cifar10
    write_synthetic_cifar10(tmp_path / "data", n_train=120, n_test=60)
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-tiny-colab.py").write_text(TINY)
    env.update(PYTHONPATH=str(ROOT), IPYTHONDIR=str(tmp_path / "ipython"), CLEAD_PROFILE="colab", CLEAD_DEVICE="cpu",
               CLEAD_DATA_ROOT=str(tmp_path / "data"), CLEAD_STORE=str(tmp_path / "store"),
               CLEAD_CACHE_DIR=str(tmp_path / "cache"), JUPYTER_PATH=str(tmp_path / "jupyter"))
    # the kernel is the venv's own python3 (ipykernel 6.17 from the install above)
    subprocess.run([str(py), "-m", "ipykernel", "install", "--prefix", str(tmp_path / "venv"), "--name", "python3"],
                   env=env, check=True, capture_output=True, timeout=120)
    paths = [str(ROOT / "notebooks" / name) for name in NOTEBOOKS]
    run = subprocess.run([str(py), "-c", RUN, str(ROOT / "notebooks"), *paths], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    printed = json.loads(run.stdout.strip().splitlines()[-1])
    for name in NOTEBOOKS:
        assert "profile colab: cifar10, preactresnet18" in printed[name], printed[name][:500]
        assert "all checks passed" in printed[name] or "Traceback" not in printed[name]
    check = subprocess.run([str(py), "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    got = json.loads(check.stdout.strip().splitlines()[-1])
    assert got["numpy"].startswith("2.1.") and got["pandas"].startswith("2.2.") and got["ipywidgets"] == "7.7.1"
    assert got["ipykernel"].startswith("6.17.")
    methods = {e["method"]: e for e in got["entries"]}
    # 01 trains the standard model, 05 loads it and trains PGD-AT, C-LEAD online and the faithful pipeline
    assert set(methods) == {"standard", "pgd_at", "clead_online", "clead_faithful"}, got["entries"]
    assert all(e["profile"] == "colab" and e["n_train"] == 96 for e in got["entries"])
    for m in ("pgd_at", "clead_online"):   # the colab recipe: FGSM-RS, one-cycle warm-up, catastrophic-overfitting stop
        assert (methods[m]["attack"], methods[m]["warmup"], methods[m]["co_drop"]) == ("fgsm_rs", 0.5, 0.2), methods[m]
