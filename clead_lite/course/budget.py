"""The budget curve and the lambda sweep: read the per-point JSON files that `benchmarks/budget_curve.py`
writes (one file per method / epochs / seed / lambda), tabulate them and plot robust accuracy against the
training budget.

    frame = load_points("benchmarks/results/budget")      # one row per point
    print(budget_markdown(frame)); print(lambda_markdown(frame))
    print(verdict_markdown(frame))                         # the README's verdict, from the rows
    plot_budget_curve(frame)                               # matplotlib Axes

A budget is given in epochs and in optimizer steps (one batch of 128 images each): the budget curve trains on
3,500 images, 27 steps per epoch; the results table on 9,500, 74 per epoch. Only steps compare the two.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import holm, mcnemar_exact, paired_bootstrap, sample_sd, t_interval

__all__ = ["POINT_COLUMNS", "PUBLISHED", "PLANNED", "PLANNED_COMMANDS", "load_points", "optimizer_steps",
           "budget_markdown", "lambda_markdown", "paired_gaps", "gap_markdown", "standard_check_markdown",
           "config_note", "summary_markdown", "verdict", "verdict_markdown", "plot_budget_curve", "plot_gaps",
           "point_name"]

POINT_COLUMNS = ("dataset", "method", "epochs", "seed", "lam", "clean", "apgd", "autoattack", "autoattack_n",
                 "apgd_on_autoattack_images", "n_scored", "best_epoch", "train_seconds", "score_seconds",
                 "apgd_correct", "n_train", "n_val", "batch_size", "config", "code_version", "train_images_sha256",
                 "file")
# The grid the budget curve is being extended to (issue 23): PGD-AT and C-LEAD online to 128 epochs, TRADES to 16
# (the CPU's limit), seeds 0-2; 5 seeds at the last budget of the pair, because at 64 epochs the gap's interval
# still straddled +-1 point, and PGD-AT's 64 epochs too, so that its change 64 -> 128 is paired on the same 5 seeds.
# A planned point not on disk is one still to come; the verdict names them.
PLANNED = {"pgd_at": (4, 8, 16, 32, 64, 128), "clead_online": (4, 8, 16, 32, 64, 128), "trades": (4, 8, 16)}
PLANNED_SEEDS = (0, 1, 2)
FIVE_SEEDS = {"pgd_at": (64, 128), "clead_online": (128,)}      # budgets planned with seeds 0-4
PLANNED_COMMANDS = ("python benchmarks/budget_curve.py --methods pgd_at clead_online --epochs 128 --seeds 0 1 2 3 4",
                    "python benchmarks/budget_curve.py --methods pgd_at --epochs 64 --seeds 3 4")
BAND = 0.01          # "within +-1 point of 0": the verdict's margin, in accuracy (fraction)
# AutoAttack (standard) accuracies reported in Croce & Hein 2020's table for full MNIST at eps 0.3, larger
# models and budgets than this curve's: where each point stands against the published ones
PUBLISHED = {"pgd_at": ("Madry et al. 2018 (AutoAttack table)", 0.885),
             "trades": ("TRADES, Zhang et al. 2019 (AutoAttack table)", 0.9276)}
LABELS = {"pgd_at": "PGD-AT", "trades": "TRADES", "clead_online": "C-LEAD online"}


def point_name(dataset: str, method: str, epochs: int, seed: int, lam: float | None) -> str:
    """The file name of one point: every key in it, so that two points never share a file."""
    lam_part = "-" if lam is None else f"{lam:g}"
    return f"{dataset}_{method}_e{epochs}_s{seed}_lam{lam_part}.json"


def load_points(directory: str | Path) -> pd.DataFrame:
    """One row per point file in `directory`; accuracies in [0, 1], NaN where not measured."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"budget-curve directory {str(directory)!r} does not exist")
    rows = []
    for f in sorted(directory.glob("*_e*_s*_lam*.json")):
        r = json.loads(f.read_text())
        key, res, settings = r.get("key") or {}, r.get("result") or {}, r.get("settings") or {}
        config = res.get("config") if isinstance(res.get("config"), dict) else None
        rows.append({"dataset": key.get("dataset"), "method": key.get("method"), "epochs": key.get("epochs"),
                     "seed": key.get("seed"), "lam": key.get("lam"), "clean": res.get("clean"),
                     "apgd": res.get("apgd"), "autoattack": res.get("autoattack"),
                     "autoattack_n": res.get("autoattack_n"),
                     "apgd_on_autoattack_images": res.get("apgd_on_autoattack_images"), "n_scored": res.get("n_scored"),
                     "best_epoch": res.get("best_epoch"), "train_seconds": res.get("train_seconds"),
                     "score_seconds": res.get("score_seconds"), "apgd_correct": res.get("apgd_correct"),
                     "n_train": settings.get("n_train"), "n_val": settings.get("n_val"),
                     "batch_size": (config or {}).get("batch_size"), "config": config,
                     "code_version": res.get("code_version"), "train_images_sha256": res.get("train_images_sha256"),
                     "file": f.name})
    frame = pd.DataFrame(rows, columns=POINT_COLUMNS)
    for c in ("clean", "apgd", "autoattack", "apgd_on_autoattack_images"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return frame


def _curve_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The budget curve's points: the fixed lambda of C-LEAD online (0.5), every PGD-AT / TRADES point."""
    lam = pd.to_numeric(frame["lam"], errors="coerce")
    keep = frame["method"].isin(["pgd_at", "trades"]) | ((frame["method"] == "clead_online") & (lam.round(6) == 0.5))
    return frame[keep]


def _mean_sd(v: pd.Series) -> str:
    v = v.dropna().to_numpy(dtype=float)
    if not len(v):
        return "-"
    return f"{100 * v.mean():.1f}" + (f" ± {100 * sample_sd(v):.1f}" if len(v) > 1 else "")


def optimizer_steps(n_fit, batch_size, epochs) -> int | None:
    """Optimizer steps of a run: epochs x batches per epoch, the last partial batch dropped (the training loop's
    rule whenever a full batch exists). n_fit: the images trained on (n_train - n_val). None if unknown."""
    vals = (n_fit, batch_size, epochs)
    if any(v is None or (isinstance(v, float) and v != v) for v in vals):
        return None
    n_fit, batch_size, epochs = (int(v) for v in vals)
    per_epoch = n_fit // batch_size if n_fit >= batch_size else 1
    return epochs * per_epoch


def _steps(g: pd.DataFrame) -> str:
    """The steps of a group of points ('432'; '-' if a point lacks its sizes; both if they differ)."""
    steps = {optimizer_steps(None if pd.isna(r.n_train) or pd.isna(r.n_val) else r.n_train - r.n_val,
                             r.batch_size, r.epochs) for r in g.itertuples()}
    return "-" if None in steps else "/".join(f"{s:,}" for s in sorted(steps))


def _code(g: pd.DataFrame) -> str:
    """The short code versions (git commits) of a group of points; 'not recorded' for points written before
    the points recorded it."""
    v = [c for c in g["code_version"] if isinstance(c, str) and c]
    missing = len(g) - len(v)
    names = sorted({c[:7] + ("-dirty" if c.endswith("-dirty") else "") for c in v})
    if not names:
        return "not recorded"
    return ", ".join(names) + (f" ({missing} not recorded)" if missing else "")


def budget_markdown(frame: pd.DataFrame, provenance: bool = False) -> str:
    """Mean ± sample SD over seeds of clean and APGD-CE + APGD-T accuracy per (method, epochs), in percent, with
    the optimizer steps and the epoch each seed kept (best held-out PGD accuracy); with `provenance` (the README,
    the command line; not a notebook) also the code version each point was trained with."""
    columns = ["method", "epochs", "steps", "seeds", "clean", "APGD-CE+T (n)", "epoch kept, per seed",
               *(["code version"] if provenance else []), "published AutoAttack (full MNIST)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    rows = _curve_rows(frame)
    for (method, epochs), g in sorted(rows.groupby(["method", "epochs"]),
                                      key=lambda kv: (list(LABELS).index(kv[0][0]), kv[0][1])):
        g = g.sort_values("seed")
        n = "/".join(str(int(v)) for v in sorted(set(g["n_scored"].dropna())))
        pub = PUBLISHED.get(method)
        kept = ", ".join("-" if pd.isna(b) else str(int(b)) for b in g["best_epoch"])
        version = f"{_code(g)} | " if provenance else ""
        lines.append(f"| {LABELS.get(method, method)} | {int(epochs)} | {_steps(g)} | "
                     f"{','.join(str(int(s)) for s in g['seed'])} | {_mean_sd(g['clean'])} | {_mean_sd(g['apgd'])} ({n}) | "
                     f"{kept} | {version}{f'{100 * pub[1]:.1f} ({pub[0]})' if pub else '-'} |")
    return "\n".join(lines)


def lambda_markdown(frame: pd.DataFrame) -> str:
    """The lambda sweep: C-LEAD online points at one budget and seed, one line per lambda."""
    lines = ["| lambda | epochs | seed | clean | APGD-CE+T (n) |", "|---|---|---|---|---|"]
    online = frame[frame["method"] == "clead_online"].copy()
    if not len(online):
        return "\n".join(lines)
    counts = online.groupby(["epochs", "seed"])["lam"].nunique()
    if counts.max() < 2:
        return ("No lambda sweep yet: every C-LEAD online point has the same lambda "
                "(benchmarks/budget_grid_cpu.sh runs the sweep after the budget curve).")
    epochs, seed = counts.idxmax()             # the sweep: the (budget, seed) with the most lambdas
    sweep = online[(online["epochs"] == epochs) & (online["seed"] == seed)]
    rows = [(f"{float(r.lam):g}", r) for r in sweep.itertuples()]
    if not (pd.to_numeric(sweep["lam"], errors="coerce") == 0).any():
        # lambda = 0 is the PGD-AT step itself (tests/test_batchnorm.py): its row is PGD-AT's point
        same = frame[(frame["method"] == "pgd_at") & (frame["epochs"] == epochs) & (frame["seed"] == seed)]
        rows += [("0 (the PGD-AT point)", r) for r in same.itertuples()]
    for label, r in sorted(rows, key=lambda lr: float(lr[0].split()[0])):
        lines.append(f"| {label} | {int(r.epochs)} | {int(r.seed)} | {100 * r.clean:.1f} | "
                     f"{100 * r.apgd:.1f} ({int(r.n_scored)}) |")
    return "\n".join(lines)


def _outcomes(rows: pd.DataFrame, method: str, epochs: int) -> dict[int, list[float]]:
    """`method`'s per-image APGD-CE + APGD-T outcomes at `epochs` (1.0 right, 0.0 wrong), by seed; a point
    without them is left out."""
    return {int(r.seed): [float(v) for v in r.apgd_correct]
            for r in rows[(rows["method"] == method) & (rows["epochs"] == epochs)].itertuples()
            if isinstance(r.apgd_correct, list)}


def paired_gaps(frame: pd.DataFrame, method: str = "clead_online", base: str = "pgd_at", n_boot: int = 10_000,
                seed: int = 0) -> pd.DataFrame:
    """`method` minus `base` in APGD-CE + APGD-T accuracy, per budget, paired by training seed and test image.

    One row per epochs value where both methods have points for the same seeds with per-image outcomes:
    seeds, the per-seed differences (fractions), their mean and sample SD, the 95 % percentile bootstrap
    interval resampling seeds and images (stats.paired_bootstrap), the 95 % t-interval over seeds and its
    t-test p (stats.t_interval; NaN with one seed) and McNemar's exact p per seed (unadjusted: the tables
    apply Holm over the tests they show)."""
    rows = _curve_rows(frame)
    out = []
    for epochs in sorted(set(rows["epochs"].dropna().astype(int))):
        a, b = _outcomes(rows, method, epochs), _outcomes(rows, base, epochs)
        seeds = sorted(a.keys() & b.keys())
        if not seeds:
            continue
        ca, cb = [a[s] for s in seeds], [b[s] for s in seeds]
        if len({len(v) for v in ca + cb}) != 1:
            raise ValueError(f"{method} and {base} at {epochs} epochs were scored on different numbers of images")
        diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in zip(ca, cb)]
        ci = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
        t = t_interval(diffs)
        out.append({"epochs": epochs, "seeds": seeds, "diffs": diffs, "mean": ci.mean, "sd": sample_sd(diffs),
                    "low": ci.low, "high": ci.high, "t_low": t.low, "t_high": t.high, "t_p": t.p,
                    "n_images": ci.n_images, "mcnemar_p": [mcnemar_exact(x, y).p for x, y in zip(ca, cb)]})
    return pd.DataFrame(out, columns=["epochs", "seeds", "diffs", "mean", "sd", "low", "high", "t_low", "t_high",
                                      "t_p", "n_images", "mcnemar_p"])


def _pts(v: float) -> str:
    return "-" if v != v else f"{100 * v:+.1f}"


def _interval(low: float, high: float) -> str:
    return "-" if low != low else f"[{_pts(low)}, {_pts(high)}]"


def gap_markdown(frame: pd.DataFrame, methods=("clead_online", "trades"), base: str = "pgd_at") -> str:
    """A table of paired_gaps for each method against `base`, in accuracy points: both intervals, and McNemar's
    p per seed with Holm's adjustment over every McNemar test in the table (the family is the table)."""
    gaps = [(method, r) for method in methods for r in paired_gaps(frame, method, base).itertuples()]
    raw = [p for _, r in gaps for p in r.mcnemar_p]
    adjusted = iter(holm(raw))
    lines = [f"| method - {LABELS.get(base, base)} | epochs | per seed (points) | mean ± SD | 95 % interval, bootstrap "
             f"over seeds and images | 95 % t-interval over seeds | McNemar p per seed (Holm over the table's "
             f"{len(raw)} tests) |", "|---|---|---|---|---|---|---|"]
    for method, r in gaps:
        sd = "" if r.sd != r.sd else f" ± {100 * r.sd:.1f}"      # NaN (one seed): no SD
        ps = ", ".join(f"{p:.2g} ({next(adjusted):.2g})" for p in r.mcnemar_p)
        lines.append(f"| {LABELS.get(method, method)} | {r.epochs} | "
                     f"{', '.join(f'{100 * d:+.1f}' for d in r.diffs)} | {100 * r.mean:+.1f}{sd} | "
                     f"{_interval(r.low, r.high)} (n = {r.n_images}) | {_interval(r.t_low, r.t_high)} | {ps} |")
    return "\n".join(lines)


def standard_check_markdown(frame: pd.DataFrame) -> str:
    """The points that also ran the standard AutoAttack: its accuracy beside APGD-CE + APGD-T's on the same
    images, and the images that make the difference. The standard version runs APGD-CE and APGD-T too (then
    FAB-T and Square), so this shows what the other two add, not how strong APGD is."""
    lines = ["| method | epochs | seed | images | APGD-CE+T | standard AutoAttack | difference (points) | images |",
             "|---|---|---|---|---|---|---|---|"]
    done = frame[frame["autoattack"].notna() & frame["apgd_on_autoattack_images"].notna()]
    for r in done.sort_values(["method", "epochs", "seed"]).itertuples():
        n = int(r.autoattack_n)
        images = round(n * (r.autoattack - r.apgd_on_autoattack_images))
        lines.append(f"| {LABELS.get(r.method, r.method)} | {int(r.epochs)} | {int(r.seed)} | the first "
                     f"{n} scored | {100 * r.apgd_on_autoattack_images:.1f} | {100 * r.autoattack:.1f} | "
                     f"{100 * (r.autoattack - r.apgd_on_autoattack_images):+.1f} | {images:+d} |")
    if len(done):
        smaller = (done["autoattack_n"] < done["n_scored"]).any()
        lines += ["", "The standard version runs APGD-CE and APGD-T as well, then FAB-T and Square on what is left: the "
                  "column 'images' is how many more images the standard version broke, net" +
                  (" (on a smaller batch than the custom run's, so a different random start may also count)"
                   if smaller else "") + ". It bounds what FAB-T and Square add; it does not test whether APGD "
                  "itself is strong."]
    return "\n".join(lines)


def config_note(frame: pd.DataFrame) -> str:
    """Do the points' recorded training settings agree? Within each method every point's `result.config` is
    compared, apart from what the point's key sets (epochs, seed, lambda for C-LEAD online) and the checkpoint
    path; a setting some points lack is compared with TrainConfig's default (the value those points ran with:
    the setting did not exist yet). Then the code version and the training images' fingerprint."""
    from clead_lite.training import TrainConfig
    default = TrainConfig().to_dict()
    parts = []
    missing_all: dict[str, set] = {}
    differ = []
    for method, g in frame.groupby("method"):
        cfgs = [(r.epochs, r.config) for r in g.itertuples() if isinstance(r.config, dict)]
        if len(cfgs) < len(g):
            parts.append(f"{len(g) - len(cfgs)} {LABELS.get(method, method)} point(s) record no config.")
        skip = {"epochs", "seed", "checkpoint_path"} | ({"contrastive_weight"} if method == "clead_online" else set())
        keys = set().union(*(c.keys() for _, c in cfgs)) - skip if cfgs else set()
        for k in sorted(keys):
            have = [(e, c[k]) for e, c in cfgs if k in c]
            lacking = {int(e) for e, c in cfgs if k not in c}
            values = {json.dumps(v, sort_keys=True) for _, v in have}
            if lacking:
                missing_all.setdefault(k, set()).update(lacking)
                values.add(json.dumps(default.get(k), sort_keys=True))
            if len(values) > 1:
                differ.append(f"{LABELS.get(method, method)} `{k}`: {', '.join(sorted(values))}")
    if missing_all:
        for k, epochs in sorted(missing_all.items()):
            n = int(sum(1 for c in frame["config"] if isinstance(c, dict) and k not in c))
            parts.append(f"{n} points (at {' and '.join(map(str, sorted(epochs)))} epochs) were written before "
                         f"the setting `{k}` existed and do not record it; the code then ran as its default "
                         f"`{k} = {default.get(k)!r}` does, the value every other point records.")
    parts.append("Within each method every other recorded training setting is the same at every point, apart from "
                 "what the point's key sets (epochs, seed and C-LEAD online's lambda)." if not differ else
                 "Settings that differ within a method: " + "; ".join(differ) + ".")
    versions = [c for c in frame["code_version"] if isinstance(c, str) and c]
    if versions:
        parts.append(f"{len(versions)} of {len(frame)} points record the code version (git commit) and a sha256 of "
                     f"their training images; the other {len(frame) - len(versions)} were written before the points "
                     "recorded them (not recorded).")
        prints = frame[frame["train_images_sha256"].map(lambda v: isinstance(v, str))]
        per_seed = prints.groupby("seed")["train_images_sha256"].agg(lambda v: sorted(set(v)))
        same = all(len(v) == 1 for v in per_seed)
        parts.append("Those record " + ("one training-image fingerprint per seed, the same for every method and "
                     "budget (" if same else "different training images within a seed (") +
                     "; ".join(f"seed {int(s)}: {', '.join(x[:12] for x in v)}" for s, v in per_seed.items()) + ").")
    else:
        parts.append("No point records the code version or a fingerprint of its training images (not recorded).")
    return " ".join(parts)


def summary_markdown(frame: pd.DataFrame) -> str:
    """Every table of the grid, for the README block `budget` (benchmarks/budget_curve.py --readme)."""
    n = "/".join(str(int(v)) for v in sorted(set(frame["n_scored"].dropna()))) or "-"
    return "\n\n".join([
        f"Robust accuracy (%, mean ± sample SD over seeds), APGD-CE + APGD-T on the same {n} test images; steps: "
        "optimizer steps of one batch each (epochs x (training images - held out) // batch):",
        budget_markdown(frame, provenance=True),
        "Paired differences from PGD-AT (points; same seed, same images):", gap_markdown(frame),
        "The lambda sweep:", lambda_markdown(frame),
        "The custom version against the standard AutoAttack, on the same images:", standard_check_markdown(frame),
        "What the points record: " + config_note(frame)])


def _change(rows: pd.DataFrame, method: str, e0: int, e1: int, n_boot: int = 10_000, seed: int = 0) -> dict | None:
    """`method`'s APGD-CE + APGD-T accuracy at e1 epochs minus at e0, paired by seed (same training images and
    initial weights) and test image: per-seed changes, both intervals, the two means. None without a pair."""
    a, b = _outcomes(rows, method, e1), _outcomes(rows, method, e0)
    seeds = sorted(a.keys() & b.keys())
    if not seeds:
        return None
    ca, cb = [a[s] for s in seeds], [b[s] for s in seeds]
    ci = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
    diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in zip(ca, cb)]
    t = t_interval(diffs)
    return {"e0": e0, "e1": e1, "seeds": seeds, "diffs": diffs, "mean": ci.mean, "low": ci.low, "high": ci.high,
            "t_low": t.low, "t_high": t.high, "before": float(np.mean([sum(y) / len(y) for y in cb])),
            "after": float(np.mean([sum(x) / len(x) for x in ca]))}


def _gains(rows: pd.DataFrame, method: str, seeds_needed: int) -> list[tuple[int, int, float]]:
    """`method`'s mean APGD-CE + APGD-T gain (fraction) from each budget with `seeds_needed` seeds or more to the
    next such budget, on the seeds both have: [(e0, e1, gain)]. No interval: the trend the verdict shows beside
    the last change, which has its intervals. From the per-image outcomes, as `_change` (the JSON's apgd is a
    float32), so that the last gain is the change's mean."""
    acc = {e: {s: sum(o) / len(o) for s, o in _outcomes(rows, method, e).items()}
           for e in sorted(set(rows.loc[rows["method"] == method, "epochs"].dropna().astype(int)))}
    budgets = sorted(e for e, per_seed in acc.items() if len(per_seed) >= seeds_needed)
    out = []
    for e0, e1 in zip(budgets, budgets[1:]):
        seeds = sorted(set(acc[e0]) & set(acc[e1]))
        out.append((e0, e1, float(np.mean([acc[e1][s] - acc[e0][s] for s in seeds]))))
    return out


def _state(low: float, high: float, t_low: float, t_high: float, band: float = BAND) -> str:
    """'within' both intervals inside [-band, band]; 'above' / 'below' both beyond it; 'undecided' otherwise."""
    if -band <= low and high <= band and -band <= t_low and t_high <= band:
        return "within"
    if low > band and t_low > band:
        return "above"
    if high < -band and t_high < -band:
        return "below"
    return "undecided"


def _missing(rows: pd.DataFrame, methods: tuple[str, ...]) -> list[tuple[int, list[int]]]:
    """The planned (PLANNED, PLANNED_SEEDS, FIVE_SEEDS) points of `methods` not on disk: (epochs, seeds) by
    budget."""
    out: dict[int, set] = {}
    for m in methods:
        have = {(int(r.epochs), int(r.seed)) for r in rows[rows["method"] == m].itertuples()}
        for e in PLANNED.get(m, ()):
            for s in range(5) if e in FIVE_SEEDS.get(m, ()) else PLANNED_SEEDS:
                if (e, s) not in have:
                    out.setdefault(e, set()).add(s)
    return [(e, sorted(s)) for e, s in sorted(out.items())]


def verdict(frame: pd.DataFrame, method: str = "clead_online", base: str = "pgd_at", seeds_needed: int = 3,
            n_boot: int = 10_000) -> dict:
    """The facts behind the verdict sentence (fractions, not points): at the largest budget where both methods
    have `seeds_needed` paired seeds, the gap (`paired_gaps` row), its t-test p and Holm's adjustment over the
    t-tests of every budget with two seeds or more, whether it is within ±1 point of 0 (`state`: 'within',
    'above', 'below' or 'undecided' from both intervals; `ruled_out`: the method whose advantage above 1 point
    both intervals of an undecided gap exclude, else None), the base method's change from the previous such
    budget (`rise`, `rise_state`: 'rising' when both intervals are above 0, 'flat' when both lie within ±1
    point, 'unclear' otherwise; `gains`: its mean gain between consecutive such budgets, `_gains`), the points at
    larger budgets so far (`partial`: each method's accuracy per seed,
    the gap on the seeds both have, the base method's change per seed) and the planned points not on disk
    (`missing`). `last` is None when no budget has enough seeds."""
    rows = _curve_rows(frame)
    gaps = paired_gaps(frame, method, base, n_boot=n_boot)
    tested = gaps[gaps["seeds"].map(len) >= 2]
    adjusted = dict(zip(tested["epochs"], holm(tested["t_p"].tolist())))
    complete = gaps[gaps["seeds"].map(len) >= seeds_needed]
    out = {"method": method, "base": base, "seeds_needed": seeds_needed, "n_tests": len(tested),
           "n_mcnemar": None, "last": None, "missing": _missing(rows, (method, base))}
    if not len(complete):
        return out
    last = complete.iloc[-1]
    out.update(last=last.to_dict(), holm_p=adjusted.get(last["epochs"], math.nan),
               state=_state(last["low"], last["high"], last["t_low"], last["t_high"]), ruled_out=None)
    if out["state"] == "undecided" and max(last["high"], last["t_high"]) <= BAND:   # a one-sided answer still holds
        out["ruled_out"] = method
    elif out["state"] == "undecided" and min(last["low"], last["t_low"]) >= -BAND:
        out["ruled_out"] = base
    g = rows[(rows["method"] == base) & (rows["epochs"] == last["epochs"])]
    out["steps"] = _steps(g)
    out["base_mean"] = float(g["apgd"].mean())
    out["method_mean"] = float(rows[(rows["method"] == method) & (rows["epochs"] == last["epochs"])]["apgd"].mean())
    out["gains"] = _gains(rows, base, seeds_needed)
    out["rise"] = None
    if len(complete) >= 2:
        out["rise"] = _change(rows, base, int(complete.iloc[-2]["epochs"]), int(last["epochs"]), n_boot=n_boot)
        r = out["rise"]
        if r is not None:
            out["rise_state"] = ("rising" if r["low"] > 0 and r["t_low"] > 0 else
                                 "flat" if _state(r["low"], r["high"], r["t_low"], r["t_high"]) == "within" else
                                 "unclear")
    out["partial"] = []
    later = sorted({int(e_) for e_ in rows[rows["method"].isin([method, base])]["epochs"].dropna()
                    if int(e_) > int(last["epochs"])})
    by_epochs = {int(g_.epochs): g_ for g_ in gaps.itertuples()}
    for e_ in later:
        acc = lambda m_: {int(r_.seed): float(r_.apgd) for r_ in rows[(rows["method"] == m_) & (rows["epochs"] == e_)]
                          .sort_values("seed").itertuples()}
        g_ = by_epochs.get(e_)
        out["partial"].append({"epochs": e_, "base": acc(base), "method": acc(method),
                               "gap_seeds": list(g_.seeds) if g_ is not None else [],
                               "diffs": list(g_.diffs) if g_ is not None else [],
                               "base_change": _change(rows, base, int(last["epochs"]), e_, n_boot=n_boot)})
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _seeds(seeds) -> str:
    seeds = [int(s) for s in seeds]
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def verdict_markdown(frame: pd.DataFrame, method: str = "clead_online", base: str = "pgd_at",
                     seeds_needed: int = 3) -> str:
    """The README's and notebook 06's verdict on the budget curve, every number read from the points (`verdict`):
    the paired gap at the largest budget with `seeds_needed` seeds, both 95 % intervals, the t-test with Holm's
    correction over the budgets tested, whether the gap is within ±1 point of 0, whether the baseline is still
    rising (and so whether this is convergence), and which points are still to come."""
    v = verdict(frame, method, base, seeds_needed)
    m, b = LABELS.get(method, method), LABELS.get(base, base)
    if v["last"] is None:
        return f"**Verdict**: no budget has {seeds_needed} paired seeds of {m} and {b} yet."
    last = v["last"]
    e = int(last["epochs"])
    rise, rstate = v.get("rise"), v.get("rise_state")
    converged = rstate == "flat"
    gap_phrase = {"within": "within ±1 point of 0 by both intervals",
                  "above": f"**not within ±1 point of 0**: both intervals lie above +1 point ({m} ahead)",
                  "below": f"**not within ±1 point of 0**: both intervals lie below -1 point ({b} ahead)",
                  "undecided": f"these {len(last['seeds'])} seeds **cannot say whether it is within ±1 point of 0** "
                               "(an interval reaches past ±1 point; more seeds would narrow it)"}[v["state"]]
    if v["ruled_out"] is not None:
        gap_phrase += (f"; both intervals rule out an advantage of {LABELS.get(v['ruled_out'], v['ruled_out'])} "
                       "larger than 1 point")
    # 'not reached' only when the base method is shown to rise; a change that no interval settles is 'not established'
    head = {"flat": "**Verdict at convergence.**", "rising": "**Verdict: convergence not reached yet.**"}.get(
        rstate, "**Verdict: convergence not established.**")
    text = [f"{head} At {e} epochs ({v['steps']} optimizer steps), the largest budget with {len(last['seeds'])} "
            f"seeds of both methods, {m} keeps {_pct(v['method_mean'])} % and {b} {_pct(v['base_mean'])} % under "
            f"APGD-CE + APGD-T: a paired gap of {_pts(last['mean'])} points (95 % interval {_interval(last['low'], last['high'])} "
            f"resampling seeds and images, {_interval(last['t_low'], last['t_high'])} by the t-interval over the seeds; "
            f"t-test p = {last['t_p']:.2g}, {v['holm_p']:.2g} after Holm over the {v['n_tests']} budgets tested), "
            f"{gap_phrase}."]
    if rise is None:
        text.append(f"No smaller budget with {seeds_needed} seeds to tell whether {b} is still rising: "
                    "convergence is not established.")
    else:
        change = (f"{_pct(rise['before'])} % at {rise['e0']} epochs, {_pct(rise['after'])} % at {rise['e1']}: "
                  f"{_pts(rise['mean'])} points, {_interval(rise['low'], rise['high'])} / t "
                  f"{_interval(rise['t_low'], rise['t_high'])}")
        text.append({"rising": f"{b} is still rising between the last two such budgets ({change}), so this is "
                               "**not** the gap at convergence.",
                     "flat": f"{b} has stopped rising between the last two such budgets ({change}, within ±1 "
                             "point by both intervals).",
                     "unclear": f"{b}'s change between the last two such budgets ({change}) is neither clearly a "
                                "rise nor shown to be within ±1 point: convergence is not established."}[rstate])
        if len(v["gains"]) >= 2:
            text.append(f"{b}'s mean gain from each budget to the next, on the seeds both have: " + ", ".join(
                f"{_pts(g)} ({e0} → {e1} epochs)" for e0, e1, g in v["gains"]) + " points.")
    for p in v["partial"]:
        ch = p["base_change"]
        each = lambda accs: ", ".join(f"{_pct(a)} % ({_seeds([s_])})" for s_, a in accs.items())
        parts = [f"{b} {each(p['base'])}" if p["base"] else f"no {b} point yet"]
        if ch is not None:
            parts[0] += (f", {', '.join(_pts(d) for d in ch['diffs'])} points since {ch['e0']} epochs on the same "
                         f"seed{'s' if len(ch['seeds']) > 1 else ''}")
        parts.append(f"{m} {each(p['method'])}" if p["method"] else f"no {m} point yet")
        if p["diffs"]:
            parts.append(f"a gap of {', '.join(_pts(d) for d in p['diffs'])} points ({_seeds(p['gap_seeds'])})")
        text.append(f"So far at {p['epochs']} epochs: " + "; ".join(parts) + ": too few seeds for the verdict.")
    if v["missing"]:
        todo = "; ".join(f"{e_} epochs, {_seeds(s)}" for e_, s in v["missing"])
        text.append(f"The next points are running ({todo}: {' and '.join(f'`{c}`' for c in PLANNED_COMMANDS)}).")
    elif rstate == "unclear":
        text.append(f"No further points are planned: {b}'s last change has intervals "
                    f"{100 * (rise['high'] - rise['low']):.1f} and {100 * (rise['t_high'] - rise['t_low']):.1f} points "
                    "wide, wider than the ±1-point band, so a plateau within ±1 point cannot be shown with these "
                    "seeds and test images; more seeds or test images would narrow them.")
    elif not converged:
        text.append(f"No further points are planned: the grid must be extended (e.g. to {2 * int(max(PLANNED[base]))} "
                    "epochs) to reach convergence.")
    text.append(f"Multiple comparisons: the gap's t-test at each of the {v['n_tests']} budgets with two or more "
                "seeds (Holm above) and the per-seed McNemar tests of the gap table (Holm over that table, in it); "
                "the ±1-point reading uses the intervals, not a test.")
    return " ".join(text)


def plot_budget_curve(frame: pd.DataFrame, ax=None, published: bool = True):
    """APGD-CE + APGD-T accuracy against training epochs, one line per method (mean over seeds, the seeds as
    dots, error bars one sample SD), the published AutoAttack numbers as dashed lines. Returns the Axes."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    rows = _curve_rows(frame)
    for i, method in enumerate(m for m in LABELS if m in set(rows["method"])):
        g = rows[rows["method"] == method]
        color = f"C{i}"
        stats = g.groupby("epochs")["apgd"].agg(["mean", lambda v: sample_sd(v) if len(v) > 1 else 0.0])
        stats.columns = ["mean", "sd"]
        ax.errorbar(stats.index, 100 * stats["mean"], yerr=100 * stats["sd"].fillna(0), marker="o", color=color,
                    capsize=3, label=LABELS[method])
        ax.scatter(g["epochs"], 100 * g["apgd"], color=color, alpha=0.35, s=12)
        if published and method in PUBLISHED:
            ax.axhline(100 * PUBLISHED[method][1], color=color, ls="--", lw=1, alpha=0.7)
    return _finish(ax, rows, "training epochs (mnist5k, 3,500 images + 500 held out)", "APGD-CE + APGD-T accuracy (%)",
                   "robust accuracy vs budget (dashed: published AutoAttack, full MNIST)")


def _finish(ax, rows: pd.DataFrame, xlabel: str, ylabel: str, title: str):
    """The shared axes of both plots: epochs on a log-2 axis, ticks at the budgets, labels, grid, legend."""
    ax.set_xscale("log", base=2)
    epochs = sorted(set(rows["epochs"].dropna().astype(int)))
    if epochs:
        ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_gaps(frame: pd.DataFrame, methods=("clead_online", "trades"), base: str = "pgd_at", ax=None):
    """Each method's paired gap to `base` against training epochs: the mean over seeds (marker), its 95 %
    bootstrap interval over seeds and images (bar) and each seed's difference (dots). Returns the Axes."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    colors = {m: f"C{i}" for i, m in enumerate(LABELS)}
    for k, method in enumerate(methods):
        gaps = paired_gaps(frame, method, base)
        if not len(gaps):
            continue
        x = gaps["epochs"].to_numpy(dtype=float) * (1 + 0.04 * (k - (len(methods) - 1) / 2))   # side by side
        mean = 100 * gaps["mean"].to_numpy()
        err = [mean - 100 * gaps["low"].to_numpy(), 100 * gaps["high"].to_numpy() - mean]
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, color=colors.get(method),
                    label=f"{LABELS.get(method, method)} - {LABELS.get(base, base)}")
        for xi, diffs in zip(x, gaps["diffs"]):
            ax.scatter([xi] * len(diffs), [100 * d for d in diffs], color=colors.get(method), alpha=0.35, s=12)
    ax.axhline(0, color="black", lw=1)
    return _finish(ax, _curve_rows(frame), "training epochs", "difference in APGD-CE + APGD-T accuracy (points)",
                   f"paired gap to {LABELS.get(base, base)} (bars: 95 % bootstrap interval)")
