"""Golden outputs of the core, recorded on the CPU at smoke size before the core was rewritten (issue 19), so that a
refactor that changes what the code computes fails `tests/test_golden.py`.

    python tests/golden.py            # print the digests
    python tests/golden.py --record   # write tests/golden.json (only when a change of behaviour is intended)

Each entry is a sha256 of the exact bytes of a result (adversarial images, trained weights and buffers, loss
values, accuracies), so "identical" means bit for bit. Everything runs in one thread (the convolution kernels'
summation order depends on the thread count) with fixed seeds.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
GOLDEN = Path(__file__).with_name("golden.json")


def digest(*values) -> str:
    """sha256 of tensors (dtype, shape and bytes), numbers and strings, nested in lists / tuples / dicts."""
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            for k in sorted(v):
                h.update(f"K{k}".encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}".encode())
            for item in v:
                feed(item)
        elif isinstance(v, float):
            h.update(f"F{v!r}".encode())
        else:
            h.update(f"V{v!r}".encode())

    for v in values:
        feed(v)
    return h.hexdigest()


def _state(model) -> dict:
    return {k: v for k, v in model.state_dict().items()}


def _batch(n: int = 16):
    from clead_lite.course.datasets import load_dataset
    x, y = load_dataset("mnist5k", "test")
    return x[:n].clone(), y[:n].clone()


def _model(seed: int = 0, name: str = "smallcnn"):
    from clead_lite.models import build_model
    torch.manual_seed(seed)
    return build_model(name, num_classes=10).eval()


def golden_attacks() -> dict:
    """FGSM, PGD (L-inf / L2, restarts, targeted, a custom loss), CW (fixed c, the search over c), random noise
    on the first 16 mnist5k test images against a SmallCNN trained 1 epoch (so the gradients are not trivial)."""
    import torch.nn.functional as F

    from clead_lite.attacks import cw_l2, fgsm, make_attack, pgd, random_noise
    x, y = _batch()
    model = _trained_smallcnn()
    g = lambda: torch.Generator().manual_seed(0)
    target = (y + 1) % 10
    out = {
        "fgsm": fgsm(model, x, y, eps=0.3),
        "fgsm_targeted": fgsm(model, x, target, eps=0.2, targeted=True),
        "pgd_linf": pgd(model, x, y, eps=0.3, alpha=0.05, steps=7, generator=g()),
        "pgd_linf_no_start": pgd(model, x, y, eps=0.3, alpha=0.05, steps=7, random_start=False),
        "pgd_linf_restarts": pgd(model, x, y, eps=0.2, alpha=0.05, steps=5, restarts=3, generator=g()),
        "pgd_targeted": pgd(model, x, target, eps=0.3, alpha=0.05, steps=5, targeted=True, generator=g()),
        "pgd_l2": pgd(model, x, y, eps=2.0, alpha=0.5, steps=7, norm="l2", generator=g()),
        "pgd_l2_restarts": pgd(model, x, y, eps=1.5, alpha=0.5, steps=4, norm="l2", restarts=2, generator=g()),
        "pgd_custom_loss": pgd(model, x, y, eps=0.3, alpha=0.05, steps=5, generator=g(),
                               loss_fn=lambda m, xa, ya: F.cross_entropy(m(xa), ya, reduction="none") ** 2),
        "cw_fixed_c": cw_l2(model, x, y, c=1.0, steps=30, lr=0.01),
        "cw_search": cw_l2(model, x, y, c=0.1, steps=20, lr=0.05, binary_search_steps=3),
        "random_linf": random_noise(model, x, y, eps=0.3, generator=g()),
        "random_l2": random_noise(model, x, y, eps=2.0, norm="l2", generator=g()),
        "make_attack_pgd": make_attack("pgd", eps=0.3, alpha=0.1, steps=3, generator=g())(model, x, y),
    }
    # a BatchNorm model (PreAct ResNet-18 on 32x32 inputs): eval-mode statistics in the attack
    torch.manual_seed(1)
    xc = torch.rand(4, 3, 32, 32)
    yc = torch.tensor([0, 1, 2, 3])
    resnet = _model(0, "preactresnet18")
    out["pgd_resnet"] = pgd(resnet, xc, yc, eps=8 / 255, alpha=2 / 255, steps=3, generator=g())
    return {k: digest(v) for k, v in out.items()}


_TRAINED = {}


def _trained_smallcnn():
    """A SmallCNN after 1 epoch of standard training on 512 mnist5k images (cached for this process)."""
    if "m" not in _TRAINED:
        from clead_lite.course.datasets import load_dataset
        from clead_lite.training import TrainConfig, train
        x, y = load_dataset("mnist5k", "train")
        model = _model(0)
        cfg = TrainConfig(method="standard", epochs=1, batch_size=64, lr=0.05, log_every=4)
        _TRAINED["m"] = train(model, x[:512], y[:512], cfg, dataset="mnist5k", device="cpu", progress=False).model
    return _TRAINED["m"]


def golden_losses() -> dict:
    """InfoNCE (2 and 3 views, symmetric), SupCon, TRADES' KL on fixed random embeddings and logits."""
    from clead_lite.losses import info_nce, supcon, trades_kl
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(12, 16, generator=g) for _ in range(3))
    labels = torch.randint(0, 4, (12,), generator=g)
    logits_a, logits_b = torch.randn(12, 10, generator=g), torch.randn(12, 10, generator=g)
    grads = {}     # what training uses: the gradients too, not only the values
    for name, fn in (("info_nce_2_grad", lambda u, v, w: info_nce(u, v, temperature=0.1)),
                     ("info_nce_3_grad", lambda u, v, w: info_nce(u, v, w, temperature=0.5)),
                     ("info_nce_symmetric_grad", lambda u, v, w: info_nce(u, v, temperature=0.2, symmetric=True)),
                     ("supcon_grad", lambda u, v, w: supcon(torch.cat([u, v]), torch.cat([labels, labels]))),
                     ("trades_kl_grad", lambda u, v, w: trades_kl(u[:, :10], v[:, :10]))):
        leaves = [t.clone().requires_grad_(True) for t in (a, b, c)]
        grads[name] = digest(torch.autograd.grad(fn(*leaves), leaves, allow_unused=True, materialize_grads=True))
    out = {
        "info_nce_2": info_nce(a, b, temperature=0.1),
        "info_nce_3": info_nce(a, b, c, temperature=0.5),
        "info_nce_symmetric": info_nce(a, b, temperature=0.2, symmetric=True),
        "supcon": supcon(torch.cat([a, b]), torch.cat([labels, labels]), temperature=0.1),
        "trades_kl": trades_kl(logits_a, logits_b),
    }
    return {**{k: digest(v) for k, v in out.items()}, **grads}


# every method, smoke size: (name, TrainConfig changes)
TRAIN_RUNS = [
    ("standard", dict(method="standard")),
    ("pgd_at", dict(method="pgd_at")),
    ("trades", dict(method="trades")),
    ("clead_online_lam0", dict(method="clead_online", contrastive_weight=0.0)),
    ("clead_online_lam0.5", dict(method="clead_online", contrastive_weight=0.5)),
    ("clead_online_split_views", dict(method="clead_online", contrastive_weight=0.5, split_views=True)),
    ("clead_online_contrastive_attack", dict(method="clead_online", attack_loss="contrastive")),
    ("clead_online_supcon_clean_ce", dict(method="clead_online", supervised_contrastive=True, clean_ce=True)),
    ("pgd_at_fgsm_rs", dict(method="pgd_at", attack="fgsm_rs", attack_steps=1, co_drop=0.5)),
    ("pgd_at_l2_piecewise", dict(method="pgd_at", norm="l2", schedule="piecewise")),
]


def _train_data(n: int = 320):
    from clead_lite.course.datasets import load_dataset
    x, y = load_dataset("mnist5k", "train")
    return x[:n].clone(), y[:n].clone()


def _history_digest(history) -> str:
    rows = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in history]
    return digest(rows)


def golden_training() -> dict:
    """The weights and buffers after 2 epochs of every method (64 held out, keep-best on), and the history."""
    from clead_lite.training import TrainConfig, train
    x, y = _train_data()
    out = {}
    for name, changes in TRAIN_RUNS:
        model = _model(0)
        cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, attack_steps=changes.get("attack_steps", 2),
                          n_val=64, val_steps=2, eps_warmup=0.4, log_every=2, seed=3,
                          **{k: v for k, v in changes.items() if k != "attack_steps"})
        res = train(model, x, y, cfg, dataset="mnist5k", device="cpu", progress=False)
        out[name] = {"weights": digest(_state(res.model)), "history": _history_digest(res.history),
                     "best_epoch": res.best_epoch}
    return out


def golden_faithful() -> dict:
    """The faithful pipeline (surrogate -> views -> encoder -> head) at smoke size, both recipes."""
    import tempfile

    from clead_lite.course.views_cache import ViewsCache
    from clead_lite.faithful import FaithfulConfig, train_faithful
    from clead_lite.training import TrainConfig
    x, y = _train_data(256)
    out = {}
    for recipe in ("authors", "course-v1"):
        cfg = TrainConfig(method="clead_faithful", epochs=1, batch_size=64, lr=0.05, attack_steps=2, n_val=64,
                          val_steps=2, seed=0)
        faithful = FaithfulConfig(cw_steps=5, head_epochs=2, faithful_recipe=recipe)
        with tempfile.TemporaryDirectory() as cache:
            res = train_faithful(x, y, cfg, faithful, dataset="mnist5k", device="cpu", progress=False,
                                 cache=ViewsCache(cache, progress=False))
        out[recipe] = {"weights": digest(_state(res.model)), "surrogate": digest(_state(res.surrogate)),
                       "views": digest(res.views),
                       "histories": digest({k: _history_digest(h) for k, h in res.histories.items()})}
    return out


def golden_evaluation() -> dict:
    """Accuracies, an eps sweep, one evaluate() row and the sanity report of the 1-epoch model."""
    from clead_lite.attacks import make_attack
    from clead_lite.evaluation import accuracy, eps_sweep, evaluate, robust_accuracy, sanity_checks, transfer_accuracy
    from clead_lite.embeddings import embed, separation_metrics
    from clead_lite.course.datasets import load_dataset
    xt, yt = load_dataset("mnist5k", "test")
    x, y = xt[:64].clone(), yt[:64].clone()
    model = _trained_smallcnn()
    other = _model(5)
    pgd = make_attack("pgd", eps=0.3, alpha=0.1, steps=3, generator=torch.Generator().manual_seed(0))
    row = evaluate(model, x, y, eps=0.3, steps=3, restarts=1, seed=0)
    # without the AutoAttack columns (NaN and 0 here), which moved from evaluate to the course layer in session 14;
    # this entry was re-recorded on the code before that move (commit 56b7e6a) with this line
    dropped = ("autoattack", "n_autoattack")
    row = {k: v for k, v in row.items() if "second" not in k and k != "time" and k not in dropped}
    report = sanity_checks(model, x[:32], y[:32], eps=0.3, steps=3, seed=0)
    z = embed(model, x)
    adv = pgd(model, x, y)
    out = {
        "accuracy": accuracy(model, x, y),
        "robust_accuracy": robust_accuracy(model, x, y, pgd),
        "transfer_accuracy": transfer_accuracy(other, model, x, y,
                                               make_attack("fgsm", eps=0.3)),
        "eps_sweep": eps_sweep(model, x[:32], y[:32], [0.0, 0.1, 0.3], steps=3, seed=0).to_dict("list"),
        "evaluate": row,
        "sanity": {c.name: (c.passed, c.detail, c.numbers) for c in report.checks},
        "embed": z,
        "separation": separation_metrics(z, embed(model, adv), y),
    }
    return {k: digest(v) for k, v in out.items()}


SECTIONS = {"attacks": golden_attacks, "losses": golden_losses, "training": golden_training,
            "faithful": golden_faithful, "evaluation": golden_evaluation}


def compute(sections=None) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: SECTIONS[name]() for name in (sections or SECTIONS)}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    result = compute(sys.argv[2:] if len(sys.argv) > 2 else None)
    text = json.dumps(result, indent=1, sort_keys=True)
    if "--record" in sys.argv:
        GOLDEN.write_text(text + "\n")
        print(f"wrote {GOLDEN}")
    else:
        print(text)
