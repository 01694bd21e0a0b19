"""Rows of `evaluation.evaluate` shown as a table: a DataFrame for notebooks (`results_table`) and plain text with
each accuracy's 95 % sampling error for the terminal (`format_table`).

    rows = [evaluate(standard, x, y, eps=0.3), evaluate(robust, x, y, eps=0.3, source=standard)]
    results_table(rows)            # DataFrame, threat-model columns first
    print(format_table(rows))      # '45.1% ±3.1' per accuracy
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .stats import half_width_95

__all__ = ["results_table", "format_table", "TABLE_COLUMNS", "ACCURACY_COLUMNS"]

TABLE_COLUMNS = ["model", "norm", "eps", "alpha", "steps", "restarts", "attack_source", "n", "clean", "fgsm",
                 "pgd", "autoattack", "n_autoattack", "transfer", "transfer_source"]
ACCURACY_COLUMNS = ("clean", "fgsm", "pgd", "autoattack", "transfer")


def results_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of `evaluate` -> DataFrame, threat-model columns first, then the accuracies."""
    rows = list(rows)
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be a non-empty list of dicts returned by evaluate()")
    frame = pd.DataFrame(rows)
    return frame[[c for c in TABLE_COLUMNS if c in frame] + [c for c in frame if c not in TABLE_COLUMNS]]


def format_table(rows: Sequence[dict] | pd.DataFrame, ci: bool = True) -> str:
    """A plain-text table for the terminal: accuracies as percentages, missing values as '-'.

    ci: follow each accuracy by the half-width of its 95 % interval in points ('45.1% ±3.1'; binomial,
    normal approximation, n = the row's `n`, `n_autoattack` for AutoAttack): the sampling error of a
    small evaluation set."""
    frame = rows if isinstance(rows, pd.DataFrame) else results_table(rows)
    if frame.empty:
        raise ValueError("rows is empty: nothing to format")

    def cell(column: str, value, n=None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column in ACCURACY_COLUMNS:
            if ci and isinstance(n, (int, float)) and not math.isnan(n) and n >= 1 and 0 <= value <= 1:
                return f"{100 * value:.1f}% ±{100 * half_width_95(float(value), int(n)):.1f}"
            return f"{100 * value:.1f}%"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    columns = list(frame.columns)

    def size(column: str, record: dict):
        return record.get("n_autoattack" if column == "autoattack" else "n")

    body = [[cell(c, v, size(c, dict(zip(columns, r)))) for c, v in zip(columns, r)]
            for r in frame.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(s.rjust(w) if columns[i] in ACCURACY_COLUMNS else s.ljust(w)
                         for i, (s, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule] + [line(r) for r in body])
