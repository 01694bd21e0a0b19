"""The measured results table: read the JSON rows that `benchmarks/run_results.py` (through
`python -m clead_lite evaluate --json`) writes, one file per (dataset, method, seed), and summarise them.

    frame = load_results()                 # pandas DataFrame, one row per file, accuracies in [0, 1]
    print(summary_markdown(frame))         # mean ± std over seeds per (dataset, method)
    print(per_seed_markdown(frame))        # one line per file: the numbers behind the means

Floor 0: imports nothing of the package; pandas and numpy only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

METHOD_ORDER = ("standard", "pgd_at", "trades", "clead_online", "clead_faithful")
ACCURACY_COLUMNS = ("clean", "fgsm", "pgd", "autoattack", "transfer")
COLUMNS = ("dataset", "method", "seed", "eps", "n", "clean", "fgsm", "steps", "restarts", "pgd", "autoattack",
           "n_autoattack", "transfer", "transfer_source", "sanity_passed", "sanity_failed", "train_command",
           "evaluate_command", "file")


def results_dir() -> Path | None:
    """`benchmarks/results/` of the repository this package was imported from, if it exists (not pip-installed)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    return path if path.is_dir() else None


def _row(record: dict, file: str) -> dict:
    row = record.get("row")
    if not isinstance(row, dict) or "clean" not in row:
        raise ValueError(f"{file}: no evaluation row (expected a 'row' dict with 'clean', as written by "
                         f"`python -m clead_lite evaluate --json`)")
    sanity = record.get("sanity") or {}
    failed = [c.get("name") for c in sanity.get("checks", []) if c.get("passed") is False]  # None: n/a
    out = {"dataset": record.get("dataset"), "method": record.get("method"), "seed": record.get("seed"),
           **{k: row.get(k) for k in ("eps", "n", "clean", "fgsm", "steps", "restarts", "pgd", "autoattack",
                                      "n_autoattack", "transfer", "transfer_source")},
           "sanity_passed": sanity.get("passed") if sanity else None,
           "sanity_failed": ", ".join(map(str, failed)) if sanity else None,
           "train_command": record.get("train_command"),
           "evaluate_command": record.get("evaluate_command") or record.get("command"), "file": file}
    for k in ACCURACY_COLUMNS:   # NaN (not measured) stays NaN; JSON may hold null
        out[k] = math.nan if out[k] is None else float(out[k])
    return out


def load_results(directory: str | Path | None = None, pattern: str = "*_seed*.json") -> pd.DataFrame:
    """One row per results file in `directory` (default: `results_dir()`), sorted by dataset, method, seed.

    Accuracies are fractions in [0, 1]; NaN where not measured. An empty frame when there are no files.
    """
    directory = results_dir() if directory is None else Path(directory)
    if directory is None:
        return pd.DataFrame(columns=COLUMNS)
    if not directory.is_dir():
        raise FileNotFoundError(f"results directory {str(directory)!r} does not exist")
    rows = [_row(json.loads(f.read_text()), f.name) for f in sorted(directory.glob(pattern))]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if len(frame):
        order = {m: i for i, m in enumerate(METHOD_ORDER)}
        frame = frame.sort_values(["dataset", "method", "seed"],
                                  key=lambda s: s.map(order) if s.name == "method" else s).reset_index(drop=True)
    return frame


def _cell(values: pd.Series) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "-"
    if len(v) == 1:
        return f"{100 * v[0]:.1f}"
    return f"{100 * v.mean():.1f} ± {100 * v.std():.1f}"


def summary_markdown(frame: pd.DataFrame) -> str:
    """A markdown table: mean ± std (population, over seeds) per (dataset, method), in percent.

    The AutoAttack cell names how many test images it ran on; the sanity cell counts the seeds whose report passed.
    """
    lines = ["| dataset (eps) | method | seeds | clean | FGSM | PGD-k × restarts | AutoAttack (n) | transfer | sanity |",
             "|---|---|---|---|---|---|---|---|---|"]
    if not len(frame):
        return "\n".join(lines)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    groups = sorted(frame.groupby(["dataset", "method"], sort=False), key=lambda g: (g[0][0], order.get(g[0][1], 99)))
    for (dataset, method), g in groups:
        n_aa = sorted({int(n) for n in g["n_autoattack"].dropna() if n})
        aa = _cell(g["autoattack"])
        aa_seeds = g.loc[g["autoattack"].notna(), "seed"]
        only = (f", seed {','.join(str(int(v)) for v in aa_seeds)} only" if 0 < len(aa_seeds) < len(g) else "")
        aa = f"{aa} ({'/'.join(map(str, n_aa))}{only})" if aa != "-" and n_aa else "-"
        pgd = _cell(g["pgd"])
        first = g.iloc[0]
        label = f"PGD-{int(first['steps'])}×{int(first['restarts'])}" if pd.notna(first["steps"]) else "PGD"
        sanity = g["sanity_passed"].dropna()
        sanity_cell = (f"{int(sanity.sum())}/{len(sanity)} passed" if len(sanity) else "not run") + (
            f" ({len(g) - len(sanity)} seed(s) not run)" if 0 < len(sanity) < len(g) else "")
        seeds = ",".join(str(int(s)) for s in g["seed"].dropna())
        lines.append(f"| {dataset} ({float(first['eps']):.3g}) | {method} | {seeds} | {_cell(g['clean'])} | "
                     f"{_cell(g['fgsm'])} | {pgd} ({label}) | {aa} | {_cell(g['transfer'])} | {sanity_cell} |")
    return "\n".join(lines)


def per_seed_markdown(frame: pd.DataFrame) -> str:
    """A markdown table with one line per results file (dataset, method, seed), in percent: the numbers behind
    summary_markdown's means, with the sanity checks that failed."""
    lines = ["| dataset | method | seed | clean | FGSM | PGD | AutoAttack (n) | transfer | sanity |",
             "|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "-" if pd.isna(v) else f"{100 * float(v):.1f}"
    for _, r in frame.iterrows():
        aa = "-" if pd.isna(r["autoattack"]) else f"{pct(r['autoattack'])} ({int(r['n_autoattack'])})"
        sanity = ("not run" if r["sanity_passed"] is None or pd.isna(r["sanity_passed"])
                  else "passed" if r["sanity_passed"] else f"failed: {r['sanity_failed']}")
        lines.append(f"| {r['dataset']} | {r['method']} | {int(r['seed'])} | {pct(r['clean'])} | {pct(r['fgsm'])} | "
                     f"{pct(r['pgd'])} | {aa} | {pct(r['transfer'])} | {sanity} |")
    return "\n".join(lines)


def replace_marked_block(path: str | Path, marker: str, content: str) -> None:
    """Replace the text between `<!-- {marker}:start -->` and `<!-- {marker}:end -->` lines of the file `path`
    (e.g. a README table that a script regenerates). Exactly one such block must exist."""
    import re
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    new, n = re.subn(f"({re.escape(start)}\n).*?({re.escape(end)})", lambda m: m[1] + content + "\n" + m[2], text,
                     flags=re.S)    # the block may be empty: start and end on consecutive lines
    if n != 1:
        raise ValueError(f"{path}: expected one '{start}' ... '{end}' block, found {n}")
    path.write_text(new)


__all__ = ["load_results", "per_seed_markdown", "replace_marked_block", "results_dir", "summary_markdown",
           "ACCURACY_COLUMNS", "METHOD_ORDER"]
