"""Run profiles: one switch, `CLEAD_PROFILE` = smoke | quick | colab | paper, selects every size in the course.

- ``smoke``: every code path in seconds (the tests).
- ``quick``: a real lesson on a laptop CPU, minutes, on the offline embedded dataset.
- ``colab``: CIFAR-10 and PreAct ResNet-18 sized for Colab T4 runtimes: every notebook <= 12 T4-minutes of model
  FLOPs even from a fresh runtime that must retrain every model it loads (3 more minutes for the install and
  the download: <= 15), the course <= 90 (benchmarks/bench_flops.py at the calibrated 3.15 TFLOP/s,
  docs/COLAB.md). Fast adversarial training (Wong, Rice & Kolter 2020, "Fast is better than free", ICLR: FGSM
  with a random start, step 1.25 eps, cyclic learning rate to 0.2, batch 128, mixed precision, stop at
  catastrophic overfitting) on a seeded 10,000-image subset for 5 epochs instead of 50,000 for 15, and small
  evaluation sets (500 test images, AutoAttack on 32; their sampling error is printed with the accuracies).
- ``paper``: the published setting (CIFAR-10, PreAct ResNet-18, 30 epochs of PGD-10 training, PGD-20 x 5
  on 10,000 test images, AutoAttack on 1,000): about 7-14 T4-hours for the course. ``full`` is its old name.

Default: ``colab`` when CUDA is available, else ``quick``. `CLEAD_DATASET` overrides the profile's dataset.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from ..data import DATASETS, DEFAULT_DATASET, DatasetInfo, dataset_info, get_device  # noqa: F401 (re-exported)

PROFILE_NAMES = ("smoke", "quick", "colab", "paper", "full")
PROFILE_ALIASES = {"full": "paper"}   # the old name of the published setting


@dataclass(frozen=True)
class Profile:
    """Every size a notebook or the command line needs. Attack settings default to the dataset's."""
    name: str
    dataset: str
    model: str
    n_train: int | None        # None: the whole split
    n_test: int | None
    epochs: int
    batch_size: int
    lr: float
    train_steps: int           # PGD steps when crafting training examples
    eval_steps: int            # PGD steps for evaluation (PGD-k)
    eval_restarts: int
    n_eval: int                # test images attacked in evaluations
    n_autoattack: int          # test images given to AutoAttack
    n_embed: int               # images embedded for UMAP
    contrastive_weight: float  # lambda of clead_online
    temperature: float
    use_checkpoints: bool      # may notebooks load shipped checkpoints instead of training
    # training recipe details; None keeps train_config's rule (below)
    train_attack: str = "pgd"  # 'fgsm_rs': FGSM with a random start, step 1.25 eps (train_steps must be 1)
    warmup: float | None = None  # one-cycle: fraction of the steps spent rising to the peak lr
    n_val: int | None = None     # held-out training images checked every epoch
    val_steps: int | None = None
    co_drop: float | None = None  # catastrophic-overfitting stop: drop of held-out PGD accuracy between epochs
    cw_steps: int | None = None   # CW steps of the faithful pipeline's precomputed views
    encoder_epochs: int | None = None  # faithful pipeline stage epochs (None: `epochs`)
    head_epochs: int | None = None

    @property
    def info(self) -> DatasetInfo:
        return dataset_info(self.dataset)

    @property
    def eps(self) -> float:
        return self.info.eps

    @property
    def alpha(self) -> float:
        return self.info.alpha

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed, e.g. `profile.replace(dataset="fashion-mnist")`."""
        if "dataset" in changes:
            dataset_info(changes["dataset"])
            changes.setdefault("model", dataset_info(changes["dataset"]).model)
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        n = "all" if self.n_train is None else self.n_train
        return (f"profile {self.name!r}: dataset {self.dataset} ({n} train images), model {self.model}, "
                f"{self.epochs} epoch(s), eps {self.eps:.4g}, PGD-{self.eval_steps} evaluation")


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", "mnist5k", "smallcnn", n_train=256, n_test=128, epochs=1, batch_size=64,
                     lr=0.05, train_steps=2, eval_steps=3, eval_restarts=1, n_eval=64, n_autoattack=16,
                     n_embed=64, contrastive_weight=0.5, temperature=0.1, use_checkpoints=False),
    # quick trains with PGD-5 (alpha = 2.5 eps / 5 = 0.15 at eps 0.3): the settings its shipped checkpoints were
    # trained with (data/checkpoints/manifest.json holds their full config; tests/test_numbers.py compares them).
    "quick": Profile("quick", "mnist5k", "smallcnn", n_train=None, n_test=None, epochs=8, batch_size=128,
                     lr=0.05, train_steps=5, eval_steps=20, eval_restarts=2, n_eval=500, n_autoattack=200,
                     n_embed=600, contrastive_weight=0.5, temperature=0.1, use_checkpoints=True),
    # Wong et al. 2020's recipe (their CIFAR10/train_fgsm.py defaults: batch 128, cyclic lr 0 -> 0.2 -> 0 peaking
    # half-way, momentum 0.9, weight decay 5e-4, FGSM step 10/255 = 1.25 eps from a uniform random start, early
    # stop when PGD accuracy drops by more than 0.2 between epochs) with less training: 5 epochs on a seeded
    # 10,000-image subset (50,000 image-epochs, 1/15 of their 15 x 50,000), so that notebooks 05-07, which in a
    # fresh Colab runtime without the Drive store retrain all four models, stay within 12 T4-minutes of FLOPs
    # (docs/COLAB.md: each choice, its distance from the published setting, what the literature leads one to
    # expect); 500 test images attacked (+-4.4 points at 50 %), AutoAttack on 32 (+-17 points)
    "colab": Profile("colab", "cifar10", "preactresnet18", n_train=10_000, n_test=None, epochs=5, batch_size=128,
                     lr=0.2, train_steps=1, eval_steps=20, eval_restarts=1, n_eval=500, n_autoattack=32,
                     n_embed=1000, contrastive_weight=0.5, temperature=0.1, use_checkpoints=True,
                     train_attack="fgsm_rs", warmup=0.5, n_val=512, val_steps=5, co_drop=0.2, cw_steps=5,
                     encoder_epochs=1, head_epochs=1),
    "paper": Profile("paper", "cifar10", "preactresnet18", n_train=None, n_test=None, epochs=30, batch_size=512,
                     lr=0.2, train_steps=10, eval_steps=20, eval_restarts=5, n_eval=10000, n_autoattack=1000,
                     n_embed=2000, contrastive_weight=0.5, temperature=0.1, use_checkpoints=True),
}


def default_profile_name() -> str:
    """'colab' (sized for one T4 session) when CUDA is available, else 'quick'."""
    return "colab" if torch.cuda.is_available() else "quick"


def get_profile(name: str | None = None, dataset: str | None = None) -> Profile:
    """The profile `name`, else `$CLEAD_PROFILE`, else `colab` on a GPU and `quick` otherwise ('full' is 'paper').

    `dataset` (else `$CLEAD_DATASET`) replaces the profile's dataset and its default model.
    """
    name = name or os.environ.get("CLEAD_PROFILE") or default_profile_name()
    name = name.strip().lower()
    name = PROFILE_ALIASES.get(name, name)
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r} (from CLEAD_PROFILE or the argument); "
                         f"allowed: {', '.join(map(repr, PROFILE_NAMES))}")
    profile = PROFILES[name]
    dataset = dataset or os.environ.get("CLEAD_DATASET")
    if dataset and dataset != profile.dataset:
        profile = profile.replace(dataset=dataset)
    return profile




def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator seeded the same."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_config(profile: Profile, method: str = "pgd_at", **changes):
    """The TrainConfig of `method` under `profile`: its epochs, batch size, lr, eps, attack steps, lambda and
    temperature, plus the profile's recipe details (the colab profile's fast adversarial training); `changes`
    override any field."""
    from ..training import TrainConfig
    n_val = {"smoke": 64, "quick": 500}.get(profile.name, 1000)
    # MNIST-like data at eps 0.3: short PGD-AT runs stall at chance unless eps grows over the first steps;
    # it grows with the one-cycle learning rate (full eps at the lr peak). Measured on 2,048 mnist5k
    # images, 3 epochs, PGD-5: eps_warmup 0.2 -> loss 2.305, clean 11 %; 0.5 -> clean 55 %, PGD-10 23 %.
    eps_warmup = 0.4 if profile.info.channels == 1 else 0.0
    base = dict(method=method, epochs=profile.epochs, batch_size=profile.batch_size, lr=profile.lr,
                eps=profile.eps, attack_steps=profile.train_steps, eps_warmup=eps_warmup,
                contrastive_weight=profile.contrastive_weight, temperature=profile.temperature,
                n_val=n_val, val_steps=min(profile.eval_steps, 10))
    extra = dict(attack=profile.train_attack, warmup=profile.warmup, n_val=profile.n_val,
                 val_steps=profile.val_steps, co_drop=profile.co_drop)
    base.update({k: v for k, v in extra.items() if v is not None})
    return TrainConfig(**{**base, **changes})


def faithful_config(profile: Profile, **changes):
    """The FaithfulConfig of the published pipeline under `profile`: the views' CW steps and the stage epochs
    (smoke: the code path, not 50 head epochs); `changes` override any field (e.g. faithful_recipe='course-v1')."""
    from ..faithful import FaithfulConfig
    base = dict(view_steps=3, cw_steps=10 if profile.name == "smoke" else 50,
                head_epochs=2 if profile.name == "smoke" else None)
    extra = dict(cw_steps=profile.cw_steps, encoder_epochs=profile.encoder_epochs, head_epochs=profile.head_epochs)
    base.update({k: v for k, v in extra.items() if v is not None})
    return FaithfulConfig(**{**base, **changes})
