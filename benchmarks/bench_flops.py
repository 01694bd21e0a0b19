"""Model FLOPs each notebook runs, per profile, and the GPU minutes they imply on a Colab T4.

Per-image FLOPs of every kind of pass are *measured* with torch.utils.flop_counter.FlopCounterMode on the
real model at the real input size (PreAct ResNet-18 at 3x32x32 for CIFAR-10, SmallCNN at 1x28x28):

- ``fwd``         forward, no gradient (accuracy, predictions, AutoAttack's Square queries);
- ``input_grad``  forward + backward to the input only, weights frozen (one attack step: FGSM, PGD, CW);
- ``train``       forward + full backward (one training example);
- ``train_all``   the same through `forward_all` (logits and projection: C-LEAD and the encoder stage).

Each notebook's work is then a list of (what, pass kind, images) read off its code cells and the profile's
settings (`TrainConfig.from_profile`): e.g. PGD-AT = epochs x training images x (attack_steps x input_grad +
train). Every model is trained once in the course (the model store): its training is counted in the first
notebook that needs it (standard: 01, PGD-AT: 03, C-LEAD online and faithful: 05). Training counts every
epoch (an early stop only shortens it). AutoAttack (standard version) is counted per image as APGD-CE 100
steps on the clean-correct images, then APGD-T 9 x 100 steps, FAB-T 9 x 100 x (step + forward) and Square
5,000 queries on the images still robust, with the fractions Wong et al. 2020 publish for this recipe
(86 % clean, 46 % robust; `--aa-upper` counts every attack on every image instead). CPU work (UMAP, data
loading, plotting) is not counted.

The T4 rate: NVIDIA's published ResNet-50 v1.5 mixed-precision throughput on a T4 (DeepLearningExamples,
PyTorch, pytorch-21.03 container: 1,198 images/s at batch 256) times ResNet-50's forward FLOPs measured here
(torchvision, 224x224) = about 9.8 TFLOP/s sustained for convolutions in fp16, 15 % of the T4's 65 TFLOP/s
fp16 tensor peak (its 70 W limit lowers the clock under load). It is an assumption, not a measurement, and an
inference figure: backward passes and PreAct ResNet-18's small 32x32 feature maps may run slower.

    python benchmarks/bench_flops.py                       # colab, paper and quick; writes results/flops.json
    python benchmarks/bench_flops.py --profiles colab --json -
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from clead_lite.models import build_model
from clead_lite.course.profiles import PROFILES, Profile
from clead_lite.course.profiles import faithful_config, train_config
from clead_lite.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("00_setup_and_data", "01_adversarial_examples", "02_stronger_attacks", "03_adversarial_training",
             "04_contrastive_learning", "05_clead", "06_honest_evaluation", "07_embedding_separation")
SPLITS = {"cifar10": (50_000, 10_000), "mnist": (60_000, 10_000), "fashion-mnist": (60_000, 10_000),
          "mnist5k": (4_000, 1_000)}
T4_RESNET50_IMAGES_PER_S = 1198     # NVIDIA DeepLearningExamples, ResNet-50 v1.5 PyTorch, T4, AMP, batch 256
NOTEBOOK_BUDGET_MIN, COURSE_BUDGET_MIN = 15.0, 90.0
WONG_CLEAN, WONG_ROBUST = 0.86, 0.46  # Wong et al. 2020, FGSM recipe, CIFAR-10 eps 8/255 (their README table)


# ---------------------------------------------------------------------------------------------- measuring
def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def pass_flops(model_name: str, channels: int, size: int, batch: int = 4) -> dict[str, float]:
    """Measured FLOPs per image of each pass kind, for `model_name` at (channels, size, size)."""
    torch.manual_seed(0)
    model = build_model(model_name).train()
    x = torch.rand(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))

    def fwd():
        with torch.no_grad():
            model(x)

    def input_grad():
        xi = x.clone().requires_grad_(True)     # the counter cannot follow autograd.grad; backward() to xi
        F.cross_entropy(model(xi), y).backward()

    def train():
        F.cross_entropy(model(x), y).backward()

    def train_all():
        logits, z = model.forward_all(x)
        (F.cross_entropy(logits, y) + z.float().pow(2).mean()).backward()

    out = {"fwd": _count(fwd), "train": _count(train), "train_all": _count(train_all)}
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(False)
    out["input_grad"] = _count(input_grad)
    return {k: v / batch for k, v in out.items()}


def t4_rate() -> dict:
    """The assumed sustained T4 rate: measured ResNet-50 forward FLOPs x NVIDIA's published T4 images/s."""
    import torchvision
    model = torchvision.models.resnet50().eval()
    x = torch.rand(1, 3, 224, 224)

    def fwd():
        with torch.no_grad():
            model(x)
    flops = _count(fwd)
    return {"tflops": flops * T4_RESNET50_IMAGES_PER_S / 1e12, "resnet50_forward_gflop": flops / 1e9,
            "resnet50_t4_images_per_s": T4_RESNET50_IMAGES_PER_S,
            "source": "NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5 README, 'Inference performance: NVIDIA T4', "
                      "mixed precision, batch 256 (pytorch-21.03 NGC container)"}


# ---------------------------------------------------------------------------------------------- the work
def _images(profile: Profile) -> tuple[int, int]:
    n_train, n_test = SPLITS[profile.dataset]
    return (n_train if profile.n_train is None else min(n_train, profile.n_train),
            n_test if profile.n_test is None else min(n_test, profile.n_test))


def _steps_images(n: int, batch: int) -> int:
    """Images one epoch trains on (the loader drops the last partial batch when a full one exists)."""
    return (n // batch) * batch if n >= batch else n


def _validation(cfg: TrainConfig, epochs: int) -> list[tuple]:
    if not cfg.n_val:
        return []
    items = [("held-out check: clean + PGD", "fwd", 2 * cfg.n_val * epochs),
             ("held-out check: clean + PGD", "input_grad", cfg.val_steps * cfg.n_val * epochs)]
    if cfg.attack == "fgsm_rs" or cfg.co_drop is not None:
        items += [("held-out check: FGSM", "input_grad", cfg.n_val * epochs), ("held-out check: FGSM", "fwd", cfg.n_val * epochs)]
    return items


def training_work(profile: Profile, method: str) -> list[tuple]:
    """(what, kind, images) of training `method` with the profile's settings (every epoch counted)."""
    cfg = train_config(profile, method).resolved(profile.dataset)
    faithful = faithful_config(profile)
    n_train, _ = _images(profile)
    n = _steps_images(n_train - cfg.n_val, cfg.batch_size)
    e = cfg.epochs
    if method == "standard":
        return [("standard training", "train", e * n)] + _validation(cfg, e)
    if method == "pgd_at":
        name = f"PGD-AT ({cfg.attack}, {cfg.attack_steps} step(s))"
        return [(name, "input_grad", e * n * cfg.attack_steps), (name, "train", e * n)] + _validation(cfg, e)
    if method == "trades":   # the KL attack (fwd + bwd per step, one clean forward for its target), 2 branches
        name = f"TRADES ({cfg.attack_steps} KL step(s), clean + adversarial forwards)"
        return [(name, "input_grad", e * n * cfg.attack_steps), (name, "fwd", e * n),
                (name, "train_all", 2 * e * n)] + _validation(cfg, e)
    if method == "clead_online":
        name = f"C-LEAD online ({cfg.attack}, clean + adversarial batch)"
        return [(name, "input_grad", e * n * cfg.attack_steps), (name, "train_all", 2 * e * n)] + _validation(cfg, e)
    if method == "clead_faithful":
        n_views = n_train - cfg.n_val
        fc = faithful.resolved()
        steps = sum(fc.view_steps if k.startswith("pgd") else 1 if k.startswith("fgsm") else fc.cw_steps
                    for k in fc.view_kinds)
        enc, head = fc.encoder_epochs or cfg.epochs, fc.head_epochs or cfg.epochs
        return [("faithful: precomputed views", "input_grad", steps * n_views),
                ("faithful: 3-view encoder", "train_all", 3 * enc * n),
                ("faithful: linear head (frozen encoder)", "fwd", head * n)] + _validation(cfg.replace(epochs=head), head)
    raise ValueError(f"unknown method {method!r}")


def _evaluate(n: int, steps: int, restarts: int, transfer: bool) -> list[tuple]:
    """`evaluation.evaluate`: clean, FGSM, PGD-steps x restarts (and the same PGD made on a source)."""
    items = [("evaluate", "fwd", n * (2 + restarts)), ("evaluate", "input_grad", n * (1 + steps * restarts))]
    if transfer:
        items += [("evaluate: transfer", "input_grad", n * steps * restarts), ("evaluate: transfer", "fwd", n * restarts)]
    return items


def _autoattack(n: int, upper: bool) -> list[tuple]:
    clean, robust = (1.0, 1.0) if upper else (WONG_CLEAN, WONG_ROBUST)
    return [("AutoAttack: APGD-CE", "input_grad", 100 * clean * n),
            ("AutoAttack: APGD-T, FAB-T", "input_grad", 1800 * robust * n),
            ("AutoAttack: FAB-T, Square", "fwd", (900 + 5000) * robust * n)]


def notebook_work(profile: Profile, aa_upper: bool = False) -> dict[str, list[tuple]]:
    """Per notebook: the (what, kind, images) it runs in `profile`, read off its code cells."""
    n_train, n_test = _images(profile)
    n = min(profile.n_eval, n_test)
    s, r = profile.eval_steps, profile.eval_restarts
    work: dict[str, list[tuple]] = {name: [] for name in NOTEBOOKS}
    work["00_setup_and_data"] = [("model shapes", "fwd", 12)]
    work["01_adversarial_examples"] = training_work(profile, "standard") + [
        ("clean / FGSM / noise accuracies", "fwd", 6 * n), ("FGSM", "input_grad", 2 * n),
        ("attack explorer (32 images)", "input_grad", 32 * (s + 2))]
    step_list = sorted({1, 2, 5, 10, 20} & set(range(1, max(s, 2) + 1)) | {1, s})
    restart_list = sorted({1, max(2, r)})
    grid = sum(t * k for t in step_list for k in restart_list)
    n_cw, n_x = min(n, 100), min(n, 128)
    work["02_stronger_attacks"] = [
        ("FGSM, PGD L-inf / L2", "input_grad", n * (1 + 3 * s)), ("accuracies", "fwd", 5 * n),
        (f"CW-L2 ({5 * s} steps, {n_cw} images)", "input_grad", n_cw * 5 * s),
        ("steps x restarts grid", "input_grad", n * grid), ("steps x restarts grid", "fwd", n * sum(restart_list) * len(step_list)),
        ("accuracy vs eps (7 eps x noise, FGSM, PGD)", "input_grad", 7 * n * (1 + s)),
        ("accuracy vs eps", "fwd", 7 * 3 * n), ("torchattacks cross-check", "input_grad", 2 * n_x * (1 + 2 * s))]
    # TRADES: trained in 03 on the CPU profiles; the GPU profiles only load it from the store (it would not fit)
    k = 2 if profile.name in ("colab", "paper") else 3
    work["03_adversarial_training"] = training_work(profile, "pgd_at") + k * _evaluate(n, s, r, False) + [
        (f"PGD accuracy vs eps ({k} models x 7 eps)", "input_grad", k * 7 * n * s), ("PGD accuracy vs eps", "fwd", k * 7 * n)]
    if k == 3:
        work["03_adversarial_training"] += training_work(profile, "trades")
    enc_cfg = train_config(profile, "standard", epochs=max(1, profile.epochs // 2))
    n_ref, n_query = min(n_train, 2000), min(n_test, 1000)
    work["04_contrastive_learning"] = [
        (f"contrastive encoder ({enc_cfg.epochs} epochs, 3 views)", "train_all",
         3 * enc_cfg.epochs * _steps_images(n_train, enc_cfg.batch_size)),
        ("kNN / alignment probes (x2)", "fwd", 2 * (n_ref + 2 * n_query)), ("views and similarities", "fwd", 200)]
    n_small, n_look = min(n_train, 256), min(profile.n_eval, 200)
    small = train_config(profile, "pgd_at", epochs=1, n_val=0).resolved(profile.dataset)
    work["05_clead"] = training_work(profile, "clead_online") + training_work(profile, "clead_faithful") + [
        ("lambda = 0 check: 3 one-epoch runs on 256 images", "input_grad", 3 * n_small * small.attack_steps),
        ("lambda = 0 check", "train_all", 4 * n_small),
        ("views against CE and the contrastive loss", "input_grad", 2 * n_look * s)] + 4 * _evaluate(n_look, s, 1, True)
    n_check = min(200, n)
    sanity = 5 * s + s + (s // 4 + 2 * s) + (r + 2) * s + 1 + s     # sweep, large eps, steps, restarts, FGSM, transfer
    work["06_honest_evaluation"] = (4 * _evaluate(n, s, r, True) + [
        ("transfer PGD-3 (4 models)", "input_grad", 4 * n * 3), ("transfer PGD-3", "fwd", 4 * n),
        ("sanity checks (2 reports)", "input_grad", 2 * n_check * sanity), ("sanity checks", "fwd", 2 * n_check * 20),
        ("scaled-logits model and margin PGD", "input_grad", 4 * n_check * s), ("predictions", "fwd", 2 * n)]
        + 3 * _autoattack(min(profile.n_autoattack, n), aa_upper))
    n_embed = min(profile.n_embed, n_test)
    work["07_embedding_separation"] = [
        ("explorer data: PGD (4 models x 2 eps)", "input_grad", 4 * 2 * n_embed * min(10, s)),
        ("explorer data: embeddings and predictions", "fwd", 4 * 2 * 4 * n_embed)]
    return work


def _fmt_flops(f: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if f >= scale:
            return f"{f / scale:.2f} {unit}"
    return f"{f:.3g} FLOP"


def profile_table(profile: Profile, per_image: dict[str, float], rate_tflops: float, aa_upper: bool) -> dict:
    rows = []
    for name, items in notebook_work(profile, aa_upper).items():
        flops = sum(per_image[kind] * count for _, kind, count in items)
        parts: dict[str, float] = {}
        for what, kind, count in items:
            parts[what] = parts.get(what, 0.0) + per_image[kind] * count
        rows.append({"notebook": name, "flops": flops, "t4_minutes": flops / (rate_tflops * 1e12) / 60,
                     "parts": {k: v for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}})
    total = sum(r["flops"] for r in rows)
    n_test = _images(profile)[1]
    return {"profile": profile.name, "dataset": profile.dataset, "model": profile.model, "notebooks": rows,
            "total_flops": total, "total_t4_minutes": total / (rate_tflops * 1e12) / 60,
            "n_eval": min(profile.n_eval, n_test), "n_autoattack": min(profile.n_autoattack, profile.n_eval, n_test),
            "within_budget": all(r["t4_minutes"] <= NOTEBOOK_BUDGET_MIN for r in rows)
                             and total / (rate_tflops * 1e12) / 60 <= COURSE_BUDGET_MIN}


def run(profiles: list[str], aa_upper: bool = False) -> dict:
    rate = t4_rate()
    shapes = {}
    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "command": "python benchmarks/bench_flops.py " + " ".join(sys.argv[1:]),
              "t4_rate": rate, "budget_minutes": {"notebook": NOTEBOOK_BUDGET_MIN, "course": COURSE_BUDGET_MIN},
              "autoattack_fractions": "upper bound (every attack on every image)" if aa_upper else
              {"clean": WONG_CLEAN, "robust": WONG_ROBUST, "source": "Wong et al. 2020 (FGSM, CIFAR-10, eps 8/255)"},
              "per_image_flops": {}, "profiles": {}}
    for name in profiles:
        p = PROFILES[name]
        key = f"{p.model}@{p.info.channels}x{p.info.size}x{p.info.size}"
        if key not in shapes:
            shapes[key] = pass_flops(p.model, p.info.channels, p.info.size)
            result["per_image_flops"][key] = shapes[key]
        result["profiles"][name] = profile_table(p, shapes[key], rate["tflops"], aa_upper)
    return result


def print_tables(result: dict) -> None:
    rate = result["t4_rate"]["tflops"]
    print(f"assumed T4 rate: {rate:.1f} TFLOP/s ({result['t4_rate']['resnet50_forward_gflop']:.2f} GFLOP per "
          f"ResNet-50 forward x {result['t4_rate']['resnet50_t4_images_per_s']} images/s, NVIDIA's published T4 figure)")
    for key, per in result["per_image_flops"].items():
        print(f"{key}: " + ", ".join(f"{k} {v / 1e9:.3f} GFLOP" for k, v in per.items()) + " per image")
    for name, table in result["profiles"].items():
        print(f"\nprofile {name} ({table['dataset']}, {table['model']}): FLOPs per notebook, estimated T4 minutes")
        for r in table["notebooks"]:
            print(f"  {r['notebook']:<26} {_fmt_flops(r['flops']):>12}  {r['t4_minutes']:7.1f} min")
        print(f"  {'course':<26} {_fmt_flops(table['total_flops']):>12}  {table['total_t4_minutes']:7.1f} min"
              f"   (budget {NOTEBOOK_BUDGET_MIN:g} per notebook, {COURSE_BUDGET_MIN:g} in all: "
              f"{'within' if table['within_budget'] else 'OVER'})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="+", default=["colab", "paper", "quick"], choices=sorted(PROFILES))
    p.add_argument("--aa-upper", action="store_true", help="AutoAttack: every attack on every image")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "flops.json"),
                   help="where to write the JSON ('-': nowhere)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args.profiles, args.aa_upper)
    print_tables(result)
    if args.json != "-":
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
