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

The T4 rate is a *training* rate calibrated on a published training run (docs/COLAB.md; `t4_rate()`): Wong,
Rice & Kolter 2020 trained PreAct ResNet-18 on CIFAR-10 with 15 epochs of FGSM-RS (one input-gradient pass and
one training pass per image and epoch, measured here) in 12 minutes on one RTX 2080 Ti: 4.16 PFLOP in 720 s,
5.78 TFLOP/s (an upper bound on the training throughput: their 12 minutes include evaluation and data loading).
A T4 trains at 0.42-0.67 of a 2080 Ti: 2.4-3.9 TFLOP/s, midpoint **3.15 TFLOP/s**, the rate used. It is an
estimate, not a measurement on a T4. (The earlier 9.8 TFLOP/s was a ResNet-50 *inference* figure, about 3x
too optimistic for training.)

Per notebook two figures: `t4_minutes`, each model trained once in the first notebook that needs it (a model
store kept between notebooks: the Drive store on Colab), and `fresh_t4_minutes`, a fresh runtime without a
store, which retrains every model the notebook loads (`LOADS`). The budget: `NOTEBOOK_COMPUTE_MIN` = 12
minutes of FLOPs per notebook from a fresh runtime, leaving `SETUP_ALLOWANCE_MIN` = 3 for the install, the
CIFAR-10 download and CPU work (not measured) within the 15-minute notebook budget; the course <= 90 minutes
with that allowance counted once per notebook.

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
# the calibration anchor: Wong, Rice & Kolter 2020 (ICLR), Table 3 / locuslab/fast_adversarial README: FGSM-RS,
# PreAct ResNet-18, CIFAR-10 (50,000 images), 15 epochs, 12 minutes on one RTX 2080 Ti (mixed precision)
ANCHOR_EPOCHS, ANCHOR_IMAGES, ANCHOR_SECONDS = 15, 50_000, 12 * 60
T4_VS_2080TI = (0.42, 0.67)          # T4 training throughput as a fraction of a 2080 Ti's (issue 21)
NOTEBOOK_BUDGET_MIN, COURSE_BUDGET_MIN = 15.0, 90.0
SETUP_ALLOWANCE_MIN = 3.0            # install + CIFAR-10 download + CPU work per fresh runtime (not measured)
NOTEBOOK_COMPUTE_MIN = NOTEBOOK_BUDGET_MIN - SETUP_ALLOWANCE_MIN
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


def t4_rate(per_image: dict[str, float] | None = None) -> dict:
    """The T4 training rate calibrated on Wong et al.'s FGSM-RS run (PreAct ResNet-18 FLOPs measured here,
    `per_image`: `pass_flops('preactresnet18', 3, 32)`), times a T4's speed relative to a 2080 Ti."""
    per = per_image or pass_flops("preactresnet18", 3, 32)
    step = per["input_grad"] + per["train"]                     # one FGSM-RS step: attack gradient + training pass
    anchor_flops = ANCHOR_EPOCHS * ANCHOR_IMAGES * step
    rtx = anchor_flops / ANCHOR_SECONDS / 1e12
    lo, hi = (rtx * f for f in T4_VS_2080TI)
    return {"tflops": (lo + hi) / 2, "range_tflops": [lo, hi], "rtx2080ti_tflops": rtx,
            "anchor_pflop": anchor_flops / 1e15, "fgsm_rs_gflop_per_image": step / 1e9,
            "anchor": f"Wong, Rice & Kolter 2020 (ICLR), FGSM-RS, PreAct ResNet-18, CIFAR-10, {ANCHOR_EPOCHS} epochs x "
                      f"{ANCHOR_IMAGES:,} images in {ANCHOR_SECONDS // 60} min on one RTX 2080 Ti (an upper bound: "
                      "their time includes evaluation and data loading)",
            "t4_vs_2080ti": list(T4_VS_2080TI), "derivation": "docs/COLAB.md"}


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


# The models each notebook gets from `load_or_train` / `load_or_train_faithful` (read off its code cells; TRADES in 03
# is only loaded from the store on the GPU profiles, never trained, so it is left out), and the notebook that
# trains each of them first (its training is in that notebook's `notebook_work`).
TRAINED_IN = {"standard": "01_adversarial_examples", "pgd_at": "03_adversarial_training",
              "clead_online": "05_clead", "clead_faithful": "05_clead"}
_ALL_FOUR = ("standard", "pgd_at", "clead_online", "clead_faithful")
LOADS = {"00_setup_and_data": (), "01_adversarial_examples": ("standard",), "02_stronger_attacks": ("standard",),
         "03_adversarial_training": ("standard", "pgd_at"), "04_contrastive_learning": ("standard",),
         "05_clead": _ALL_FOUR, "06_honest_evaluation": _ALL_FOUR, "07_embedding_separation": _ALL_FOUR}


def retrained(notebook: str) -> tuple[str, ...]:
    """The models `notebook` must train itself in a fresh runtime with no model store (Colab without Drive):
    those it loads that an earlier notebook trains."""
    return tuple(m for m in LOADS[notebook] if TRAINED_IN[m] != notebook)


def fresh_runtime_work(profile: Profile, aa_upper: bool = False) -> dict[str, list[tuple]]:
    """Per notebook: its own work (`notebook_work`) plus the training of every model it loads that an earlier
    notebook trained: what a fresh runtime without a kept model store computes."""
    work = notebook_work(profile, aa_upper)
    return {name: items + [item for m in retrained(name) for item in training_work(profile, m)]
            for name, items in work.items()}


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


def fresh_table(profile: Profile, per_image: dict[str, float], rate_tflops: float, aa_upper: bool) -> dict:
    """Per notebook: T4 minutes with a kept model store and from a fresh runtime without one (`fresh_runtime_work`),
    the models it retrains there, and whether every notebook and the course fit the budget (fresh, with the setup
    allowance)."""
    minutes = lambda items: sum(per_image[k] * c for _, k, c in items) / (rate_tflops * 1e12) / 60  # noqa: E731
    kept, fresh = notebook_work(profile, aa_upper), fresh_runtime_work(profile, aa_upper)
    rows = [{"notebook": n, "t4_minutes": minutes(kept[n]), "fresh_t4_minutes": minutes(fresh[n]),
             "retrains": list(retrained(n)), "loads": list(LOADS[n])} for n in NOTEBOOKS]
    trainings = {m: minutes(training_work(profile, m)) for m in TRAINED_IN}
    total_kept, total_fresh = sum(r["t4_minutes"] for r in rows), sum(r["fresh_t4_minutes"] for r in rows)
    setup = SETUP_ALLOWANCE_MIN * sum(1 for n in NOTEBOOKS if n != "00_setup_and_data")
    return {"notebooks": rows, "training_t4_minutes": trainings, "total_t4_minutes": total_kept,
            "total_fresh_t4_minutes": total_fresh, "setup_allowance_minutes": SETUP_ALLOWANCE_MIN,
            "within_budget": all(r["fresh_t4_minutes"] <= NOTEBOOK_COMPUTE_MIN for r in rows)
                             and total_fresh + setup <= COURSE_BUDGET_MIN}


def run(profiles: list[str], aa_upper: bool = False) -> dict:
    shapes = {"preactresnet18@3x32x32": pass_flops("preactresnet18", 3, 32)}
    rate = t4_rate(shapes["preactresnet18@3x32x32"])
    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "command": "python benchmarks/bench_flops.py " + " ".join(sys.argv[1:]),
              "t4_rate": rate, "budget_minutes": {"notebook": NOTEBOOK_BUDGET_MIN, "course": COURSE_BUDGET_MIN,
                                                  "notebook_compute": NOTEBOOK_COMPUTE_MIN,
                                                  "setup_allowance": SETUP_ALLOWANCE_MIN},
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
        if name == "colab":
            result["colab_fresh_runtime"] = fresh_table(p, shapes[key], rate["tflops"], aa_upper)
    return result


def print_tables(result: dict) -> None:
    r = result["t4_rate"]
    print(f"T4 training rate: {r['tflops']:.2f} TFLOP/s ({r['range_tflops'][0]:.1f}-{r['range_tflops'][1]:.1f}): "
          f"{r['anchor_pflop']:.2f} PFLOP ({r['fgsm_rs_gflop_per_image']:.3f} GFLOP per FGSM-RS image step) in "
          f"{ANCHOR_SECONDS} s = {r['rtx2080ti_tflops']:.2f} TFLOP/s on a 2080 Ti, x {T4_VS_2080TI[0]}-{T4_VS_2080TI[1]}")
    for key, per in result["per_image_flops"].items():
        print(f"{key}: " + ", ".join(f"{k} {v / 1e9:.3f} GFLOP" for k, v in per.items()) + " per image")
    for name, table in result["profiles"].items():
        print(f"\nprofile {name} ({table['dataset']}, {table['model']}): FLOPs per notebook, estimated T4 minutes")
        for r in table["notebooks"]:
            print(f"  {r['notebook']:<26} {_fmt_flops(r['flops']):>12}  {r['t4_minutes']:7.1f} min")
        print(f"  {'course':<26} {_fmt_flops(table['total_flops']):>12}  {table['total_t4_minutes']:7.1f} min"
              f"   (budget {NOTEBOOK_BUDGET_MIN:g} per notebook, {COURSE_BUDGET_MIN:g} in all: "
              f"{'within' if table['within_budget'] else 'OVER'})")
    fresh = result.get("colab_fresh_runtime")
    if fresh:
        print(f"\ncolab, T4 minutes with a kept model store / from a fresh runtime without one (budget: "
              f"{NOTEBOOK_COMPUTE_MIN:g} min of FLOPs per notebook + {SETUP_ALLOWANCE_MIN:g} for setup)")
        for r in fresh["notebooks"]:
            print(f"  {r['notebook']:<26} {r['t4_minutes']:6.2f} {r['fresh_t4_minutes']:6.2f}  retrains: "
                  + (", ".join(r["retrains"]) or "-"))
        print(f"  {'course':<26} {fresh['total_t4_minutes']:6.2f} {fresh['total_fresh_t4_minutes']:6.2f}   "
              f"({'within' if fresh['within_budget'] else 'OVER'} the budget)")


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
