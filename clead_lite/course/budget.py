"""The budget curve and the lambda sweep: read the per-point JSON files that `benchmarks/budget_curve.py`
writes (one file per method / epochs / seed / lambda), tabulate them and plot robust accuracy against the
training budget.

    frame = load_points("benchmarks/results/budget")      # one row per point
    print(budget_markdown(frame)); print(lambda_markdown(frame))
    plot_budget_curve(frame)                               # matplotlib Axes

"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .stats import mcnemar_exact, paired_bootstrap, sample_sd

__all__ = ["POINT_COLUMNS", "PUBLISHED", "load_points", "budget_markdown", "lambda_markdown", "paired_gaps",
           "gap_markdown", "standard_check_markdown", "summary_markdown", "plot_budget_curve", "plot_gaps",
           "point_name"]

POINT_COLUMNS = ("dataset", "method", "epochs", "seed", "lam", "clean", "apgd", "autoattack", "autoattack_n",
                 "apgd_on_autoattack_images", "n_scored", "best_epoch", "train_seconds", "score_seconds",
                 "apgd_correct", "file")
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
        key, res = r.get("key") or {}, r.get("result") or {}
        rows.append({"dataset": key.get("dataset"), "method": key.get("method"), "epochs": key.get("epochs"),
                     "seed": key.get("seed"), "lam": key.get("lam"), "clean": res.get("clean"),
                     "apgd": res.get("apgd"), "autoattack": res.get("autoattack"),
                     "autoattack_n": res.get("autoattack_n"),
                     "apgd_on_autoattack_images": res.get("apgd_on_autoattack_images"), "n_scored": res.get("n_scored"),
                     "best_epoch": res.get("best_epoch"), "train_seconds": res.get("train_seconds"),
                     "score_seconds": res.get("score_seconds"), "apgd_correct": res.get("apgd_correct"),
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


def budget_markdown(frame: pd.DataFrame) -> str:
    """Mean ± sample SD over seeds of clean and APGD-CE + APGD-T accuracy per (method, epochs), in percent."""
    lines = ["| method | epochs | seeds | clean | APGD-CE+T (n) | published AutoAttack (full MNIST) |",
             "|---|---|---|---|---|---|"]
    rows = _curve_rows(frame)
    for (method, epochs), g in sorted(rows.groupby(["method", "epochs"]),
                                      key=lambda kv: (list(LABELS).index(kv[0][0]), kv[0][1])):
        n = "/".join(str(int(v)) for v in sorted(set(g["n_scored"].dropna())))
        pub = PUBLISHED.get(method)
        lines.append(f"| {LABELS.get(method, method)} | {int(epochs)} | {','.join(str(int(s)) for s in sorted(g['seed']))} | "
                     f"{_mean_sd(g['clean'])} | {_mean_sd(g['apgd'])} ({n}) | "
                     f"{f'{100 * pub[1]:.1f} ({pub[0]})' if pub else '-'} |")
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


def paired_gaps(frame: pd.DataFrame, method: str = "clead_online", base: str = "pgd_at", n_boot: int = 10_000,
                seed: int = 0) -> pd.DataFrame:
    """`method` minus `base` in APGD-CE + APGD-T accuracy, per budget, paired by training seed and test image.

    One row per epochs value where both methods have points for the same seeds with per-image outcomes:
    seeds, the per-seed differences (fractions), their mean and sample SD, the 95 % percentile bootstrap
    interval resampling seeds and images (stats.paired_bootstrap) and McNemar's exact p per seed."""
    rows = _curve_rows(frame)
    out = []
    for epochs in sorted(set(rows["epochs"].dropna().astype(int))):
        a = rows[(rows["method"] == method) & (rows["epochs"] == epochs)].set_index("seed")
        b = rows[(rows["method"] == base) & (rows["epochs"] == epochs)].set_index("seed")
        seeds = sorted(s for s in set(a.index) & set(b.index)
                       if isinstance(a.loc[s, "apgd_correct"], list) and isinstance(b.loc[s, "apgd_correct"], list))
        if not seeds:
            continue
        ca = [[float(v) for v in a.loc[s, "apgd_correct"]] for s in seeds]
        cb = [[float(v) for v in b.loc[s, "apgd_correct"]] for s in seeds]
        if len({len(v) for v in ca + cb}) != 1:
            raise ValueError(f"{method} and {base} at {epochs} epochs were scored on different numbers of images")
        diffs = [sum(x) / len(x) - sum(y) / len(y) for x, y in zip(ca, cb)]
        ci = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
        out.append({"epochs": epochs, "seeds": seeds, "diffs": diffs, "mean": ci.mean, "sd": sample_sd(diffs),
                    "low": ci.low, "high": ci.high, "n_images": ci.n_images,
                    "mcnemar_p": [mcnemar_exact(x, y).p for x, y in zip(ca, cb)]})
    return pd.DataFrame(out, columns=["epochs", "seeds", "diffs", "mean", "sd", "low", "high", "n_images",
                                      "mcnemar_p"])


def gap_markdown(frame: pd.DataFrame, methods=("clead_online", "trades"), base: str = "pgd_at") -> str:
    """A table of paired_gaps for each method against `base`, in accuracy points."""
    lines = [f"| method - {LABELS.get(base, base)} | epochs | per seed (points) | mean ± SD | 95 % interval "
             "(bootstrap over seeds and images) | McNemar p per seed |", "|---|---|---|---|---|---|"]
    for method in methods:
        for r in paired_gaps(frame, method, base).itertuples():
            sd = "" if r.sd != r.sd else f" ± {100 * r.sd:.1f}"      # NaN (one seed): no SD
            lines.append(f"| {LABELS.get(method, method)} | {r.epochs} | "
                         f"{', '.join(f'{100 * d:+.1f}' for d in r.diffs)} | {100 * r.mean:+.1f}{sd} | "
                         f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}] (n = {r.n_images}) | "
                         f"{', '.join(f'{p:.2g}' for p in r.mcnemar_p)} |")
    return "\n".join(lines)


def standard_check_markdown(frame: pd.DataFrame) -> str:
    """The points that also ran the standard AutoAttack: its accuracy beside APGD-CE + APGD-T's on the same
    images (is the custom version within a point of the standard one?)."""
    lines = ["| method | epochs | seed | images | APGD-CE+T | standard AutoAttack | difference (points) |",
             "|---|---|---|---|---|---|---|"]
    done = frame[frame["autoattack"].notna() & frame["apgd_on_autoattack_images"].notna()]
    for r in done.sort_values(["method", "epochs", "seed"]).itertuples():
        lines.append(f"| {LABELS.get(r.method, r.method)} | {int(r.epochs)} | {int(r.seed)} | the first "
                     f"{int(r.autoattack_n)} scored | {100 * r.apgd_on_autoattack_images:.1f} | {100 * r.autoattack:.1f} | "
                     f"{100 * (r.autoattack - r.apgd_on_autoattack_images):+.1f} |")
    return "\n".join(lines)


def summary_markdown(frame: pd.DataFrame) -> str:
    """Every table of the grid, for the README block `budget` (benchmarks/budget_curve.py --readme)."""
    n = "/".join(str(int(v)) for v in sorted(set(frame["n_scored"].dropna()))) or "-"
    return "\n\n".join([
        f"Robust accuracy (%, mean ± sample SD over seeds), APGD-CE + APGD-T on the same {n} test images:",
        budget_markdown(frame), "Paired differences from PGD-AT (points; same seed, same images):", gap_markdown(frame),
        "The lambda sweep:", lambda_markdown(frame),
        "The custom version against the standard AutoAttack, on the same images:", standard_check_markdown(frame)])


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
