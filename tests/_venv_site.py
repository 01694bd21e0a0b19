"""A fresh venv that sees only some of this machine's installed distributions: their files (and `.libs`,
`.dist-info`) symlinked into one folder that a `.pth` file puts on the fresh venv's path. Used by the tests that
simulate another machine's packages (Colab's versions, the GPU bundle) without copying torch."""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path


def linked_site(folder: Path, names) -> Path:
    """`folder` with a symlink to each top-level file or folder of the distributions `names` installed here
    (and of every nvidia-* one: torch's CUDA libraries); names not installed are passed over."""
    folder.mkdir(parents=True)
    names = set(names) | {d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia")}
    for name in sorted(names):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or ()}:
            src = base / top
            if top in ("..", "bin") or not src.exists() or (folder / top).exists():
                continue
            (folder / top).symlink_to(src)
    return folder


def venv_with_site(tmp_path: Path, names, pth_name: str) -> Path:
    """A fresh venv in `tmp_path / 'venv'` whose `pth_name` file puts `linked_site(tmp_path / <stem>, names)` on
    its path; returns its python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    folder = linked_site(tmp_path / Path(pth_name).stem, names)
    (site / pth_name).write_text(str(folder) + "\n")
    return py
