"""The first code cell of every notebook: `profile, device = setup()`.

Reads the run profile (`CLEAD_PROFILE` = smoke | quick | colab | paper), picks the device once, seeds every random
number generator, makes matplotlib figures readable on a projector, and prints one line that says what runs where
(profile, dataset, model, eps, device). Then `load_data` and `load_or_train`, which load or train a model without
printing where it came from: that is the model store's business (`python -m clead_lite store`,
`LoadedModel.provenance`), not the lesson's.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from .profiles import Profile, get_device, get_profile, seed_everything
from .profiles import faithful_config, train_config

REPO_URL = "https://github.com/clead-course/clead-course"
"""The one place the course repository's address lives. Everything else is derived from it: COLAB_URL, the
notebooks' Colab badges and setup cells and the README badge (written by `scripts/sync_repo_url.py`);
pyproject.toml's [project.urls] repeats it for pip. tests/test_colab_sim.py checks every copy."""
REPO_BRANCH = "main"
COLAB_URL = (REPO_URL.replace("https://github.com/", "https://colab.research.google.com/github/", 1)
             + f"/blob/{REPO_BRANCH}/notebooks/{{notebook}}")
COLAB_BADGE_SVG = "https://colab.research.google.com/assets/colab-badge.svg"

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


def notebook_path(notebook: str | os.PathLike) -> str:
    """`notebook`'s path inside `notebooks/`: '01_x.ipynb' for a student notebook, 'solutions/01_x.ipynb' for its
    instructor version. Accepts a file name, a path inside the repository or an absolute path."""
    parts = Path(notebook).parts
    if "notebooks" in parts:
        rest = parts[len(parts) - 1 - parts[::-1].index("notebooks") + 1:]
        return "/".join(rest)
    if len(parts) >= 2 and parts[-2] == "solutions":
        return f"solutions/{parts[-1]}"
    return parts[-1]


def colab_url(notebook: str | os.PathLike) -> str:
    """The "Open in Colab" address of `notebook`: '01_adversarial_examples.ipynb' (the student version) or
    'solutions/01_adversarial_examples.ipynb' (the instructor version; any path ending in
    `notebooks/solutions/NAME` or `solutions/NAME` works too)."""
    return COLAB_URL.format(notebook=notebook_path(notebook))


def colab_badge(notebook: str | os.PathLike) -> str:
    """The markdown "Open in Colab" badge of `notebook` (see `colab_url`)."""
    return f"[![Open In Colab]({COLAB_BADGE_SVG})]({colab_url(notebook)})"


def colab_setup_cell() -> str:
    """The first code cell of every notebook (written into them by `scripts/sync_repo_url.py`).

    On Colab it makes a shallow clone of the repository (code, shipped checkpoints with their manifest, the
    results files; `$CLEAD_REPO_URL` replaces the address, e.g. a local clone for the Colab simulation test),
    and runs `scripts/colab_install.py`: an editable install with --no-deps, then only the requirements that are
    missing, with Colab's torch, torchvision, numpy, matplotlib and ipywidgets pinned at their installed
    versions. Anywhere else it only calls `setup()`.
    """
    return (
        "# Setup. On Colab: a shallow clone of the course (code, shipped checkpoints, results) and an install that\n"
        "# keeps Colab's torch, torchvision, numpy, matplotlib and ipywidgets as they are. Elsewhere: nothing to do.\n"
        "import os, sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    REPO = os.environ.get(\"CLEAD_REPO_URL\", \"{REPO_URL}\")\n"
        "    if not os.path.isdir(\"clead-course\"):\n"
        "        !git clone -q --depth 1 {REPO} clead-course\n"
        "    !{sys.executable} clead-course/scripts/colab_install.py clead-course\n"
        "    sys.path.insert(0, os.path.abspath(\"clead-course\"))\n"
        "from clead_lite.course.notebook_setup import setup\n"
        "profile, device = setup()     # prints the profile, dataset and device")


def in_colab() -> bool:
    return "google.colab" in sys.modules


def set_plot_style() -> None:
    """Matplotlib defaults for a lecture hall: larger fonts, thicker lines, pixel-exact images."""
    import matplotlib as mpl
    mpl.rcParams.update(PROJECTOR_RC)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":  # device-ok
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def setup(profile: str | Profile | None = None, seed: int = 0, device: str | torch.device | None = None,
          quiet: bool = False, use_drive: bool | None = None) -> tuple[Profile, torch.device]:
    """Prepare a notebook and return `(profile, device)`.

    profile: a name ('smoke' | 'quick' | 'colab' | 'paper'), a Profile, or None for `$CLEAD_PROFILE` (default:
    'colab' on a GPU, 'quick' otherwise; `$CLEAD_DATASET` overrides the dataset). seed: seeds Python, NumPy and
    torch. device: None picks CUDA when available, else CPU (or `$CLEAD_DEVICE`). use_drive: True keeps the model
    store on Google Drive (Colab only; `course.drive.use_drive_store`: mounts Drive, which asks the student for
    permission, probes the folder's lock and rename, one line); None, on Colab, prints one line saying how.
    """
    if not isinstance(profile, Profile):
        profile = get_profile(profile)
    device = get_device(device)
    seed_everything(seed)
    set_plot_style()
    if not quiet:
        print(f"profile {profile.name}: {profile.dataset}, {profile.model}, eps {profile.eps:.4g} | "
              f"device {describe_device(device)}" + (" | on Colab" if in_colab() else ""))
        if profile.name == "colab":   # the cut that fits a Colab session, stated where the numbers are shown
            print(f"colab: {profile.epochs} epochs of fast adversarial training on a seeded {profile.n_train:,}-image "
                  f"subset, {profile.n_eval} test images attacked: a fraction of the published setting, so expect "
                  "lower accuracy than published (README: distance from the published setting)")
        if profile.name in ("paper", "colab") and device.type != "cuda":  # device-ok
            print(f"note: the {profile.name!r} profile (CIFAR-10, PreActResNet18) is meant for a GPU; on this CPU it "
                  "will be very slow. Set CLEAD_PROFILE=quick for a laptop lesson.")
    if use_drive:
        from .drive import use_drive_store
        use_drive_store(quiet=quiet)
    elif use_drive is None and not quiet and in_colab() and not os.environ.get("CLEAD_STORE"):
        from .drive import drive_hint
        print(drive_hint())
    return profile, device


def load_data(profile: Profile, seed: int = 0):
    """The profile's train and test images: (x_train, y_train, x_test, y_test), CPU tensors in [0, 1].

    Train: `profile.n_train` images of `profile.dataset` (a subset seeded by `seed`; None: the whole split).
    Test: the first `profile.n_test` test images (`data.test_images`; None: all), so that `x_test[:n]` are the
    images every accuracy on "n test images" in the course is computed on (manifest, load messages, CLI).
    """
    from .datasets import load_dataset, test_images
    x_train, y_train = load_dataset(profile.dataset, "train", n=profile.n_train, seed=seed)
    x_test, y_test = test_images(profile.dataset, profile.n_test)
    return x_train, y_train, x_test, y_test


class LoadedModel(tuple):
    """What `load_or_train` returns: unpacks as `(model, history)`, and carries `.config` (the TrainConfig the
    model was actually trained with), `.source` ('shipped', 'store' or 'trained'), `.path` (its checkpoint,
    None when not saved) and `.provenance` (one line: where it came from, its recorded accuracies; `load_message`)."""

    def __new__(cls, model, history, config, source: str, path=None, provenance: str = ""):
        self = super().__new__(cls, (model, history))
        self.config, self.source, self.path, self.provenance = config, source, path, provenance
        return self

    @property
    def model(self):
        return self[0]

    @property
    def history(self):
        return self[1]


def load_message(method: str, where: str, metrics: dict | None) -> str:
    """A loaded model's provenance in one line (`LoadedModel.provenance`; a load prints nothing): which model, from
    where, and (when recorded) its clean and robust accuracy on the stated test images, e.g. "pgd_at: shipped
    checkpoint mnist5k_pgd_at_quick.pt | first 500 test images: clean 96.2%, robust 64.0% (eps 0.3; attack: PGD-20 x
    2 restarts, notebook 02)". The full record (training config, command, sha256) stays in
    data/checkpoints/manifest.json and the model store's index."""
    line = f"{method}: {where}"
    if metrics and metrics.get("n"):
        line += (f" | first {metrics['n']} test images: clean {metrics['clean']:.1%}, robust {metrics['pgd']:.1%} "
                 f"(eps {metrics['eps']:.3g}; attack: PGD-{metrics['steps']} x {metrics['restarts']} "
                 f"restart{'' if metrics['restarts'] == 1 else 's'}, "
                 "notebook 02)")
    return line


def _lookup(method: str, profile: Profile, x_train, y_train, changes: dict):
    """(config asked for, store key or None, StoreHit or None)."""
    from .store import find, model_key
    config = train_config(profile, method, **changes)
    if not profile.use_checkpoints:   # smoke: always train (the tests must run the training code), never store
        return config, None, None
    key = model_key(method, profile.dataset, profile.model, profile.name, config, x_train, y_train)
    return config, key, find(key)


def train_config_used(method: str, profile: Profile, x_train, y_train, **changes):
    """The TrainConfig (eps and alpha resolved) of the model `load_or_train(method, profile, x_train, y_train,
    **changes)` returns: the stored or shipped model's own config when there is one, else the one it would
    train with. Cheap: nothing is loaded or trained."""
    from ..training import TrainConfig
    config, _, hit = _lookup(method, profile, x_train, y_train, changes)
    if hit is not None and hit.entry.get("config"):
        return TrainConfig.from_dict(hit.entry["config"]).resolved(profile.dataset)
    return config.resolved(profile.dataset)


def load_or_train(method: str, profile: Profile, x_train, y_train, device: torch.device, *, live: bool = True,
                  title: str | None = None, only_stored: bool = False, **changes) -> LoadedModel:
    """A model trained with `method` ('standard', 'pgd_at', 'clead_online') on (x_train, y_train).

    With `profile.use_checkpoints` (quick, full) it comes from the model store when one with the same key exists
    (`clead_lite.course.store`: dataset, method, model, profile, every training setting, seed, the training images, the
    code version): a shipped checkpoint (sha256 verified) or a model an earlier notebook or command trained.
    Otherwise it is trained here with `training.train` (progress bar; live curves when `live`) and, outside
    smoke, saved into the store, so the next notebook that asks for it loads it.

    changes: TrainConfig fields that override the profile's (a different key: a different model).
    only_stored: never train; without a shipped or stored model, say how to train it and return model None.
    Returns a LoadedModel: unpacks as (model in eval mode on `device`, history); history is a
    `training.History` (list of records; `.frame('epoch')`) or None when the stored model has none;
    `.config` is the config the model was trained with. A load prints nothing (where the model came from is
    `.provenance`); training here shows its progress and one closing line.
    """
    from ..models import build_model
    from .store import check_store_writable, load_hit, save_model, store_dir
    from ..training import History, TrainConfig, train
    from ..widgets.viz import LiveCurves

    config, key, hit = _lookup(method, profile, x_train, y_train, changes)
    loaded = load_hit(hit, device)   # None also for a stored file that no longer fits (warned): trained again
    if loaded is not None:
        model, state = loaded
        history = History(state["history"]) if state.get("history") else None
        used = TrainConfig.from_dict(hit.entry.get("config") or state.get("config") or config.to_dict())
        used = used.resolved(profile.dataset)
        where = "shipped checkpoint" if hit.source == "shipped" else "model store"
        return LoadedModel(model.eval(), history, used, hit.source, hit.path,
                           load_message(method, f"{where} {hit.path.name}", hit.entry.get("metrics")))
    if only_stored:
        print(f"no {method} model for these settings in the model store: not trained here (it would not fit this "
              f"notebook's time budget). To add it: python -m clead_lite train --method {method} "
              f"--profile {profile.name} --dataset {profile.dataset}")
        return LoadedModel(None, None, config, "missing", None)
    with torch.random.fork_rng(devices=[]):   # the initial weights depend on the seed only, not on earlier cells
        torch.manual_seed(config.seed)
        model = build_model(profile.model, num_classes=profile.info.num_classes)
    unstorable = check_store_writable(model) if key is not None else None   # a real probe write, before the work
    if unstorable:
        warnings.warn(f"the {method} model is trained here but will not be stored: {unstorable}", RuntimeWarning,
                      stacklevel=2)
    callback = LiveCurves(title=title or f"{method} on {profile.dataset}", name=method) if live else None
    result = train(model, x_train, y_train, config, dataset=profile.dataset, device=device, callback=callback)
    path = None
    if key is not None and store_dir() is not None and not unstorable:
        path = _store_trained(method, lambda: save_model(
            key, result.model, result.config, result.history, seconds=result.seconds,
            command=f"load_or_train({method!r}, profile {profile.name!r}"
                    + "".join(f", {k}={v!r}" for k, v in changes.items()) + ")"))
    print(f"{method}: trained here in {result.seconds:.0f} s ({result.epochs_run} epoch(s)"
          f"{'' if result.best_epoch is None else f', kept the weights of epoch {result.best_epoch}'})"
          + ("; saved in the model store" if path else ""))
    return LoadedModel(result.model.eval(), result.history, result.config, "trained", path)


def _store_trained(what: str, save: Callable[[], Path]):
    """save() into the model store; when that fails after training (a full disk, a folder made read-only) a
    warning and None: the trained model is still returned by the caller, nothing computed is lost."""
    try:
        return save()
    except OSError as e:
        warnings.warn(f"the trained {what} model was not stored ({e}); it is returned, use it in this session",
                      RuntimeWarning, stacklevel=3)    # attributed to the notebook cell that called the loader
        return None


def load_or_train_faithful(profile: Profile, x_train, y_train, device: torch.device, surrogate: torch.nn.Module,
                           *, progress: bool = True):
    """The `clead_faithful` model for this profile: (model in eval mode on `device`, FaithfulResult or None).

    Where it comes from, in order: a shipped checkpoint or the model store, found by the same key as every model
    (the profile's training and faithful settings, the training images; the surrogate is the profile's standard
    model, itself determined by its own key); else `faithful.train_faithful` here, with `surrogate` (a copy: stage 1
    skipped), saved into the store outside smoke, so that notebooks 05, 06 and 07 train it once. The FaithfulResult
    (views, histories) comes back only when it was trained here.
    """
    import copy

    from ..faithful import train_faithful
    from .store import find, load_model, model_key, save_model, store_dir

    config = train_config(profile, "clead_faithful").resolved(profile.dataset)
    faithful = faithful_config(profile)
    key = None
    if profile.use_checkpoints:
        key = model_key("clead_faithful", profile.dataset, profile.model, profile.name, config, x_train, y_train,
                        faithful)
        hit = find(key)
        if hit is not None:
            model, _ = load_model(hit, device)
            return model.eval(), None
    from .views_cache import ViewsCache
    result = train_faithful(x_train, y_train, config, faithful, dataset=profile.dataset, surrogate=copy.deepcopy(surrogate),
                            device=device, progress=progress, cache=ViewsCache(progress=progress))
    path = None
    if key is not None and store_dir() is not None:
        path = _store_trained("faithful", lambda: save_model(
            key, result.model, config, result.history, seconds=result.seconds, faithful=result.faithful,
            command=f"load_or_train_faithful(profile {profile.name!r})"))
    print(f"faithful pipeline trained in {result.seconds:.0f} s"
          + (f"; saved to the model store: {path}" if path else ""))
    return result.model.eval(), result
