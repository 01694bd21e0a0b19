"""The budget curve and the lambda sweep: read the per-point JSON files that `benchmarks/budget_curve.py`
writes (one file per method / epochs / seed / lambda), tabulate them and plot robust accuracy against the
training budget.

    frame = load_points("benchmarks/results/budget")      # one row per point
    print(budget_markdown(frame)); print(lambda_markdown(frame))
    plot_budget_curve(frame)                               # matplotlib Axes

Floor 0: imports only `stats` of the package; pandas and numpy (matplotlib inside the plot function).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .stats import sample_sd

__all__ = ["POINT_COLUMNS", "PUBLISHED", "load_points", "budget_markdown", "lambda_markdown", "plot_budget_curve",
           "point_name"]

POINT_COLUMNS = ("dataset", "method", "epochs", "seed", "lam", "clean", "apgd", "autoattack", "n_scored",
                 "best_epoch", "train_seconds", "score_seconds", "file")
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
                     "apgd": res.get("apgd"), "autoattack": res.get("autoattack"), "n_scored": res.get("n_scored"),
                     "best_epoch": res.get("best_epoch"), "train_seconds": res.get("train_seconds"),
                     "score_seconds": res.get("score_seconds"), "file": f.name})
    frame = pd.DataFrame(rows, columns=POINT_COLUMNS)
    for c in ("clean", "apgd", "autoattack"):
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
    counts = online.groupby(["epochs", "seed"]).size()
    epochs, seed = counts.idxmax()             # the sweep: the (budget, seed) with the most lambdas
    for r in online[(online["epochs"] == epochs) & (online["seed"] == seed)].sort_values("lam").itertuples():
        lines.append(f"| {float(r.lam):g} | {int(r.epochs)} | {int(r.seed)} | {100 * r.clean:.1f} | "
                     f"{100 * r.apgd:.1f} ({int(r.n_scored)}) |")
    return "\n".join(lines)


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
    ax.set_xscale("log", base=2)
    epochs = sorted(set(rows["epochs"].dropna().astype(int)))
    if epochs:
        ax.set_xticks(epochs, [str(e) for e in epochs])
    ax.set_xlabel("training epochs (mnist5k, 3,500 images + 500 held out)")
    ax.set_ylabel("APGD-CE + APGD-T accuracy (%)")
    ax.set_title("robust accuracy vs budget (dashed: published AutoAttack, full MNIST)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
