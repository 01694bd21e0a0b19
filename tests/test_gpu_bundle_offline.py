"""The lent GPU machine, simulated here: a fresh venv filled only from the GPU bundle (`pip install --no-index
--find-links`), no network for that process, and `benchmarks/gpu_check.py --tiny` writing its figures to $OUT.

What the lent machine has without the bundle (device KINDS.md: torch, torchvision, numpy, scipy, scikit-learn,
pandas, matplotlib, numba, tqdm, pillow, ...) comes from this machine's .venv: those distributions' files (and
their `.libs`, `.dist-info`) are symlinked into one folder that a `.pth` file puts on the fresh venv's path. Nothing
else of .venv is visible, so a wheel the bundle lacks (jsonschema for nbformat, rpds-py, ...) fails the install.

The bundle is made by `scripts/make_gpu_bundle.sh` for this Python (3.11 here; the lent machine's is 3.12 and the
script's default) into a temporary folder, from pip's download cache when it holds the wheels (a second run takes
seconds) else from the registry; where neither works the test is skipped with that reason. Nothing large is
committed. Marked slow (about a minute); it runs in CI with the other slow tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _venv_site import venv_with_site

ROOT = Path(__file__).resolve().parents[1]
# what the lent machine has installed: device KINDS.md's package list for its 'cuda' image (read 2026-11-17)
MACHINE = tuple("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex
requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
NEEDED = ("nbclient", "nbformat", "ipykernel", "jupyter_client", "ipywidgets", "mlxtend", "umap-learn", "seaborn")
NO_DEPS = ("torchattacks", "pyautoattack")    # torchattacks 3.5.1 pins requests~=2.25.1: installed as the course does
OFFLINE = {"PIP_NO_INDEX": "1", "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


@pytest.mark.slow
def test_gpu_check_runs_offline_from_the_bundle_alone(tmp_path):
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    bundle = tmp_path / "bundle"
    env = {**os.environ, "GPU_BUNDLE": str(bundle), "PY_VERSION": pyver, "PYTHON": sys.executable,
           "CLEAD_SHARED_DATA": str(tmp_path / "no-mnist")}
    made = subprocess.run(["bash", "scripts/make_gpu_bundle.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if made.returncode != 0:
        pytest.skip(f"no bundle (registry and pip cache unreachable?): {made.stderr.strip()[-300:]}")
    wheels = sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
    for needed in ("jsonschema-", "referencing-", "jsonschema_specifications-", "rpds_py-", "nbformat-", "ipykernel-"):
        assert any(w.startswith(needed) for w in wheels), (needed, wheels)
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 48 * 2**20, size

    py = venv_with_site(tmp_path, MACHINE, "zz_machine.pth")
    offline = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("PIP_")}
    offline.update(OFFLINE, PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    offline.pop("PYTHONPATH", None)
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(bundle / "wheels"),
                           "--disable-pip-version-check", *NEEDED], env=offline, capture_output=True, text=True,
                          timeout=300)
    assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-2000:]
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links",
                           str(bundle / "wheels"), "--disable-pip-version-check", *NO_DEPS], env=offline,
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-2000:]
    # only the bundle and the machine's packages: no .venv path leaks in
    paths = subprocess.check_output([str(py), "-c", "import sys, nbformat, jsonschema; print(sys.path)"], env=offline,
                                    text=True)
    assert str(ROOT / ".venv") not in paths

    out = tmp_path / "OUT"
    run = subprocess.run([str(py), "benchmarks/gpu_check.py", "--tiny", "--skip-loop", "--precisions", "bf16",
                          "--notebooks", "00", "--deadline-s", "240"], cwd=ROOT,
                         env={**offline, "OUT": str(out), "CLEAD_PROFILE": "smoke", "PYTHONHASHSEED": "0"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    names = [f["name"] for f in lines]
    assert names[:2] == ["machine", "synthetic_cifar10"] and names[-1] == "done", names
    by = {f["name"]: f for f in lines}
    assert by["machine"]["python"].startswith(pyver + ".") and by["machine"]["tiny"] is True
    epoch = by["epoch_bf16"]
    assert epoch["status"] == "ok" and epoch["attack"] == "fgsm_rs" and epoch["images_per_s"] > 0
    assert epoch["dataset"].startswith("synthetic cifar10") and epoch["cudnn_enabled"] is True
    assert by["notebook_00"]["status"] == "ok" and by["notebook_00"]["run_status"] == "ok"
    assert by["done"]["all_ok"] is True
    assert json.loads((out / "epoch_bf16.json").read_text())["images_per_s"] == epoch["images_per_s"]
