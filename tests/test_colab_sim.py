"""Colab, simulated on this machine (issue 9, item 3), and the repository address defined once.

The simulation (marked slow; 5 min 40 s wall time measured here on the shared 2-core machine with other jobs
running: pip downloading ipywidgets 7.7.1, pyautoattack and torchattacks, notebook 01 in smoke in the simulated
kernel, and the explorer's widget tests):
1. a fresh virtual environment under tmp, with "Colab's preinstalled packages": torch, torchvision, numpy,
   matplotlib (and what they, pandas, scipy, scikit-learn, seaborn, umap-learn, mlxtend, tqdm, ipykernel and
   pytest need) made visible from the current environment (found via sys.prefix) as a folder of symlinks added by a
   .pth file, so pip sees them as installed; ipywidgets 7.7.1 installed from the registry, as on Colab;
2. a local "origin" repository holding this working tree's files, and `google.colab` faked (a stub module
   imported by an IPython startup file, as Colab's kernel has it imported);
3. notebook 01 executed by a kernel of that environment, its own setup cell included (CLEAD_REPO_URL points it
   at the local origin), in the smoke profile;
then: the preinstalled versions are unchanged, clead_lite imports from the clone, the quick profile's shipped
checkpoints are found and sha256-verified, the results files came along, the attack explorer (the eps slider of
notebook 01) builds and reacts with 7.7.1, and the embedding explorer's widget tests pass under 7.7.1.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from clead_lite.course.notebook_setup import REPO_URL, colab_badge, colab_setup_cell, colab_url

ROOT = Path(__file__).resolve().parents[1]
PROTECTED = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets")
PREINSTALLED = ("torch", "torchvision", "numpy", "matplotlib", "pandas", "scipy", "scikit-learn", "seaborn",
                "umap-learn", "mlxtend", "tqdm", "ipykernel", "ipython", "pytest")
NOT_SHARED = {"ipywidgets", "widgetsnbextension", "jupyterlab-widgets", "clead-lite"}
OWNER_NAME = REPO_URL.split("github.com/", 1)[1]


# ------------------------------------------------------------------------------------------- the address, once
def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.stdout.splitlines() if (ROOT / f).is_file()]


def test_the_repository_address_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"]["Repository"] == REPO_URL
    assert colab_url("x.ipynb") == f"https://colab.research.google.com/github/{OWNER_NAME}/blob/main/notebooks/x.ipynb"
    for path in _tracked_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if OWNER_NAME not in text:
            continue
        rel = path.relative_to(ROOT).as_posix()
        if rel == "clead_lite/course/notebook_setup.py":
            assert text.count(OWNER_NAME) == 1, "notebook_setup.py: REPO_URL only; derive the rest from it"
        elif rel == "pyproject.toml":
            assert text.count(OWNER_NAME) == 1
        elif rel.startswith("notebooks/") and rel.endswith(".ipynb"):
            nb = json.loads(text)
            first_md = "".join(next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"])
            first_code = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
            assert colab_badge(rel) in first_md, f"{rel}: badge differs (python scripts/sync_repo_url.py)"
            assert first_code == colab_setup_cell(), f"{rel}: setup cell differs (python scripts/sync_repo_url.py)"
            assert text.count(OWNER_NAME) == 2, f"{rel}: the address appears outside the badge and the setup cell"
        elif rel == "README.md":
            block = re.search(r"<!-- colab:start -->(.*?)<!-- colab:end -->", text, re.S)
            assert block and block.group(1).strip() == colab_badge("00_setup_and_data.ipynb")
            assert text.count(OWNER_NAME) == 1, "README: only the generated badge may hold the address"
        else:
            pytest.fail(f"{rel} holds a hard-coded copy of the repository address; use notebook_setup.REPO_URL")


def test_the_widgets_use_only_apis_of_ipywidgets_7_and_8():
    requirement = next(r for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                       if r.startswith("ipywidgets"))
    assert requirement.replace(" ", "") == "ipywidgets>=7.7"


# ------------------------------------------------------------------------------------------- the simulation
def _closure(names) -> list[metadata.Distribution]:
    """The distributions `names` need in this environment (markers without extras)."""
    from packaging.requirements import Requirement
    seen, todo, out = set(), list(names), []
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen or name in NOT_SHARED:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out.append(dist)
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def _share(dists, target: Path, site: Path) -> None:
    """Symlink each distribution's top-level files and its .dist-info into `target`."""
    target.mkdir(parents=True)
    for dist in dists:
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = site / top
            if src.exists() and not (target / top).exists():
                (target / top).symlink_to(src)


def _versions(python: Path) -> dict:
    code = ("import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in %r}))" % (PROTECTED,))
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.slow
def test_colab_simulation(tmp_path, monkeypatch):
    import nbformat
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    site = Path(sysconfig.get_paths()["purelib"])          # the current environment (sys.prefix), not /work/main
    assert Path(sys.prefix) in site.parents
    # 1. the fresh environment with Colab's preinstalled packages
    venv = tmp_path / "colab-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    sim_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    _share(_closure(PREINSTALLED), tmp_path / "preinstalled", site)
    (sim_site / "colab_preinstalled.pth").write_text(str(tmp_path / "preinstalled") + "\n")
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["ipywidgets==7.7.1"], check=True, timeout=300)
    before = _versions(py)
    assert before["ipywidgets"] == "7.7.1" and before["torch"] == metadata.version("torch")
    # 2. the local origin (this working tree's files) and the fake google.colab
    origin = tmp_path / "origin"
    for f in _tracked_files():
        dest = origin / f.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    git = ["git", "-c", "user.name=sim", "-c", "user.email=sim@example.invalid", "-C", str(origin)]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run(git + cmd, check=True)
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text('"""A stand-in for Colab\'s module."""\n')
    startup = tmp_path / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab\n")
    kernels = tmp_path / "kernels" / "colabsim"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({"argv": [str(py), "-m", "ipykernel_launcher", "-f",
                                                               "{connection_file}"], "display_name": "colab sim",
                                                      "language": "python"}))
    work = tmp_path / "content"
    work.mkdir()
    for name, value in {"CLEAD_REPO_URL": f"file://{origin}", "CLEAD_PROFILE": "smoke", "PYTHONPATH": str(fake),
                        "IPYTHONDIR": str(tmp_path / "ipython"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                        "CLEAD_DEVICE": "cpu", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("CLEAD_CHECKPOINT_DIR", "CLEAD_STORE", "CLEAD_DATASET", "VIRTUAL_ENV"):
        monkeypatch.delenv(name, raising=False)
    # 3. notebook 01, its own setup cell first, in a kernel of the simulated environment
    nb = nbformat.read(ROOT / "notebooks" / "01_adversarial_examples.ipynb", as_version=4)
    km = KernelManager(kernel_name="colabsim", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels.parent)]))
    try:
        NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(work)}}).execute()
    finally:   # a kernel manager passed in is not shut down by the client: no kernel left behind
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    setup_out = "".join(o.get("text", "") for o in nb.cells[1].outputs if o.get("output_type") == "stream")
    assert "on Colab" in setup_out and "profile smoke" in setup_out, setup_out
    # afterwards
    assert _versions(py) == before, "the setup must not change Colab's preinstalled packages"
    check = (
        "import json, clead_lite, ipywidgets, torch\n"
        "from clead_lite.course.checkpoints import find_checkpoint, verify_checkpoint\n"
        "from clead_lite.course.results import load_results\n"
        "from clead_lite.models import SmallCNN\n"
        "from clead_lite.widgets.viz import attack_explorer\n"
        "found = {m: str(find_checkpoint('mnist5k', m, 'quick', 'smallcnn')) for m in "
        "('standard', 'pgd_at', 'clead_online', 'clead_faithful')}\n"
        "for p in found.values(): verify_checkpoint(p)\n"
        "w = attack_explorer(SmallCNN().eval(), torch.rand(4, 1, 28, 28), torch.arange(4), eps_max=0.3)\n"
        "w.eps_slider.value = 0.1\n"
        "print(json.dumps({'file': clead_lite.__file__, 'found': found, 'results': len(load_results()),"
        " 'ipywidgets': ipywidgets.__version__, 'renders': w.render_count}))\n")
    out = subprocess.run([str(py), "-c", check], cwd=work, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    clone = work / "clead-course"
    assert Path(info["file"]).resolve().is_relative_to(clone.resolve())
    assert all(Path(p).resolve().is_relative_to(clone.resolve()) for p in info["found"].values())
    assert info["results"] > 0 and info["ipywidgets"] == "7.7.1" and info["renders"] >= 2
    # the embedding explorer's own widget tests, run from the clone against ipywidgets 7.7.1
    tests = subprocess.run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_explorer.py", "-k",
                            "widget or control or buttons or bad_arguments"], cwd=clone, capture_output=True,
                           text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert re.search(r"\b[1-9]\d* passed", tests.stdout), tests.stdout[-500:]
