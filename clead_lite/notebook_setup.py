"""The first code cell of every notebook: `profile, device = setup()`.

Reads the run profile (`CLEAD_PROFILE` = smoke | quick | full), picks the device once, seeds every random
number generator, makes matplotlib figures readable on a projector, and prints one line that says what
runs where (profile, dataset, device, library versions) — the first thing to look at when a result differs.
Floor 3: may import anything of the package.
"""
from __future__ import annotations

import os
import platform
import sys

import torch

from . import __version__
from .profiles import Profile, get_device, get_profile, seed_everything

REPO_URL = "https://github.com/clead-course/clead-course"
"""The one place the course repository's address lives (Colab badges and the Colab install line use it)."""

COLAB_URL = "https://colab.research.google.com/github/clead-course/clead-course/blob/main/notebooks/{notebook}"

PROJECTOR_RC = {
    "figure.figsize": (10, 4.5),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 14,
    "axes.titlesize": 15,
    "axes.labelsize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "lines.linewidth": 2.2,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",
    "image.cmap": "gray",
}


def colab_url(notebook: str) -> str:
    """The "Open in Colab" address of `notebook` (a file name such as '01_adversarial_examples.ipynb')."""
    return COLAB_URL.format(notebook=os.path.basename(notebook))


def in_colab() -> bool:
    return "google.colab" in sys.modules


def set_plot_style() -> None:
    """Matplotlib defaults for a lecture hall: larger fonts, thicker lines, pixel-exact images."""
    import matplotlib as mpl
    mpl.rcParams.update(PROJECTOR_RC)


def versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour changes results."""
    import torchvision
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "clead_lite": __version__}
    return out


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def setup(profile: str | Profile | None = None, seed: int = 0, device: str | torch.device | None = None,
          quiet: bool = False) -> tuple[Profile, torch.device]:
    """Prepare a notebook and return `(profile, device)`.

    profile: a name ('smoke' | 'quick' | 'full'), a Profile, or None for `$CLEAD_PROFILE` (default: 'full'
    on a GPU, 'quick' otherwise; `$CLEAD_DATASET` overrides the dataset). seed: seeds Python, NumPy and
    torch. device: None picks CUDA when available, else CPU (or `$CLEAD_DEVICE`).
    """
    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    device = get_device(device)
    seed_everything(seed)
    set_plot_style()
    if not quiet:
        v = versions()
        where = " | on Colab" if in_colab() else ""
        print(f"clead_lite {v['clead_lite']} | profile {profile.name} | dataset {profile.dataset} "
              f"({profile.model}, eps {profile.eps:.4g}) | device {describe_device(device)} | torch {v['torch']}, "
              f"torchvision {v['torchvision']}, python {v['python']}{where}")
        if profile.name == "full" and device.type != "cuda":
            print("note: the 'full' profile (CIFAR-10, PreActResNet18) is meant for a GPU; on this CPU it will be "
                  "very slow. Set CLEAD_PROFILE=quick for a laptop lesson.")
    return profile, device
