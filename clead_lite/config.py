"""The settings of a training run: `TrainConfig`, one frozen dataclass, every field checked when it is made (one line
per bad value: the field, its value, what is allowed). The published pipeline's own settings are
`faithful.FaithfulConfig`."""
from __future__ import annotations

from dataclasses import dataclass

from .data import dataset_info
from .validate import NORMS, Settings, check_budget, check_nonnegative, check_seed, check_settings

__all__ = ["METHODS", "STAGES", "SCHEDULES", "TrainConfig"]

METHODS = ("standard", "pgd_at", "trades", "clead_online", "clead_faithful")
STAGES = ("faithful_encoder", "faithful_head")     # internal methods of the clead_faithful stages
SCHEDULES = ("onecycle", "piecewise", "constant", "step")


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Every setting of a training run, checked when made; eps / alpha None are filled in by `resolved`."""
    method: str = "pgd_at"
    epochs: int = 10
    batch_size: int = 128            # the global batch; each of N DDP processes takes batch_size // N
    lr: float = 0.05                 # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "onecycle"       # onecycle: linear 0 -> lr at `warmup`, -> 0 at the end
    warmup: float = 0.4              # onecycle: fraction of the steps spent rising
    step_every: int = 15             # step: lr times step_gamma every step_every epochs
    step_gamma: float = 0.5
    # the training attack (pgd_at, trades, clead_online) and the held-out PGD accuracy
    eps: float | None = None
    alpha: float | None = None
    attack_steps: int = 10
    attack: str = "pgd"              # 'fgsm_rs': FGSM from a uniform random start (Wong, Rice & Kolter 2020)
    co_drop: float | None = None     # stop when held-out PGD accuracy falls by more than this between epochs
    norm: str = "linf"
    eps_warmup: float = 0.0          # fraction of the steps over which eps and alpha grow linearly from 0
    # clead_online
    contrastive_weight: float = 0.5  # lambda
    temperature: float = 0.1
    clean_ce: bool = False           # add CE on clean inputs (loss = (CE_adv + CE_clean) / 2 + lambda * con)
    supervised_contrastive: bool = False
    attack_loss: str = "ce"          # 'contrastive': craft the view against the InfoNCE loss
    # True: two passes, each view normalised by its own BatchNorm batch, only the adversarial one moving the running
    # statistics (lambda -> 0 is PGD-AT on any model). False: one concatenated batch, SimCLR's way (shipped models)
    split_views: bool = False
    trades_beta: float = 6.0         # beta of CE(clean) + beta * KL(clean || adversarial)
    # the loop
    amp: bool | None = None          # None: on for CUDA (bf16 from compute capability 8.0, else fp16), off on CPU
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    augment: bool = True             # the dataset's crop / flip (needs train(dataset=...))
    log_every: int = 50
    seed: int = 0
    n_val: int = 0                   # held-out images for a PGD accuracy each epoch (0: none)
    val_steps: int = 10
    early_stop_patience: int | None = None  # epochs without a better held-out PGD accuracy before stopping
    keep_best: bool = True           # end with the best held-out weights (when validating)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Each bad value raises one line naming the field, its value and what is allowed."""
        check_settings(self, positive=("lr", "temperature", "step_gamma", "alpha"), optional=("early_stop_patience",),
                       choices={"method": METHODS + STAGES, "schedule": SCHEDULES, "norm": NORMS,
                                "attack": ("pgd", "fgsm_rs"), "attack_loss": ("ce", "contrastive")},
                       ints={"epochs": 1, "batch_size": 2, "attack_steps": 1, "step_every": 1, "log_every": 1,
                             "n_val": 0, "val_steps": 1, "early_stop_patience": 1},
                       fractions={"momentum": "[0, 1)", "warmup": "(0, 1)", "eps_warmup": "[0, 1)",
                                  "co_drop": "(0, 1)"},
                       bools=("clean_ce", "supervised_contrastive", "split_views", "compile", "augment", "keep_best",
                              "nesterov"))
        check_seed(self.seed)
        for name, label in (("weight_decay", ""), ("contrastive_weight", " (lambda)"), ("trades_beta", " (beta)")):
            check_nonnegative(getattr(self, name), name + label)
        for name in ("amp", "channels_last"):
            if not isinstance(getattr(self, name), (bool, type(None))):
                raise TypeError(f"{name} must be None (automatic), True or False, got {getattr(self, name)!r}")
        if self.eps is not None:
            check_budget(self.eps, self.norm)
        if self.attack == "fgsm_rs" and (self.attack_steps != 1 or self.norm != "linf"):
            raise ValueError(f"attack 'fgsm_rs' is one L-inf step: it needs attack_steps=1 and norm='linf', got "
                             f"attack_steps={self.attack_steps}, norm={self.norm!r}")
        if self.co_drop is not None and not self.keep_best:
            raise ValueError("co_drop needs keep_best=True (the weights from before the collapse are kept)")
        if self.method == "trades" and self.norm != "linf":
            raise ValueError(f"method 'trades' implements the L-inf attack only, got norm {self.norm!r}")
        for name, default in (("attack_loss", "ce"), ("supervised_contrastive", False), ("clean_ce", False),
                              ("split_views", False)):
            if self.method != "clead_online" and getattr(self, name) != default:
                raise ValueError(f"{name}={getattr(self, name)!r} only applies to method 'clead_online', "
                                 f"got method {self.method!r}")

    def resolved(self, dataset: str | None = None, need_eps: bool = True) -> "TrainConfig":
        """eps from the dataset when None; alpha = min(eps, 2.5 * eps / attack_steps) when None (FGSM-RS: 1.25 eps).
        need_eps=False (no attack, no validation) leaves eps None when nothing gives it."""
        eps = self.eps
        if eps is None:
            if dataset is None and not need_eps:
                return self
            if dataset is None:
                raise ValueError(f"eps is not set: pass eps=... (e.g. 0.3 for MNIST) or dataset=... so that "
                                 f"the dataset's standard eps is used (method {self.method!r})")
            eps = dataset_info(dataset).eps if self.norm == "linf" else dataset_info(dataset).eps_l2
        alpha = self.alpha if self.alpha is not None else min(eps, 2.5 * eps / self.attack_steps)
        if self.alpha is None and self.attack == "fgsm_rs":
            alpha = 1.25 * eps        # Wong et al. 2020: 10/255 for eps 8/255
        return self.replace(eps=float(eps), alpha=float(alpha or 1e-12))

    @property
    def adversarial(self) -> bool:
        return self.method in ("pgd_at", "trades", "clead_online")
