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
    if device.type == "cuda":  # device-ok
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def setup(profile: str | Profile | None = None, seed: int = 0, device: str | torch.device | None = None,
          quiet: bool = False) -> tuple[Profile, torch.device]:
    """Prepare a notebook and return `(profile, device)`.

    profile: a name ('smoke' | 'quick' | 'colab' | 'paper'), a Profile, or None for `$CLEAD_PROFILE` (default:
    'colab' on a GPU, 'quick' otherwise; `$CLEAD_DATASET` overrides the dataset). seed: seeds Python, NumPy and
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
        if profile.name in ("paper", "colab") and device.type != "cuda":  # device-ok
            print(f"note: the {profile.name!r} profile (CIFAR-10, PreActResNet18) is meant for a GPU; on this CPU it "
                  "will be very slow. Set CLEAD_PROFILE=quick for a laptop lesson.")
    return profile, device


def load_data(profile: Profile, seed: int = 0):
    """The profile's train and test images: (x_train, y_train, x_test, y_test), CPU tensors in [0, 1].

    Sizes: `profile.n_train` / `profile.n_test` (None: the whole split) of `profile.dataset`.
    """
    from .data import load_dataset
    x_train, y_train = load_dataset(profile.dataset, "train", n=profile.n_train, seed=seed)
    x_test, y_test = load_dataset(profile.dataset, "test", n=profile.n_test, seed=seed)
    return x_train, y_train, x_test, y_test


def load_or_train(method: str, profile: Profile, x_train, y_train, device: torch.device, *, live: bool = True,
                  title: str | None = None, **changes):
    """A model trained with `method` ('standard', 'pgd_at', 'clead_online'): the shipped checkpoint when the
    profile allows it (`profile.use_checkpoints`) and one matches (dataset, method, profile, model), else
    trained here with `training.train` (progress bar; live curves when `live`).

    changes: TrainConfig fields that override the profile's (a run with changes never loads a checkpoint,
    since the shipped one was trained with the profile's settings). Returns (model in eval mode on `device`,
    history): history is a `training.History` (list of records; `.frame('epoch')`), or the checkpoint's
    stored history, or None when the checkpoint has none.
    """
    from .checkpoints import find_checkpoint, load_checkpoint, load_pretrained
    from .models import build_model
    from .training import History, TrainConfig, train
    from .viz import LiveCurves

    if profile.use_checkpoints and not changes:
        path = find_checkpoint(profile.dataset, method, profile.name, profile.model)
        if path is not None:
            model, entry = load_pretrained(profile.dataset, method, profile.name, profile.model, device=device)
            state = load_checkpoint(path, map_location="cpu")
            history = History(state["history"]) if state.get("history") else None
            metrics = entry.get("metrics") or {}
            measured = (f"; its recorded accuracy on {metrics['n']} test images: clean {metrics['clean']:.1%}, "
                        f"PGD-{metrics['steps']} {metrics['pgd']:.1%}" if metrics.get("n") else "")
            print(f"loaded the shipped {method} checkpoint {path.name} (sha256 verified{measured}).\n"
                  f"It was trained by: {entry.get('command') or 'an unrecorded command'}\n"
                  f"To train it here instead: CLEAD_PROFILE=smoke, or pass a change (e.g. epochs=...).")
            return model.eval(), history
    model = build_model(profile.model, num_classes=profile.info.num_classes)
    config = TrainConfig.from_profile(profile, method, **changes)
    callback = LiveCurves(title=title or f"{method} on {profile.dataset}", name=method) if live else None
    result = train(model, x_train, y_train, config, dataset=profile.dataset, device=device, callback=callback)
    print(f"trained {method} in {result.seconds:.0f} s ({result.epochs_run} epoch(s)"
          f"{'' if result.best_epoch is None else f', kept the weights of epoch {result.best_epoch}'})")
    return result.model.eval(), result.history
